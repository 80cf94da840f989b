"""The grid table: rows from the Explorer's hooks, rendered with rich, as text, or as JSON."""

from __future__ import annotations

import json
import math
import typing as tp
from dataclasses import dataclass, field

from .explore import Column as Node
from .explore import Explorer, Sheep
from .states import JobState

if tp.TYPE_CHECKING:
    from rich.console import Group
    from rich.table import Table

__all__ = ["Column", "GridTable", "build_table"]


@dataclass(frozen=True)
class Column:
    """One leaf column: where its value is in a row, its header and format."""

    path: tuple[str, ...]
    header: str
    format: str = ""
    align: str | None = None


def flatten(nodes: tp.Sequence[tp.Any], prefix: tuple[str, ...] = ()) -> list[Column]:
    """Leaf columns of ``treetable``-style nodes (``key``, ``groups``, ``format``...)."""
    columns: list[Column] = []
    for node in nodes:
        key = str(node.key)
        groups = getattr(node, "groups", None)
        if groups is not None:
            columns += flatten(list(groups), prefix + (key,))
        else:
            display = getattr(node, "display", None) or key
            header = ".".join(prefix + (display,))
            columns.append(Column(prefix + (key,), header, getattr(node, "format", "") or "",
                                  getattr(node, "align", None)))
    return columns


def _get(row: dict[str, tp.Any], path: tuple[str, ...]) -> tp.Any:
    value: tp.Any = row
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


#: Cell of a value its column's format cannot show (text under ``.4f``, 10**400...).
BAD_VALUE = "!"
#: Metric cells of an XP whose metrics could not be computed (a hook raised).
HOOK_ERROR = "err"
_LEGEND = {
    BAD_VALUE: f"{BAD_VALUE}: a value its column's format cannot show (`--json` has it as is).",
}


def _fmt(value: tp.Any, spec: str) -> str:
    # Never raises: one XP's odd value must not break the table of its grid.
    if value is None:
        return ""
    try:
        if spec:
            return format(value, spec)
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)
    except (TypeError, ValueError, OverflowError):
        return BAD_VALUE


def state_text(sheep: Sheep) -> str:
    """Dora's three letters (RUN, PEN, COM, FAI...), ``N/A`` without a job, ``?`` if stale."""
    state = sheep.job_state
    if state is None:
        return "N/A"
    text = state.short
    if sheep.stale or state is JobState.UNKNOWN:
        text = f"{text}?" if state is not JobState.UNKNOWN else "UNK?"
    return text


_STYLES = {"RUN": "green", "PEN": "cyan", "COM": "bold green", "FAI": "bold red",
           "CAN": "yellow", "TIM": "red", "OUT": "red", "UNK": "magenta", "N/A": "dim"}


@dataclass
class GridTable:
    """The table of one grid, ready to render."""

    title: str
    base_name: str
    columns: list[Column]
    rows: list[dict[str, tp.Any]]
    sheeps: list[Sheep]
    #: Problems with the metrics of some XPs, one line each, shown under the table.
    notes: list[str] = field(default_factory=list)

    def _cells(self, row: dict[str, tp.Any]) -> list[str]:
        failed = "error" in row["Meta"]
        return [HOOK_ERROR if failed and c.path[0] != "Meta" else _fmt(_get(row, c.path), c.format)
                for c in self.columns]

    def footer(self, cells: tp.Iterable[tp.Iterable[str]]) -> list[str]:
        """What goes under the table: the meaning of the marks it shows, then the notes."""
        shown = {cell for line in cells for cell in line}
        return [text for mark, text in _LEGEND.items() if mark in shown] + self.notes

    def to_rich(self) -> Table | Group:
        """The table for a terminal; with the notes under it when there are some."""
        from rich.console import Group
        from rich.markup import escape
        from rich.table import Table
        from rich.text import Text

        lines = [self._cells(row) for row in self.rows]
        caption = f"Base name: {self.base_name}" if self.base_name else None
        table = Table(title=self.title, caption=caption, header_style="bold",
                      row_styles=["", "dim"] if len(self.rows) > 6 else None)
        for column in self.columns:
            justify = "right" if column.align == ">" else "left"
            table.add_column(column.header, justify=tp.cast(tp.Any, justify), no_wrap=True)
        for cells in lines:
            styled = []
            for column, text in zip(self.columns, cells):
                text = escape(text)
                if column.path == ("Meta", "state"):
                    style = _STYLES.get(text[:3], "")
                    text = f"[{style}]{text}[/]" if style else text
                elif text in (BAD_VALUE, HOOK_ERROR):
                    text = f"[bold red]{text}[/]"
                styled.append(text)
            table.add_row(*styled)
        footer = self.footer(lines)
        if footer:
            return Group(table, Text("\n".join(footer), style="yellow"))
        return table

    def to_text(self) -> str:
        header = [c.header for c in self.columns]
        lines = [self._cells(row) for row in self.rows]
        widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(header)]

        def fmt_line(cells: list[str]) -> str:
            return "  ".join(
                cell.rjust(w) if c.align == ">" else cell.ljust(w)
                for cell, w, c in zip(cells, widths, self.columns)).rstrip()

        out = [self.title]
        if self.base_name:
            out.append(f"Base name: {self.base_name}")
        out.append(fmt_line(header))
        out += [fmt_line(line) for line in lines]
        out += self.footer(lines)
        return "\n".join(out)

    def to_json(self) -> list[dict[str, tp.Any]]:
        out = []
        for sheep, row in zip(self.sheeps, self.rows):
            status = sheep.status
            metrics = {k: v for k, v in row.items() if k != "Meta"}
            entry = {
                "index": row["Meta"]["index"], "name": row["Meta"]["name"], "sig": sheep.xp.sig,
                "state": None if sheep.job_state is None else sheep.job_state.value,
                "stale": sheep.stale, "job_id": sheep.current_job_id,
                "exit_code": None if status is None else status.exit_code,
                "folder": str(sheep.xp.folder), "argv": sheep.xp.argv, "metrics": metrics,
            }
            if "error" in row["Meta"]:
                entry["metrics_error"] = row["Meta"]["error"]
            out.append(entry)
        return out


@dataclass
class _Merge:
    # The default metrics of one XP, as merged so far (see `_merged`).
    history_id: int
    count: int
    metrics: dict[str, tp.Any]
    epochs: int = 0
    skipped: int = 0
    example: tp.Any = None


MergeCache = dict[str, _Merge]


def _default_metrics(explorer: Explorer) -> bool:
    cls = type(explorer)
    return (cls.process_history is Explorer.process_history
            and cls.process_sheep is Explorer.process_sheep)


def _merged(sig: str, history: list[dict[str, tp.Any]], cache: MergeCache) -> _Merge:
    # What Explorer.process_history computes (on the entries that are dicts), updated
    # with the new entries only: histories grow, and re-merging 1,000 entries per XP per
    # refresh adds up.
    merge = cache.get(sig)
    if merge is None or merge.history_id != id(history) or merge.count > len(history):
        merge = cache[sig] = _Merge(id(history), 0, {})
    out = merge.metrics
    for metrics in history[merge.count:]:
        if isinstance(metrics, dict):
            out.update(metrics)
            merge.epochs += 1
        else:
            merge.skipped += 1
            if merge.example is None:
                merge.example = metrics
    merge.count = len(history)
    return merge


def _skipped_note(index: int, sig: str, count: int, example: tp.Any) -> str:
    shown = repr(example)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    entries = "entry is" if count == 1 else "entries are"
    return (f"#{index} {sig}: {count} history {entries} not a dict of metrics (e.g. {shown}), "
            "skipped.")


def build_table(title: str, explorer: Explorer, sheeps: tp.Sequence[Sheep], names: tp.Sequence[str],
                base_name: str, histories: tp.Mapping[str, list[dict[str, tp.Any]]], *,
                trim: int | None = None, trim_last: bool = False,
                cache: MergeCache | None = None) -> GridTable:
    """Rows of the table from the explorer's hooks, as ``dora grid`` shows them.

    ``cache`` (kept by the caller across refreshes) makes the default metrics
    incremental.
    """
    hists = [histories.get(s.xp.sig, []) for s in sheeps]
    limit = None
    if trim is not None and 0 <= trim < len(hists):
        limit = len(hists[trim])
    elif trim_last and hists:
        limit = min(len(h) for h in hists)
    if limit is not None:
        hists = [h[:limit] for h in hists]
    incremental = cache is not None and limit is None and _default_metrics(explorer)
    rows = []
    notes: list[str] = []
    for index, (sheep, name, history) in enumerate(zip(sheeps, names, hists)):
        meta: dict[str, tp.Any] = {
            "index": index, "name": name, "state": state_text(sheep), "sig": sheep.xp.sig,
            "sid": sheep.current_job_id or "",
        }
        if incremental:
            assert cache is not None
            merge = _merged(sheep.xp.sig, history, cache)
            metrics = {"epoch": merge.epochs, **merge.metrics}
            if merge.skipped:
                notes.append(_skipped_note(index, sheep.xp.sig, merge.skipped, merge.example))
        else:
            bad = [entry for entry in history if not isinstance(entry, dict)]
            if bad:
                notes.append(_skipped_note(index, sheep.xp.sig, len(bad), bad[0]))
                history = [entry for entry in history if isinstance(entry, dict)]
            metrics, error = _hook_metrics(explorer, sheep, history)
            if error is not None:
                meta["error"] = error
                notes.append(f"{HOOK_ERROR}: #{index} {sheep.xp.sig}: {error}")
        row = dict(metrics)
        row["Meta"] = meta  # a metric named Meta cannot hide the XP
        rows.append(row)
    meta_columns = flatten([Node(key="Meta", groups=list(explorer.get_grid_meta()))])
    columns = [Column(c.path, c.path[-1], c.format, c.align) for c in meta_columns]
    columns += flatten(explorer.get_grid_metrics())
    return GridTable(title, base_name, columns, rows, list(sheeps), notes)


def _hook_metrics(explorer: Explorer, sheep: Sheep, history: list[dict[str, tp.Any]]
                  ) -> tuple[dict[str, tp.Any], str | None]:
    # The explorer's metrics of one XP, or the error of the user's hook (one line, with
    # where it was raised): a bug in a hook shows on the XP's row, not as a traceback.
    hook = "process_sheep"
    try:
        try:
            metrics = explorer.process_sheep(sheep, history)
        except NotImplementedError:
            hook = "process_history"
            metrics = explorer.process_history(history)
        if not isinstance(metrics, dict):
            raise TypeError(f"returned {type(metrics).__name__}, not a dict")
    except Exception as exc:
        import traceback

        frames = traceback.extract_tb(exc.__traceback__)
        where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
        return {}, f"{type(explorer).__name__}.{hook} raised {type(exc).__name__}: {exc}{where}"
    return metrics, None


def _finite(value: tp.Any) -> tp.Any:
    # JSON has no NaN or infinity: they become the strings "NaN", "Infinity", "-Infinity".
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(tables: tp.Sequence[GridTable]) -> str:
    """The tables as strict JSON (``adora grid --json``)."""
    data = {t.title: t.to_json() for t in tables}
    try:
        return json.dumps(data, indent=2, default=str, allow_nan=False)
    except ValueError:  # a NaN or an infinity somewhere: rare, so only then walk it all
        return json.dumps(_finite(data), indent=2, default=str)
