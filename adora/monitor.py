"""The grid table: rows from the Explorer's hooks, rendered with rich, as text, or as JSON."""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import time
import typing as tp
from dataclasses import dataclass, field

from .explore import Explorer, Sheep
from .states import JobState

if tp.TYPE_CHECKING:
    from rich.console import Group

__all__ = ["Column", "GridTable", "build_table", "dumps", "write_json"]


@dataclass(frozen=True)
class Column:
    """One leaf column: where its value is in a row, its headers and how to show it.

    ``groups`` are the displays of the metric groups above it (outermost first);
    ``short`` its header as treetable's ``shorten`` makes it (the shortest prefix
    that tells it from its siblings), used when the terminal is narrow.
    """

    path: tuple[str, ...]
    header: str
    format: str = ""
    align: str | None = None
    groups: tuple[str, ...] = ()
    wrap: int | None = None
    missing: str = ""
    short: str = ""

    @property
    def name(self) -> str:
        """``valid.loss``: how `--metrics` names it, and how a hidden column is listed."""
        return ".".join(self.groups + (self.header,))

    @property
    def key_name(self) -> str:
        return ".".join(self.path)


def _short_names(names: list[str]) -> list[str]:
    # The shortest prefixes that tell sibling headers apart (treetable's ``shorten``).
    lengths = [1] * len(names)
    for _ in range(max((len(n) for n in names), default=0)):
        prefixes = [n[:k] for n, k in zip(names, lengths)]
        clash = {p for p in prefixes if prefixes.count(p) > 1}
        if not clash:
            break
        lengths = [k + 1 if p in clash else k for p, k in zip(prefixes, lengths)]
    return [n[:k] for n, k in zip(names, lengths)]


def flatten(nodes: tp.Sequence[tp.Any], prefix: tuple[str, ...] = (),
            groups: tuple[str, ...] = (), inherited: dict[str, tp.Any] | None = None
            ) -> list[Column]:
    """Leaf columns of ``treetable``-style nodes (``key``, ``groups``, ``display``,
    ``format``, ``align``, ``wrap``, ``missing``; a group's options apply to its
    leaves unless they set their own, as in treetable)."""
    inherited = inherited or {}
    columns: list[Column] = []
    displays = [str(getattr(node, "display", None) or node.key) for node in nodes]
    shorts = _short_names(displays) if len(set(displays)) == len(displays) else displays
    for node, display, short in zip(nodes, displays, shorts):
        key = str(node.key)
        options = dict(inherited)
        for option in ("format", "align", "wrap", "missing"):
            value = getattr(node, option, None)
            if value is not None and value != "":
                options[option] = value
        children = getattr(node, "groups", None)
        if children is not None:
            columns += flatten(list(children), prefix + (key,), groups + (display,), options)
        else:
            wrap = options.get("wrap")
            columns.append(Column(
                prefix + (key,), display, str(options.get("format") or ""),
                options.get("align"), groups,
                wrap if isinstance(wrap, int) and wrap > 0 else None,
                str(options.get("missing") or ""), short))
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
           "CAN": "yellow", "TIM": "bold red", "OUT": "bold red", "NOD": "bold red",
           "BOO": "bold red", "DEA": "bold red", "MIS": "bold red", "UNK": "magenta",
           "N/A": "dim"}

#: Meta columns shown whatever the width, never cut.
ESSENTIAL = ("index", "state", "sig")
#: Metric columns showing progress: kept when other metrics are hidden.
PROGRESS = ("epoch",)
#: Narrowest the name column gets (a shorter name keeps its own width; a longer part of a
#: name, up to twice this, widens it).
NAME_MIN = 12
_STATE = ("Meta", "state")
_NAME = ("Meta", "name")
_ELAPSED = ("Meta", "elapsed")


def duration(seconds: float | None) -> str:
    """``45s``, ``12m03s``, ``3h07m``, ``2d04h``: short enough for a narrow column."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    minutes, sec = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def elapsed(sheep: Sheep, now: float) -> float | None:
    """How long the XP's job has run (ran): from the backend's start and end times;
    for an active job whose start the backend does not give, since its submission."""
    status = sheep.status
    if sheep.job is None or sheep.job_state is None:
        return None
    if status is not None and status.started_at:
        return (status.ended_at or now) - status.started_at
    if status is not None and status.elapsed is not None:
        return status.elapsed
    if sheep.job_state.is_final or sheep.job_state is JobState.PENDING:
        return None
    return now - sheep.job.submitted_at if sheep.job.submitted_at else None


def _separator(a: Column, b: Column) -> str:
    # As treetable: two spaces inside a group, a bar between groups (and after Meta).
    a_meta, b_meta = a.path[0] == "Meta", b.path[0] == "Meta"
    if a_meta and b_meta:
        return "  "
    if a_meta != b_meta or a.groups != b.groups:
        return " | "
    return "  "


def _wrap_words(text: str, width: int) -> list[str]:
    # Names wrap between their parts (``lr=0.1 bs=32``); a part longer than the
    # column is cut into pieces, never dropped.
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        while len(word) > width:
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:width])
            word = word[width:]
        if not current:
            current = word
        elif len(current) + 1 + len(word) <= width:
            current += " " + word
        else:
            lines.append(current)
            current = word
    lines.append(current)
    return lines


def _chunks(text: str, width: int) -> list[str]:
    return [text[i:i + width] for i in range(0, len(text), width)] or [""]


def _align(text: str, width: int, align: str) -> str:
    if align == ">":
        return text.rjust(width)
    if align == "=":
        return text.center(width)
    return text.ljust(width)


@dataclass
class Layout:
    """Which columns a width shows, how wide each is, and which it hides."""

    visible: list[int]
    widths: dict[int, int]
    short: bool
    hidden: list[Column]
    width: int | None = None

    def total(self, columns: list[Column]) -> int:
        return _total(columns, self.visible, self.widths)


def _total(columns: list[Column], visible: list[int], widths: tp.Mapping[int, int]) -> int:
    order = sorted(visible)
    return sum(widths[i] for i in order) + sum(
        len(_separator(columns[a], columns[b])) for a, b in zip(order, order[1:]))


Segment = tuple[str, str]  # text, rich style ("" for none)


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
    #: The grid's name: the key of its rows in ``--json`` (the title if empty).
    name: str = ""
    #: Lines under the table saying why XPs failed (see `failure_report`).
    failures: list[str] = field(default_factory=list)

    def _spec(self) -> list[tuple[tuple[str, ...], bool, bool, str, str]]:
        # Per column, what `_cells` needs: looked up once per table, not once per cell.
        return [(c.path, c.path[0] != "Meta", c.path == _ELAPSED, c.missing, c.format)
                for c in self.columns]

    def _cells(self, row: dict[str, tp.Any],
               spec: list[tuple[tuple[str, ...], bool, bool, str, str]] | None = None
               ) -> list[str]:
        failed = "error" in row["Meta"]
        out = []
        for path, is_metric, is_elapsed, missing, fmt in spec or self._spec():
            if failed and is_metric:
                out.append(HOOK_ERROR)
                continue
            if len(path) == 2:
                group = row.get(path[0])
                value = group.get(path[1]) if isinstance(group, dict) else None
            else:
                value = _get(row, path)
            if is_elapsed:
                out.append(duration(value))
            elif value is None:
                out.append(missing)
            else:
                out.append(_fmt(value, fmt))
        return out

    def footer(self, cells: tp.Sequence[tp.Sequence[str]]) -> list[str]:
        """What goes under the table: the meaning of the marks it shows, then the notes."""
        # A scan per mark, not a set of every cell (100,000 rows).
        return [text for mark, text in _LEGEND.items()
                if any(mark in line for line in cells)] + self.notes

    def only_metrics(self, names: tp.Sequence[str]) -> GridTable:
        """The table with only these metric columns (``valid.loss``, or a whole group
        ``valid``), in the order asked; an unknown name is a `ConfigError`."""
        from .errors import ConfigError

        meta = [c for c in self.columns if c.path[0] == "Meta"]
        metrics = [c for c in self.columns if c.path[0] != "Meta"]
        chosen: list[Column] = []
        for name in names:
            hits = [c for c in metrics if name in (c.name, c.key_name)
                    or c.name.startswith(name + ".") or c.key_name.startswith(name + ".")]
            if not hits:
                known = ", ".join(c.name for c in metrics) or "none"
                raise ConfigError(f"--metrics: no metric column {name!r} (columns: {known}).")
            chosen += [c for c in hits if c not in chosen]
        return dataclasses.replace(self, columns=meta + chosen)

    # -- layout --------------------------------------------------------------------------
    def _align_of(self, column: Column) -> str:
        if column.align:
            return column.align
        # Numbers read best right-aligned: metric columns are, unless told otherwise.
        return "<" if column.path[0] == "Meta" else ">"

    def layout(self, cells: list[list[str]], width: int | None, *, short: bool = False
               ) -> Layout:
        """Fit the columns in ``width`` characters (None: no limit).

        The index, state and signature always show, whole; the name gets at least
        `NAME_MIN` characters (it wraps); then progress (``epoch``), the elapsed time,
        the metrics in order (the first that does not fit hides itself and every
        metric after it: whole columns, from the end), the other meta columns (job
        id), and last, more room for the name.
        """
        columns = self.columns
        natural: dict[int, int] = {}
        for i, column in enumerate(columns):
            # Short headers keep 3 letters at least: ``epo``, not ``e``.
            header = column.header[:max(3, len(column.short))] if short and column.short \
                else column.header
            content = max((len(line[i]) for line in cells), default=0)
            w = max(len(header), content)
            if column.wrap is not None and column.path != _NAME:
                w = min(w, max(column.wrap, 1))
            natural[i] = w
        # A group's header fits over its columns (its last column widens if needed).
        spans: dict[tuple[str, ...], list[int]] = {}
        for i, column in enumerate(columns):
            for level in range(len(column.groups)):
                spans.setdefault(column.groups[:level + 1], []).append(i)
        for key, members in sorted(spans.items(), key=lambda item: len(item[0]), reverse=True):
            span = _total(columns, members, natural)
            if span < len(key[-1]):
                natural[members[-1]] += len(key[-1]) - span
        if width is None:
            return Layout(list(range(len(columns))), natural, short, [], None)
        kinds = {i: (c.path[-1] if c.path[0] == "Meta" else "metric") for i, c in
                 enumerate(columns)}
        essential = [i for i, k in kinds.items() if k in ESSENTIAL or columns[i].path == _NAME]
        widths = dict(natural)
        name_at = next((i for i in essential if columns[i].path == _NAME), None)
        if name_at is not None:
            # Parts whole where they are not too long: ``model=transformer_big`` reads
            # better on one line than cut in two.
            longest = max((len(part) for line in cells for part in line[name_at].split(" ")),
                          default=0)
            widths[name_at] = min(natural[name_at], max(NAME_MIN, min(longest, 2 * NAME_MIN)))
        visible = list(essential)
        progress = [i for i, k in kinds.items() if k == "metric"
                    and columns[i].path in [(p,) for p in PROGRESS]]
        timing = [i for i, c in enumerate(columns) if c.path == _ELAPSED]
        metrics = [i for i, k in kinds.items() if k == "metric" and i not in progress]
        others = [i for i in range(len(columns))
                  if i not in visible and i not in progress and i not in timing
                  and i not in metrics]
        hidden: list[int] = []
        for i in progress + timing:
            if _total(columns, visible + [i], widths) <= width:
                visible.append(i)
            else:
                hidden.append(i)
        for n, i in enumerate(metrics):
            if _total(columns, visible + [i], widths) <= width:
                visible.append(i)
            else:
                hidden += metrics[n:]
                break
        for i in others:
            if _total(columns, visible + [i], widths) <= width:
                visible.append(i)
            else:
                hidden.append(i)
        if name_at is not None:
            room = width - _total(columns, visible, widths)
            widths[name_at] = min(natural[name_at], widths[name_at] + max(0, room))
        return Layout(sorted(visible), widths, short, [columns[i] for i in sorted(hidden)],
                      width)

    def fit(self, cells: list[list[str]], width: int | None) -> Layout:
        """The best layout: full headers if the whole table fits, else the one with
        treetable's short headers (``lr``, ``ep``) if it shows more."""
        full = self.layout(cells, width)
        if width is None or (not full.hidden and all(
                full.widths[i] >= len(max((line[i] for line in cells), key=len, default=""))
                for i in full.visible)):
            return full
        short = self.layout(cells, width, short=True)
        key_full = (len(full.hidden), -sum(full.widths[i] for i in full.visible
                                           if self.columns[i].path == _NAME))
        key_short = (len(short.hidden), -sum(short.widths[i] for i in short.visible
                                             if self.columns[i].path == _NAME))
        return short if key_short < key_full else full

    def hidden_note(self, layout: Layout) -> str | None:
        """One line naming the hidden columns and how to see them."""
        if not layout.hidden:
            return None
        metrics = [c.name for c in layout.hidden if c.path[0] != "Meta"]
        names = ", ".join(c.name if c.path[0] != "Meta" else c.header for c in layout.hidden)
        ways = []
        if metrics:
            ways.append(f"--metrics {','.join(metrics)}")
        ways += ["a wider terminal", "--json"]
        return (f"Hidden to fit {layout.width} columns: {names}. See them with "
                + ", ".join(ways[:-1]) + f" or {ways[-1]}.")

    def _lines(self, cells: list[list[str]], layout: Layout) -> list[list[Segment]]:
        # The table as lines of styled segments: group headers, leaf headers, rows.
        return list(self._iter_lines(cells, layout))

    def _iter_lines(self, cells: list[list[str]], layout: Layout, *, plain: bool = False
                    ) -> tp.Iterator[list[Segment]]:
        # `_lines` one at a time. ``plain``: styles are not wanted (text output), so a
        # row on one line is one segment (100,000 rows: a third of the time of `to_text`).
        columns = self.columns
        vis = layout.visible
        widths = layout.widths
        depth = max((len(columns[i].groups) for i in vis), default=0)
        for level in range(depth):
            line: list[Segment] = []
            j = 0
            while j < len(vis):
                column = columns[vis[j]]
                key = column.groups[:level + 1] if len(column.groups) > level else None
                end = j
                while key is not None and end + 1 < len(vis) \
                        and columns[vis[end + 1]].groups[:level + 1] == key:
                    end += 1
                span = sum(widths[vis[m]] for m in range(j, end + 1)) + sum(
                    len(_separator(columns[vis[m]], columns[vis[m + 1]]))
                    for m in range(j, end))
                line.append((key[-1][:span].center(span) if key else " " * span, "bold"))
                if end + 1 < len(vis):
                    line.append((_separator(columns[vis[end]], columns[vis[end + 1]]), ""))
                j = end + 1
            yield line
        header: list[Segment] = []
        for n, i in enumerate(vis):
            column = columns[i]
            text = column.header[:widths[i]]
            if layout.short and len(column.header) > widths[i]:
                text = column.header[:max(widths[i], len(column.short), 3)]
            if n:
                header.append((_separator(columns[vis[n - 1]], column), ""))
            header.append((_align(text, widths[i], self._align_of(column)), "bold"))
        yield header
        dim = len(cells) > 6
        # Per visible column, once (100,000 rows): separator before it, width, alignment,
        # and what kind of cell it holds.
        seps = [""] + [_separator(columns[vis[n - 1]], columns[vis[n]])
                       for n in range(1, len(vis))]
        spec = [(seps[n], widths[i], self._align_of(columns[i]), columns[i].path == _NAME,
                 columns[i].path == _STATE, columns[i].path[0] != "Meta")
                for n, i in enumerate(vis)]
        aligns = [(sep, w, {">": str.rjust, "=": str.center}.get(align, str.ljust))
                  for sep, w, align, *_ in spec]
        fits = [w for _, w, *_ in spec]
        for r, line_cells in enumerate(cells):
            row_style = "dim" if dim and r % 2 else ""
            texts = [line_cells[i] for i in vis]
            if all(map(operator.le, map(len, texts), fits)):
                if plain:
                    yield [("".join([sep + pad(text, w) for text, (sep, w, pad)
                                     in zip(texts, aligns)]), "")]
                    continue
                parts = None  # the common case: every cell fits on one line
                height = 1
            else:
                parts = [(_wrap_words(text, w) if is_name else _chunks(text, w))
                         if len(text) > w else [text]
                         for text, (_, w, _, is_name, _, _) in zip(texts, spec)]
                height = max((len(p) for p in parts), default=1)
            for h in range(height):
                line = []
                for n, (sep, w, align, _, is_state, is_metric) in enumerate(spec):
                    if n:
                        line.append((sep, row_style))
                    if parts is None:
                        text = texts[n]
                    else:
                        text = parts[n][h] if h < len(parts[n]) else ""
                    style = row_style
                    if is_state and text:
                        style = _STYLES.get(text[:3], row_style)
                    elif is_metric and text in (BAD_VALUE, HOOK_ERROR):
                        style = "bold red"
                    line.append((_align(text, w, align), style))
                yield line

    def render(self, width: int | None = None, *, summary: str | None = None,
               max_rows: int | None = None
               ) -> tuple[list[str], list[list[Segment]], list[str]]:
        """Title lines, table lines (styled segments) and footer lines, fitted to
        ``width`` characters (None: no limit); ``summary`` goes beside the title. With
        more than ``max_rows`` rows, only the first and last ``max_rows // 2`` are laid
        out, with a line saying how many are left out (a terminal cannot show 100,000)."""
        rows = self.rows
        hidden = half = 0
        if max_rows is not None and len(rows) > max_rows:
            half = max(1, max_rows // 2)
            hidden = len(rows) - 2 * half
            rows = [*rows[:half], *rows[-half:]]
        spec = self._spec()
        cells = [self._cells(row, spec) for row in rows]
        layout = self.fit(cells, width)
        head = [f"{self.title}: {summary}" if summary else self.title]
        if self.base_name:
            head.append(f"Base name: {self.base_name}")
        foot = self.footer(cells) + self.failures
        note = self.hidden_note(layout)
        if note:
            foot.append(note)
        lines = self._lines(cells, layout)
        if hidden:
            at = len(lines) - len(cells) + half
            lines.insert(at, [(f"... {hidden} more XPs: see them all with --json, or with the "
                               "output piped to a file or less", "dim")])
        return head, lines, foot

    def to_rich(self, width: int | None = None, *, summary: str | None = None,
                max_rows: int | None = None) -> Group:
        """The table for a terminal of ``width`` columns (default: the console's), with
        ``summary`` beside the title: at the top, seen even when a live view is cut."""
        from rich.console import Console, Group
        from rich.text import Text

        if width is None:
            width = Console().width
        head, lines, foot = self.render(width, summary=summary, max_rows=max_rows)
        table = Text(no_wrap=True, overflow="ellipsis")
        for n, line in enumerate(lines):
            if n:
                table.append("\n")
            for k, (text, style) in enumerate(line):
                table.append(text.rstrip() if k == len(line) - 1 else text, style or None)
        parts: list[tp.Any] = [Text(head[0], style="bold")] + [Text(h) for h in head[1:]]
        parts.append(table)
        if foot:
            parts.append(Text("\n".join(foot), style="yellow"))
        return Group(*parts)

    def to_text(self, width: int | None = None) -> str:
        return "\n".join(self.iter_text(width))

    def iter_text(self, width: int | None = None) -> tp.Iterator[str]:
        """The lines of `to_text`, one at a time: the output of a 100,000-XP grid is
        written as it is made, never held whole (with its copies, 40 MB)."""
        # `render` without its styles and row limit, each line made as it is written.
        spec = self._spec()
        cells = [self._cells(row, spec) for row in self.rows]
        layout = self.fit(cells, width)
        yield self.title
        if self.base_name:
            yield f"Base name: {self.base_name}"
        for line in self._iter_lines(cells, layout, plain=True):
            yield "".join(text for text, _ in line).rstrip()
        yield from self.footer(cells) + self.failures
        note = self.hidden_note(layout)
        if note:
            yield note

    def to_json(self) -> list[dict[str, tp.Any]]:
        return list(self.iter_json())

    def iter_json(self) -> tp.Iterator[dict[str, tp.Any]]:
        """The rows of `to_json`, one at a time (`write_json` streams them)."""
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
            yield entry


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
                cache: MergeCache | None = None, now: float | None = None) -> GridTable:
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
    now = time.time() if now is None else now
    for index, (sheep, name, history) in enumerate(zip(sheeps, names, hists)):
        meta: dict[str, tp.Any] = {
            "index": index, "name": name, "state": state_text(sheep), "sig": sheep.xp.sig,
            "sid": sheep.current_job_id or "", "elapsed": elapsed(sheep, now),
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
    columns = flatten(list(explorer.get_grid_meta()), ("Meta",))
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


def json_safe(value: tp.Any) -> tp.Any:
    """``value`` with each NaN or infinity replaced by the string "NaN", "Infinity" or
    "-Infinity": strict JSON has no such numbers (the table's ``--json``, the web view)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps(tables: tp.Sequence[GridTable], *, one_line: bool = False) -> str:
    """The JSON of `adora grid --json`: ``{"NAME": [row, ...], ...}`` keyed by grid name,
    one row a line (``one_line``: the whole document on one line, for JSON Lines)."""
    parts: list[str] = []
    write_json(tables, parts.append, one_line=one_line)
    return "".join(parts)


def write_json(tables: tp.Sequence[GridTable], write: tp.Callable[[str], tp.Any], *,
               batch: int = 1000, one_line: bool = False) -> None:
    """Write `dumps(tables)` a few rows at a time: a 100,000-XP grid never holds its
    whole JSON in memory. One row a line, by the C encoder: ``indent`` would take the
    pure-Python encoder, several times slower, and its closures are reference cycles
    (garbage that only the cyclic collector frees, which ``adora grid`` turns off).
    Strict JSON: a NaN or an infinity becomes a string (see `json_safe`)."""
    by_name = {t.name or t.title: t for t in tables}  # as a dict: the last one wins
    if not by_name:
        write("{}")
        return
    encode = json.JSONEncoder(default=str, allow_nan=False).encode
    grid_sep, row_sep = ("", "") if one_line else ("\n  ", "\n    ")

    def encode_row(row: dict[str, tp.Any]) -> str:
        try:
            return encode(row)
        except ValueError:  # a NaN or an infinity: rare, so only then walk the row
            return encode(json_safe(row))

    write("{")
    for number, (name, table) in enumerate(by_name.items()):
        write(("," if number else "") + grid_sep + encode(name) + ": [")
        parts: list[str] = []
        count = 0
        for row in table.iter_json():
            parts.append(("," if count else "") + row_sep + encode_row(row))
            count += 1
            if len(parts) >= batch:
                write("".join(parts))
                parts = []
        write("".join(parts) + (grid_sep + "]" if count else "]"))
    write("}" if one_line else "\n}")
