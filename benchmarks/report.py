"""Rows of the results table, rendered as text (terminal) or Markdown (RESULTS.md)."""

from __future__ import annotations

import json
import typing as tp
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Row:
    """One line of the table: a metric of one benchmark for both tools."""

    bench: str
    metric: str
    unit: str
    adora: float | None
    dora: float | None
    #: ("ratio", x): adora/Dora must be <= x; ("abs", x): adora <= x; None: no target.
    target: tuple[str, float] | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.adora is None or self.dora is None or self.dora == 0:
            return None
        return self.adora / self.dora

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "-"
        kind, limit = self.target
        value = self.ratio if kind == "ratio" else self.adora
        if value is None:
            return "n/a"
        return "PASS" if value <= limit else "MISS"

    def target_text(self) -> str:
        if self.target is None:
            return "-"
        kind, limit = self.target
        if kind == "ratio":
            return f"<= {limit:g}x Dora" if limit >= 0.1 else f"<= 1/{1 / limit:.0f} Dora"
        return f"<= {limit:g} {self.unit}"

    def to_json(self) -> dict[str, tp.Any]:
        out = asdict(self)
        out.update(ratio=self.ratio, verdict=self.verdict, target=self.target_text())
        return out


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "cmds":  # counts of Slurm commands: whole numbers, or averages
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"
    if unit == "MB":
        return f"{value:.0f} MB"
    if value >= 10:
        return f"{value:.1f} {unit}"
    if value >= 0.1:
        return f"{value:.2f} {unit}"
    return f"{value:.3f} {unit}"


def _ratio(row: Row) -> str:
    ratio = row.ratio
    if ratio is None:
        return "n/a"
    speedup = f" ({1 / ratio:.0f}x less)" if ratio < 0.5 and ratio > 0 else ""
    return f"{ratio:.3f}{speedup}"


HEADER = ["benchmark", "metric", "adora", "Dora", "adora/Dora", "target", "result"]


def cells(row: Row) -> list[str]:
    return [row.bench, row.metric, _num(row.adora, row.unit), _num(row.dora, row.unit),
            _ratio(row), row.target_text(), row.verdict]


def text_table(rows: tp.Sequence[Row]) -> str:
    lines = [HEADER] + [cells(r) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(rows: tp.Sequence[Row]) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(row)) + " |")
    return "\n".join(out)


def record(results_md: Path, results: dict[str, tp.Any], rows: tp.Sequence[Row]) -> None:
    """Append one dated section (context, table, notes, raw JSON) to RESULTS.md."""
    ctx = results["context"]
    lines = [
        "",
        f"## {ctx['date']} — {ctx['machine']}",
        "",
        f"- adora: commit `{ctx['adora_commit']}`"
        + (" (with uncommitted changes in adora/)" if ctx["dirty"] else "")
        + f", Python {ctx['adora_python_version']}",
        f"- Dora: dora-search {ctx['dora_version']}, torch {ctx['torch_version']}",
        f"- load average at start / end: {ctx['load_start']} / {ctx['load_end']}"
        f"; total run time {ctx['total_seconds']:.0f} s",
        f"- command: `{ctx['command']}`",
        "",
        markdown_table(rows),
        "",
    ]
    notes = [f"- {r.bench}, {r.metric}: {r.note}" for r in rows if r.note]
    if notes:
        lines += ["Notes:", "", *notes, ""]
    skipped = results.get("skipped") or {}
    if skipped:
        lines += ["Skipped:", "", *(f"- {name}: {why}" for name, why in skipped.items()), ""]
    lines += ["<details><summary>Raw results (JSON)</summary>", "", "```json",
              json.dumps(results, indent=1, default=str), "```", "", "</details>", ""]
    with open(results_md, "a") as f:
        f.write("\n".join(lines))
