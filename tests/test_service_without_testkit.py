"""The service never imports testkit (the dev set's test doubles), and runs without it installed.

One lazy import is allowed: `hotline replay` (agent/cli/replay.py, in `run`) loads testkit's replay when
the command runs, and says in one line that it needs the dev set when testkit is not installed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVICE = ("agent", "pipelines")
ALLOWED = {("agent/cli/replay.py", "run")}  # the replay command, imported when it runs

# Imports every module of the service, as a running service (and `hotline --help`) would load them,
# with testkit made unimportable; prints the testkit modules that got loaded anyway.
_IMPORT_ALL = """
import importlib, importlib.abc, pkgutil, sys

class NoTestkit(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "testkit" or name.startswith("testkit."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoTestkit())
for package in ("agent", "pipelines"):
    root = importlib.import_module(package)
    for module in pkgutil.walk_packages(root.__path__, package + "."):
        importlib.import_module(module.name)
print(sorted(m for m in sys.modules if m == "testkit" or m.startswith("testkit.")))
"""


def _testkit_imports(path: Path) -> list[tuple[str, str | None, int]]:
    """Each import of testkit in `path`: (file, enclosing function or None at module level, line)."""
    found: list[tuple[str, str | None, int]] = []
    where = str(path.relative_to(REPO))

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            inside = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0:
                names = [child.module or ""]
            elif isinstance(child, ast.Call) and child.args and isinstance(child.args[0], ast.Constant):
                called = ast.unparse(child.func)
                if called.endswith(("import_module", "__import__")) and isinstance(child.args[0].value, str):
                    names = [child.args[0].value]
            if any(n == "testkit" or n.startswith("testkit.") for n in names):
                found.append((where, function, getattr(child, "lineno", 0)))
            visit(child, inside)

    visit(ast.parse(path.read_text(), filename=where), None)
    return found


def test_no_service_module_imports_testkit_but_the_replay_command() -> None:
    found = [hit for package in SERVICE for path in sorted((REPO / package).rglob("*.py"))
             for hit in _testkit_imports(path)]  # fmt: skip
    assert {(where, function) for where, function, _ in found} == ALLOWED, found
    assert len(found) == len(ALLOWED), found  # one import each, inside the function


def test_every_service_module_imports_without_testkit() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_replay_without_testkit_says_it_needs_the_dev_set(tmp_path: Path) -> None:
    scenario = tmp_path / "hours.yaml"
    scenario.write_text("bot: support_desk\ncaller:\n  - say: Hi.\n")
    run = f"""
import sys
sys.modules["testkit"] = None  # what an install without the dev set looks like to an import
from agent.cli.main import main
sys.exit(main(["--config", {str(REPO / "config.yaml")!r}, "replay", {str(scenario)!r}]))
"""
    done = subprocess.run([sys.executable, "-c", run], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "hotline replay needs the dev set: make setup-dev"
    assert done.stdout == ""
