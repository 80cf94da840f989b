"""What the web page shows, as JSON-ready data, and what changed between two refreshes.

Pure: it takes the tables and histories of one refresh of the watch pipeline and
returns the delta to send (changed table rows, changed XP states, which histories
grew). Nothing here reads a file or asks a backend.
"""

from __future__ import annotations

import json
import math
import typing as tp
from dataclasses import dataclass

if tp.TYPE_CHECKING:
    from ..explore import Sheep
    from ..monitor import GridTable

__all__ = ["GridFrame", "PageModel", "curve_update", "dumps", "xp_state"]

History = tp.Sequence[tp.Any]


def _finite(value: tp.Any) -> tp.Any:
    # JSON has no NaN or infinity: the page gets them as strings it can show.
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(data: tp.Any) -> str:
    """Strict, compact JSON (what the browser's ``JSON.parse`` accepts)."""
    try:
        return json.dumps(data, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:  # a NaN somewhere: rare, so only then walk it all
        return json.dumps(_finite(data), separators=(",", ":"), default=str)


def xp_state(sheep: Sheep, length: int) -> dict[str, tp.Any]:
    """The part of an XP that changes while it runs: state, reason, job, history length."""
    state = sheep.job_state
    status = sheep.status
    job = sheep.job
    exit_code = status.exit_code if status is not None else None
    if exit_code is None and job is not None:
        exit_code = job.exit_code
    short = "N/A" if state is None else state.short
    if sheep.stale:
        short += "?"
    return {
        "state": None if state is None else state.value, "short": short,
        "stale": sheep.stale, "reason": status.reason if status is not None else "",
        "exit_code": exit_code, "job_id": sheep.current_job_id, "n": length,
    }


def _params(sheep: Sheep) -> list[list[tp.Any]]:
    delta = sheep.xp.delta or []
    out = []
    for item in delta:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            out.append([str(item[0]), item[1]])
    return out


_MISSING = object()


def _lookup(cfg: tp.Any, key: str) -> tp.Any:
    # The value of a hyper-parameter in an XP's config (argparse namespace, dict, or
    # hydra/OmegaConf config; dotted keys go down), _MISSING when it has none.
    value = cfg
    for part in key.split("."):
        try:
            value = value[part] if isinstance(value, dict) or hasattr(value, "keys") \
                else getattr(value, part)
        except Exception:
            return _MISSING
    return value


def _config(sheep: Sheep, keys: tp.Iterable[str]) -> dict[str, tp.Any]:
    """The values of ``keys`` for this XP, defaults included: an XP that leaves ``lr``
    at its default is grouped with the ones that set it to the same value."""
    out = dict(_params(sheep))
    for key in keys:
        if key not in out:
            value = _lookup(sheep.xp.cfg, key)
            if value is not _MISSING:
                out[key] = value if isinstance(value, (str, int, float, bool)) or value is None \
                    else str(value)
    return out


@dataclass
class GridFrame:
    """One grid at one refresh: its table (rows from the Explorer's hooks) and its XPs."""

    name: str
    table: GridTable


class PageModel:
    """The state of the page, kept across refreshes, and the deltas between them.

    >>> model = PageModel()
    >>> delta = model.update(frames, histories, now=time.time())   # doctest: +SKIP
    >>> model.snapshot()                                            # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.version = 0
        self.grids: list[dict[str, tp.Any]] = []
        #: sig -> the rows of that XP in each grid that has it (grid name -> row).
        self.rows: dict[str, dict[str, dict[str, tp.Any]]] = {}
        self.xps: dict[str, dict[str, tp.Any]] = {}
        self.static: dict[str, dict[str, tp.Any]] = {}
        self.sheeps: dict[str, Sheep] = {}
        #: sig -> [[time, state], ...]: each state seen, when it was first seen.
        self.state_history: dict[str, list[list[tp.Any]]] = {}
        self.histories: tp.Mapping[str, History] = {}

    def _grid_layout(self, frame: GridFrame) -> dict[str, tp.Any]:
        columns = [{"header": c.header, "format": c.format, "align": c.align}
                   for c in frame.table.columns if c.path[0] != "Meta"]
        return {"name": frame.name, "base_name": frame.table.base_name, "columns": columns,
                "sigs": [s.xp.sig for s in frame.table.sheeps]}

    @staticmethod
    def _row(table: GridTable, row: dict[str, tp.Any]) -> dict[str, tp.Any]:
        meta = row["Meta"]
        cells = []
        for column in table.columns:
            if column.path[0] == "Meta":
                continue
            value: tp.Any = row
            for part in column.path:
                value = value.get(part) if isinstance(value, dict) else None
            cells.append(value)
        out = {"index": meta["index"], "name": meta["name"], "cells": cells}
        if "error" in meta:
            out["error"] = meta["error"]
        return out

    def update(self, frames: tp.Sequence[GridFrame], histories: tp.Mapping[str, History],
               *, now: float) -> dict[str, tp.Any] | None:
        """Take one refresh; return what changed (None if nothing did).

        The delta has ``v`` (the new version), ``xps`` (sig -> new state part),
        ``rows`` (grid -> sig -> new row) and, when the grids themselves changed
        (first refresh), ``grids``. Costs one comparison per XP and cell: no history
        is walked (histories grow in place; only their lengths are read).
        """
        self.histories = histories
        layout = [self._grid_layout(f) for f in frames]
        delta: dict[str, tp.Any] = {}
        if layout != self.grids:
            self.grids = layout
            delta["grids"] = layout
        changed_xps: dict[str, dict[str, tp.Any]] = {}
        changed_rows: dict[str, dict[str, dict[str, tp.Any]]] = {}
        seen: set[str] = set()
        keys: list[str] = []
        if any(s.xp.sig not in self.static for f in frames for s in f.table.sheeps):
            # The hyper-parameters any XP shown sets: every XP gets its value of each.
            keys = list(dict.fromkeys(k for f in frames for s in f.table.sheeps
                                      for k, _ in _params(s)))
        for frame in frames:
            table = frame.table
            grid_rows: dict[str, dict[str, tp.Any]] = {}
            for sheep, row in zip(table.sheeps, table.rows):
                sig = sheep.xp.sig
                if sig not in self.static:
                    self.sheeps[sig] = sheep
                    self.static[sig] = {"params": _params(sheep), "config": _config(sheep, keys),
                                        "argv": sheep.xp.argv, "folder": str(sheep.xp.folder)}
                    changed_xps.setdefault(sig, {})["static"] = self.static[sig]
                if sig not in seen:  # an XP in two grids has one state
                    seen.add(sig)
                    state = xp_state(sheep, len(histories.get(sig, ())))
                    if state != self.xps.get(sig):
                        self._saw(sig, sheep, state, now)
                        self.xps[sig] = state
                        changed_xps.setdefault(sig, {}).update(state)
                new = self._row(table, row)
                rows = self.rows.setdefault(sig, {})
                if rows.get(frame.name) != new:
                    rows[frame.name] = new
                    grid_rows[sig] = new
            if grid_rows:
                changed_rows[frame.name] = grid_rows
        if changed_xps:
            delta["xps"] = changed_xps
        if changed_rows:
            delta["rows"] = changed_rows
        if not delta:
            return None
        self.version += 1
        delta["v"] = self.version
        return delta

    def _saw(self, sig: str, sheep: Sheep, state: dict[str, tp.Any], now: float) -> None:
        seen = self.state_history.get(sig)
        if seen is None:
            seen = self.state_history[sig] = []
            if sheep.job is not None:
                seen.append([sheep.job.submitted_at, "SUBMITTED"])
        label = state["state"] or "no job"
        if not seen or seen[-1][1] != label:
            seen.append([now, label])

    def snapshot(self) -> dict[str, tp.Any]:
        """Everything the page needs to draw itself (the first message to each page)."""
        xps = {sig: {**state, "static": self.static[sig]} for sig, state in self.xps.items()}
        rows = {grid["name"]: {sig: self.rows[sig][grid["name"]] for sig in grid["sigs"]
                               if grid["name"] in self.rows.get(sig, {})}
                for grid in self.grids}
        return {"v": self.version, "grids": self.grids, "xps": xps, "rows": rows}

    def details(self, sig: str) -> dict[str, tp.Any] | None:
        """One XP for its page: what the table has, its job record and state history."""
        if sig not in self.xps:
            return None
        sheep = self.sheeps[sig]
        return {"sig": sig, **self.xps[sig], "static": self.static[sig],
                "grids": [g["name"] for g in self.grids if g["name"] in self.rows.get(sig, {})],
                "names": {g: r["name"] for g, r in self.rows.get(sig, {}).items()},
                "job": None if sheep.job is None else sheep.job.to_json(),
                "state_history": self.state_history.get(sig, [])}


def curve_update(history: History, sent: int) -> tuple[int, list[tp.Any]] | None:
    """The lines of ``history`` a page that has ``sent`` of them lacks, and where they go.

    ``(sent, new lines)`` when the history grew; ``(0, all of it)`` when it was
    rewritten shorter; None when nothing is new. O(new lines).
    """
    n = len(history)
    if n == sent:
        return None
    if n > sent:
        return sent, list(history[sent:])
    return 0, list(history)
