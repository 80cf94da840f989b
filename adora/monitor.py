"""The grid table: rows from the Explorer's hooks, rendered with rich, as text, or as JSON."""

from __future__ import annotations

import json
import typing as tp
from dataclasses import dataclass

from .explore import Column as Node
from .explore import Explorer, Sheep
from .states import JobState

if tp.TYPE_CHECKING:
    from rich.table import Table

__all__ = ["Column", "GridTable", "build_table", "dumps", "write_json"]


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


def _fmt(value: tp.Any, spec: str) -> str:
    if value is None:
        return ""
    if spec:
        try:
            return format(value, spec)
        except (TypeError, ValueError):
            pass
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


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

    def to_rich(self, max_rows: int | None = None) -> Table:
        """The table for a terminal; with more than ``max_rows`` rows, the first and last
        ``max_rows // 2`` only, and a line saying how many are left out."""
        from rich.table import Table

        caption = f"Base name: {self.base_name}" if self.base_name else None
        table = Table(title=self.title, caption=caption, header_style="bold",
                      row_styles=["", "dim"] if len(self.rows) > 6 else None)
        for column in self.columns:
            justify = "right" if column.align == ">" else "left"
            table.add_column(column.header, justify=tp.cast(tp.Any, justify), no_wrap=True)
        rows: tp.Sequence[dict[str, tp.Any]] = self.rows
        hidden = 0
        if max_rows is not None and len(rows) > max_rows:
            half = max(1, max_rows // 2)
            hidden = len(rows) - 2 * half
            rows = [*rows[:half], {}, *rows[-half:]]
        for row in rows:
            if not row:
                table.add_row(*[f"[dim]... {hidden} more XPs: see them all with --json, "
                                "or with the output piped to a file or less[/]"
                                if i == 1 else "" for i in range(len(self.columns))])
                continue
            cells = []
            for column in self.columns:
                text = _fmt(_get(row, column.path), column.format)
                if column.path == ("Meta", "state"):
                    style = _STYLES.get(text[:3], "")
                    text = f"[{style}]{text}[/]" if style else text
                cells.append(text)
            table.add_row(*cells)
        return table

    def to_text(self) -> str:
        header = [c.header for c in self.columns]
        lines = [[_fmt(_get(row, c.path), c.format) for c in self.columns] for row in self.rows]
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
        return "\n".join(out)

    def to_json(self) -> list[dict[str, tp.Any]]:
        return list(self.iter_json())

    def iter_json(self) -> tp.Iterator[dict[str, tp.Any]]:
        """The rows of `to_json`, one at a time (`write_json` streams them)."""
        for sheep, row in zip(self.sheeps, self.rows):
            status = sheep.status
            metrics = {k: v for k, v in row.items() if k != "Meta"}
            yield {
                "index": row["Meta"]["index"], "name": row["Meta"]["name"], "sig": sheep.xp.sig,
                "state": None if sheep.job_state is None else sheep.job_state.value,
                "stale": sheep.stale, "job_id": sheep.current_job_id,
                "exit_code": None if status is None else status.exit_code,
                "folder": str(sheep.xp.folder), "argv": sheep.xp.argv, "metrics": metrics,
            }


MergeCache = dict[str, tuple[int, int, dict[str, tp.Any]]]


def _default_metrics(explorer: Explorer) -> bool:
    cls = type(explorer)
    return (cls.process_history is Explorer.process_history
            and cls.process_sheep is Explorer.process_sheep)


def _merged(sig: str, history: list[dict[str, tp.Any]], cache: MergeCache) -> dict[str, tp.Any]:
    # What Explorer.process_history computes, updated with the new entries only:
    # histories grow, and re-merging 1,000 entries per XP per refresh adds up.
    ident, count, out = cache.get(sig, (0, 0, {}))
    if ident != id(history) or count > len(history):
        count, out = 0, {}
    for metrics in history[count:]:
        out.update(metrics)
    cache[sig] = (id(history), len(history), out)
    return {"epoch": len(history), **out}


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
    for index, (sheep, name, history) in enumerate(zip(sheeps, names, hists)):
        row: dict[str, tp.Any] = {"Meta": {
            "index": index, "name": name, "state": state_text(sheep), "sig": sheep.xp.sig,
            "sid": sheep.current_job_id or "",
        }}
        if incremental:
            assert cache is not None
            metrics = _merged(sheep.xp.sig, history, cache)
        else:
            try:
                metrics = explorer.process_sheep(sheep, history)
            except NotImplementedError:
                metrics = explorer.process_history(history)
        row.update(metrics)
        rows.append(row)
    meta = flatten([Node(key="Meta", groups=list(explorer.get_grid_meta()))])
    columns = [Column(c.path, c.path[-1], c.format, c.align) for c in meta]
    columns += flatten(explorer.get_grid_metrics())
    return GridTable(title, base_name, columns, rows, list(sheeps))


def dumps(tables: tp.Sequence[GridTable]) -> str:
    """The JSON of `adora grid --json`: ``{"Grid NAME": [row, ...], ...}``, one row a line."""
    parts: list[str] = []
    write_json(tables, parts.append)
    return "".join(parts)


def write_json(tables: tp.Sequence[GridTable], write: tp.Callable[[str], tp.Any], *,
               batch: int = 1000) -> None:
    """Write `dumps(tables)` a few rows at a time: a 100,000-XP grid never holds its
    whole JSON in memory. One row a line, by the C encoder: ``indent`` would take the
    pure-Python encoder, several times slower, and its closures are reference cycles
    (garbage that only the cyclic collector frees, which ``adora grid`` turns off)."""
    by_title = {t.title: t for t in tables}  # as a dict of the tables: the last one wins
    if not by_title:
        write("{}")
        return
    encode = json.JSONEncoder(default=str).encode
    write("{")
    for number, (title, table) in enumerate(by_title.items()):
        write(("," if number else "") + "\n  " + encode(title) + ": [")
        parts: list[str] = []
        count = 0
        for row in table.iter_json():
            parts.append(("," if count else "") + "\n    " + encode(row))
            count += 1
            if len(parts) >= batch:
                write("".join(parts))
                parts = []
        write("".join(parts) + ("\n  ]" if count else "]"))
    write("\n}")
