"""Where the page's data comes from: the public watch API (`adora.watch_results`).

The web view never polls a backend or reads a metric file itself: it is one
consumer of a `GridWatcher` (one poller, one incremental metrics tailer for every
grid shown). Each snapshot becomes one `Frame`: the XPs that changed, their table
rows (from the grid's Explorer hooks, as the terminal table computes them), and
the histories the pages draw from.
"""

from __future__ import annotations

import time
import typing as tp
from dataclasses import dataclass, field

from ..api import watch_results
from ..monitor import build_table

if tp.TYPE_CHECKING:
    from ..engine.run import GridResult
    from ..engine.snapshots import Snapshot, XPSnapshot
    from ..engine.watch import GridWatch
    from ..explore import Sheep
    from ..main import DecoratedMain

__all__ = ["Frame", "frames", "grid_layouts", "static_info"]


@dataclass
class Frame:
    """One refresh, for the page model.

    ``changed``: the XPs whose state, job or metrics moved. ``rows``: their new
    table rows, grid -> sig -> row. ``xps``: every XP's snapshot (histories for the
    curves). ``grids``/``static``: the layout of each grid and what never changes of
    each XP (given with the first frame only).
    """

    changed: tp.Sequence[XPSnapshot]
    rows: dict[str, dict[str, dict[str, tp.Any]]]
    xps: tp.Mapping[str, XPSnapshot]
    now: float = field(default_factory=time.time)
    grids: list[dict[str, tp.Any]] | None = None
    static: dict[str, dict[str, tp.Any]] | None = None
    #: Bytes of metric histories this refresh read (only what was added: benchmarks).
    read_bytes: int = 0


def _params(sheep: Sheep) -> list[list[tp.Any]]:
    return [[str(item[0]), item[1]] for item in (sheep.xp.delta or [])
            if isinstance(item, (list, tuple)) and len(item) == 2]


_MISSING = object()


def _lookup(cfg: tp.Any, key: str) -> tp.Any:
    # The value of a hyper-parameter in an XP's config (argparse namespace, dict,
    # hydra/OmegaConf config; dotted keys go down), _MISSING when it has none.
    value = cfg
    for part in key.split("."):
        try:
            value = value[part] if isinstance(value, dict) or hasattr(value, "keys") \
                else getattr(value, part)
        except Exception:
            return _MISSING
    return value


def static_info(results: tp.Sequence[GridResult]) -> dict[str, dict[str, tp.Any]]:
    """What never changes of each XP: the hyper-parameters its name shows (``params``),
    its value of every hyper-parameter some XP shown sets, defaults included
    (``config``: an XP left at the default ``lr`` groups with those setting it to the
    same value), its argv and folder."""
    sheeps = {s.xp.sig: s for r in results for s in r.sheeps}
    params = {sig: _params(s) for sig, s in sheeps.items()}
    keys = list(dict.fromkeys(k for p in params.values() for k, _ in p))
    out = {}
    for sig, sheep in sheeps.items():
        config = dict(params[sig])
        for key in keys:
            if key not in config:
                value = _lookup(sheep.xp.cfg, key)
                if value is not _MISSING:
                    config[key] = value if value is None or \
                        isinstance(value, (str, int, float, bool)) else str(value)
        out[sig] = {"params": params[sig], "config": config, "argv": list(sheep.xp.argv),
                    "folder": str(sheep.xp.folder)}
    return out


def grid_layouts(results: tp.Sequence[GridResult]) -> list[dict[str, tp.Any]]:
    """Each grid's name, base name, metric columns (from its Explorer) and XPs in order."""
    layouts = []
    for result in results:
        table = build_table("", result.explorer, [], [], result.base_name, {})
        columns = [{"header": ".".join(c.path), "format": c.format, "align": c.align}
                   for c in table.columns if c.path[0] != "Meta"]
        layouts.append({"name": result.name, "base_name": result.base_name,
                        "columns": columns, "sigs": [s.xp.sig for s in result.sheeps]})
    return layouts


def _row(columns: tp.Sequence[tp.Any], row: dict[str, tp.Any], index: int, name: str
         ) -> dict[str, tp.Any]:
    cells = []
    for column in columns:
        if column.path[0] == "Meta":
            continue
        value: tp.Any = row
        for part in column.path:
            value = value.get(part) if isinstance(value, dict) else None
        cells.append(value)
    out = {"index": index, "name": name, "cells": cells}
    if "error" in row["Meta"]:
        out["error"] = row["Meta"]["error"]
    return out


class _Rows:
    # Table rows of the XPs that changed, grid by grid: the Explorer's hooks run for
    # those only, and the default metrics merge only their new lines (the table's cache).
    def __init__(self, results: tp.Sequence[GridResult], watch: GridWatch) -> None:
        self.results = results
        self.watch = watch
        self.where: dict[str, list[tuple[int, int]]] = {}  # sig -> [(grid #, position)]
        for g, result in enumerate(results):
            for i, sheep in enumerate(result.sheeps):
                self.where.setdefault(sheep.xp.sig, []).append((g, i))

    def __call__(self, sigs: tp.Iterable[str]) -> dict[str, dict[str, dict[str, tp.Any]]]:
        picked: dict[int, list[int]] = {}
        for sig in sigs:
            for g, i in self.where.get(sig, ()):
                picked.setdefault(g, []).append(i)
        out: dict[str, dict[str, dict[str, tp.Any]]] = {}
        histories = self.watch.histories
        for g, positions in picked.items():
            result = self.results[g]
            sheeps = [result.sheeps[i] for i in positions]
            names = [result.names[i] for i in positions]
            table = build_table("", result.explorer, sheeps, names, result.base_name,
                                histories, cache=self.watch.merge_cache)
            out[result.name] = {
                sheep.xp.sig: _row(table.columns, row, i, name)
                for sheep, row, i, name in zip(sheeps, table.rows, positions, names)}
        return out


async def frames(main: DecoratedMain, results: tp.Sequence[GridResult], *,
                 interval: float | None = None,
                 wanted: tp.Callable[[], tp.Awaitable[None]] | None = None
                 ) -> tp.AsyncIterator[Frame]:
    """A `Frame` per snapshot of one watcher over ``results``, forever.

    ``interval``: seconds between refreshes (default: 2 s for local grids, where a
    refresh reads the queue's database and the files' stamps, 10 s elsewhere; new
    metric lines show up that often). ``wanted``: awaited before each refresh but
    the first (the server waits there while no page is open: nothing polls then).
    """
    if interval is None:
        interval = 2.0 if results[0].backend.name == "local" else 10.0
    watcher = watch_results(main, results, interval=interval)
    rows: _Rows | None = None
    first = True
    snap: Snapshot
    async for snap in watcher.subscribe(until_done=False):
        if rows is None:
            rows = _Rows(results, watcher.watch)
        changed = snap.changed
        frame = Frame(changed, rows(x.sig for x in changed), snap.xps, now=snap.time,
                      read_bytes=watcher.watch.tailer.bytes_read)
        if first:
            frame.grids = grid_layouts(results)
            frame.static = static_info(results)
            first = False
        yield frame
        if wanted is not None:
            await wanted()
