"""Settings: config.yaml and the bots it routes to, loaded and validated once (serve, check, reload)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent.config.base import normalize_number
from agent.config.bot import BotConfig
from agent.config.checks import reference_problems
from agent.config.service import ServiceConfig
from agent.config.yamlfile import ConfigError, ConfigProblem, load_yaml


@dataclass
class Settings:
    """Everything the service runs on: config.yaml, the bots it names, and where they came from."""

    service: ServiceConfig
    bots: dict[str, BotConfig]
    config_path: Path
    base_dir: Path
    files: dict[str, Path] = field(default_factory=dict)

    def bot_for_number(self, number: str) -> BotConfig | None:
        """The bot owning a PIOPIY number, or None."""
        try:
            name = self.service.numbers.get(normalize_number(number))
        except ValueError:
            return None
        return self.bots.get(name) if name else None

    def number_of_bot(self, bot: str) -> str | None:
        """The first PIOPIY number routed to a bot (its caller id for outbound calls)."""
        return next((n for n, b in self.service.numbers.items() if b == bot), None)

    def path(self, p: Path) -> Path:
        """A config-relative path made absolute."""
        return p if p.is_absolute() else self.base_dir / p


def load_settings(config_path: Path | str = "config.yaml") -> Settings:
    """Load and validate config.yaml and every bot it routes to; ConfigError lists all problems found."""
    config_path = Path(config_path)
    base_dir = config_path.resolve().parent
    doc = load_yaml(config_path)
    service = doc.validate(ServiceConfig)
    prompts_dir = service.prompts_dir if service.prompts_dir.is_absolute() else base_dir / service.prompts_dir
    problems: list[ConfigProblem] = []
    bots: dict[str, BotConfig] = {}
    files: dict[str, Path] = {}
    if not prompts_dir.is_dir():
        problems.append(doc.problem(("prompts_dir",), f"directory {prompts_dir} does not exist"))
    else:
        for bot_file in sorted(prompts_dir.glob("*.yaml")):
            files[bot_file.stem] = bot_file
            try:
                bot_doc = load_yaml(bot_file, display_name=_display(bot_file, base_dir))
                bot = bot_doc.validate(BotConfig)
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
            references = [bot_doc.problem(loc, msg) for loc, msg in reference_problems(bot)]
            problems.extend(references)
            if not references:
                bots[bot_file.stem] = bot
    for number, bot_name in service.numbers.items():
        if bot_name not in files:
            known = ", ".join(sorted(files)) or "none"
            problems.append(
                doc.problem(
                    ("numbers", number), f"no bot named {bot_name!r} in {prompts_dir} (bots: {known})"
                )
            )
    if problems:
        raise ConfigError(problems)
    return Settings(service=service, bots=bots, config_path=config_path, base_dir=base_dir, files=files)


def _display(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base))
    except ValueError:
        return str(path)
