"""The pipeline benchmark's printed summary and its chart (bench/results/pipeline.png)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.pipeline_png import BLACK, GREY, Canvas, Color

BLUE: Color = (31, 119, 180)
ORANGE: Color = (255, 127, 14)
GREEN: Color = (44, 160, 44)
RED: Color = (214, 39, 40)
LIGHT: Color = (150, 150, 150)


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.0f}"


def summary(f: dict[str, Any]) -> list[str]:
    """A few lines with the headline numbers."""
    lat, tun, asr = f["response_latency"], f["end_silence_tuning"], f["asr_accuracy"]
    ours, base, ratio = lat["ours"], lat["segmented_baseline"], lat["ratio_ours_vs_baseline"]
    lines = [
        f"response ms (end of speech -> first audio), ours vs segmented baseline, {ours['answered']}+"
        f"{base['answered']} turns: p50 {_ms(ours['response_ms']['p50'])} vs "
        f"{_ms(base['response_ms']['p50'])},"
        f" p95 {_ms(ours['response_ms']['p95'])} vs {_ms(base['response_ms']['p95'])};"
        f" ratio p50 {ratio['p50']} p95 {ratio['p95']} (target <= {lat['target_ratio']})",
    ]
    for name, arm in (("ours", ours), ("baseline", base)):
        lines.append(
            f"  {name:8s} p50: endpoint {_ms(arm['endpoint_ms']['p50'])}, asr {_ms(arm['asr_ms']['p50'])} "
            f"(wait after endpoint {_ms(arm['asr_wait_ms']['p50'])}, speculative hits "
            f"{arm['asr_speculative_hit_rate']}), tts first audio {_ms(arm['tts_first_audio_ms']['p50'])}, "
            f"client-side {_ms(arm['client_ms']['p50'])}"
        )
    cells = []
    for value, row in tun["response_by_end_silence_ms"].items():
        split = tun["false_splits_offline"].get(value, {}).get("split_rate")
        split_s = "-" if split is None else f"{split:.0%}"
        cells.append(f"{value}: p50 {_ms(row['response_ms']['p50'])} split {split_s}")
    lines.append("end_silence_ms " + " | ".join(cells) + f"; recommended {tun['recommended_end_silence_ms']}")
    lines.append(
        f"ASR WER in the pipeline {asr['wer_pipeline']:.2%} vs offline {asr['wer_offline']:.2%} "
        f"(ratio {asr['ratio_pipeline_vs_offline']}, {asr['prompts']} prompts, {asr['reference_words']} "
        f"words); offline on the detector's turn audio {asr['wer_offline_on_turn_audio']:.2%}, same text "
        f"for {asr['pipeline_same_text_as_offline_on_turn_audio']}/{asr['prompts']}"
    )
    if cut := asr.get("turn_cut_offline_all_prompts"):
        lines.append(
            f"  all {cut['prompts']} prompts offline: whole files {cut['wer_whole_file']:.2%}, turn audio "
            f"{cut['wer_turn_audio']:.2%} (ratio {cut['ratio_turn_audio_vs_whole_file']})"
        )
    cells = [
        f"{lv['calls']}: p50/p95 {_ms(lv['response_ms']['p50'])}/{_ms(lv['response_ms']['p95'])} "
        f"late {lv['playout']['late_chunks']}/{lv['playout']['chunks']} cpu {lv['service_cpu_frac']:.0%}"
        f" (machine {lv['machine_busy_frac']:.0%})"
        for lv in f["concurrency"]["levels"]
    ]
    knee = f["concurrency"]["knee"]
    lines.append("calls " + " | ".join(cells))
    lines.append(f"  within budget up to {knee['calls_within']} calls; past it: {knee['limited_by']}")
    if llm := f.get("llm_dialogue"):
        lines.append(
            f"LLM dialogue ({llm['ttft_s'] * 1000:.0f} ms TTFT): response p50/p95 "
            f"{_ms(llm['response_ms']['p50'])}/{_ms(llm['response_ms']['p95'])} ms, dialogue first text p50 "
            f"{_ms(llm['dialogue_first_text_ms']['p50'])} ms = {llm['dialogue_share_of_response_p50']:.0%} "
            f"of the response ({llm['answered']} turns)"
        )
    mem = f["memory"]
    lines.append(
        f"memory: {mem['rss_mb_idle_models_loaded']} MB with models loaded, "
        f"+{mem['mb_per_additional_call']} MB per additional call"
    )
    return lines


# ------------------------------------------------------------------------------------------ chart


def _nice_max(value: float) -> tuple[float, float]:
    """An axis top at or above `value`, and a tick step (1, 2 or 5 × a power of ten)."""
    value = max(value, 1e-9)
    power = 10 ** math.floor(math.log10(value / 4))
    step = next(m * power for m in (1, 2, 5, 10) if value / (m * power) <= 5)
    return step * math.ceil(value / step), step


class Panel:
    """One chart: a title, a y axis from 0 to a nice maximum, and category slots along x."""

    def __init__(self, c: Canvas, box: tuple[int, int, int, int], title: str, ymax: float, unit: str) -> None:
        self.c = c
        x, y, w, h = box
        self.left, self.top, self.right, self.bottom = x + 70, y + 50, x + w - 60, y + h - 70
        self.ymax, step = _nice_max(ymax)
        c.text(x + w / 2, y + 12, title, anchor="center")
        tick = 0.0
        while tick <= self.ymax + 1e-9:
            py = self.y(tick)
            c.line(self.left, py, self.right, py, GREY, 1)
            c.text(self.left - 6, py - 7, f"{tick:g}", anchor="right")
            tick += step
        c.text(self.left - 6, self.top - 30, unit, color=LIGHT, anchor="left")
        c.line(self.left, self.top, self.left, self.bottom, BLACK, 2)
        c.line(self.left, self.bottom, self.right, self.bottom, BLACK, 2)

    def y(self, value: float) -> float:
        """Pixel row of a value."""
        return self.bottom - (self.bottom - self.top) * min(value, self.ymax) / self.ymax

    def slot(self, i: int, n: int) -> float:
        """Pixel column of the middle of category i of n."""
        return self.left + (self.right - self.left) * (i + 0.5) / n

    def labels(self, names: Sequence[str], notes: Sequence[str] = ()) -> None:
        """Category names under the x axis, and optional grey notes under them."""
        for i, name in enumerate(names):
            self.c.text(self.slot(i, len(names)), self.bottom + 8, name, anchor="center")
        for i, note in enumerate(notes):
            self.c.text(self.slot(i, len(notes)), self.bottom + 26, note, color=LIGHT, anchor="center")

    def legend(self, items: Sequence[tuple[str, Color]]) -> None:
        """Colour keys under the x axis labels, wrapping onto a second row."""
        x, y = self.left - 60, self.bottom + 46
        for name, color in items:
            width = 20 + Canvas.text_width(name)
            if x + width > self.right + 50:
                x, y = self.left - 60, y + 18
            self.c.rect(x, y, x + 14, y + 14, color)
            self.c.text(x + 20, y, name)
            x += width + 24

    def series(
        self, values: Sequence[float | None], color: Color, scale: Callable[[float], float], dy: int = -20
    ) -> None:
        """A line through the values at each slot (None leaves a hole), with dots labelled `dy` above."""
        points = [(self.slot(i, len(values)), scale(v), v) for i, v in enumerate(values) if v is not None]
        for (x0, y0, _), (x1, y1, _) in itertools.pairwise(points):
            self.c.line(x0, y0, x1, y1, color, 3)
        for x, y, v in points:
            self.c.rect(x - 5, y - 5, x + 5, y + 5, color)
            if v:
                self.c.text(x + 8, y + dy, f"{v:.0f}", color=color)


def write_chart(f: dict[str, Any], path: Path) -> Path:
    """Four panels: ours vs baseline, their breakdown, latency against calls, and the tuning curve."""
    c = Canvas(1400, 1020)
    lat = f["response_latency"]
    ours, base = lat["ours"], lat["segmented_baseline"]

    top = max(base["response_ms"]["p95"] or 0, ours["response_ms"]["p95"] or 0, 1)
    p = Panel(c, (0, 0, 700, 500), "Response latency: ours vs segmented", top * 1.1, "ms")
    for i, q in enumerate(("p50", "p95")):
        for j, (arm, color) in enumerate(((ours, BLUE), (base, ORANGE))):
            v = arm["response_ms"][q] or 0
            x = p.slot(i, 2) + (j - 1) * 70 + 5
            c.rect(x, p.y(v), x + 60, p.bottom, color)
            c.text(x + 30, p.y(v) - 18, f"{v:.0f}", anchor="center")
    p.labels(["p50", "p95"])
    ours_ms = ours["turn_taking"]["end_silence_ms"]
    p.legend([(f"ours: {ours_ms} ms + speculative asr", BLUE), ("segmented: 800 ms, then asr", ORANGE)])

    parts = (("endpoint_ms", GREY, "endpoint"), ("asr_wait_ms", ORANGE, "asr wait"),
             ("tts_first_audio_ms", GREEN, "tts first audio"))  # fmt: skip
    p = Panel(c, (700, 0, 700, 500), "Where the time goes (sum of p50s)", top * 1.1, "ms")
    for i, arm in enumerate((ours, base)):
        x, bottom = p.slot(i, 2), 0.0
        for key, color, _ in parts:
            v = max(arm[key]["p50"] or 0, 0)
            c.rect(x - 50, p.y(bottom + v), x + 50, p.y(bottom), color)
            bottom += v
        c.text(x, p.y(bottom) - 18, f"{bottom:.0f}", anchor="center")
    p.labels(["ours", "segmented"])
    p.legend([(name, color) for _, color, name in parts])

    levels = f["concurrency"]["levels"]
    top = max([lv["response_ms"]["p95"] or 0 for lv in levels] + [1])
    p = Panel(c, (0, 510, 700, 500), "Response vs calls (service cpu)", top * 1.1, "ms")
    for key, color in (("p50", BLUE), ("p95", RED)):
        p.series([lv["response_ms"][key] for lv in levels], color, p.y)
    p.labels([str(lv["calls"]) for lv in levels], [f"{lv['service_cpu_frac']:.0%}" for lv in levels])
    p.legend([("p50", BLUE), ("p95", RED), ("calls / service cpu of 2 cores", LIGHT)])

    tuning = f["end_silence_tuning"]
    splits = tuning["false_splits_offline"]
    values = sorted({int(v) for v in tuning["response_by_end_silence_ms"]} | {int(v) for v in splits})
    response = [
        tuning["response_by_end_silence_ms"].get(str(v), {}).get("response_ms", {}).get("p50") for v in values
    ]
    split = [splits[str(v)]["split_rate"] * 100 if str(v) in splits else None for v in values]
    p = Panel(
        c,
        (700, 510, 700, 500),
        "end_silence_ms: response, false splits",
        max([r or 0 for r in response] + [1]) * 1.1,
        "ms",
    )
    split_top, _ = _nice_max(max([s or 0 for s in split] + [10]))
    p.series(response, BLUE, p.y)
    p.series(split, RED, lambda s: p.bottom - (p.bottom - p.top) * s / split_top, dy=6)
    c.text(p.right - 4, p.top + 24, "split % on the right", color=RED, anchor="right")
    c.text(p.right + 6, p.top - 7, f"{split_top:g}", color=RED)
    c.text(p.right + 6, p.bottom - 7, "0", color=RED)
    rec = tuning["recommended_end_silence_ms"]
    if rec in values:
        x = p.slot(values.index(rec), len(values))
        c.line(x, p.top, x, p.bottom, GREEN, 2)
        c.text(x + 6, p.top + 4, "recommended", color=GREEN)
    p.labels([str(v) for v in values])
    p.legend([("response p50 (ms)", BLUE), ("multi-clause prompts split (%)", RED)])
    return c.save(path)
