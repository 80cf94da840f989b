"""What the web page shows, as JSON-ready data, and what changed between two refreshes.

Pure: it takes one `Frame` (a snapshot of the watch API: the XPs that changed and
their table rows) and returns the delta to send. Nothing here reads a file or asks
a backend.
"""

from __future__ import annotations

import json
import typing as tp

from ..monitor import json_safe
from ..states import JobState

if tp.TYPE_CHECKING:
    from ..engine.snapshots import XPSnapshot
    from ._source import Frame

__all__ = ["PageModel", "curve_update", "dumps", "xp_state"]

History = tp.Sequence[tp.Any]


def dumps(data: tp.Any) -> str:
    """Strict, compact JSON (what the browser's ``JSON.parse`` accepts)."""
    try:
        return json.dumps(data, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:  # a NaN somewhere: rare, so only then walk it all
        return json.dumps(json_safe(data), separators=(",", ":"), default=str)


def xp_state(xp: XPSnapshot) -> dict[str, tp.Any]:
    """The part of an XP that changes while it runs: state, reason, job, history length."""
    short = "N/A" if xp.state is None else JobState(xp.state).short
    if xp.stale:
        short += "?"
    return {"state": xp.state, "short": short, "stale": xp.stale, "reason": xp.reason,
            "exit_code": xp.exit_code, "job_id": xp.job_id, "n": len(xp.history)}


class PageModel:
    """The state of the page, kept across refreshes, and the deltas between them.

    Fed one `Frame` per snapshot of the watch API; each update costs one comparison
    per XP that changed (never per XP shown), and no history is walked.
    """

    def __init__(self) -> None:
        self.version = 0
        self.grids: list[dict[str, tp.Any]] = []
        #: sig -> the rows of that XP in each grid that has it (grid name -> row).
        self.rows: dict[str, dict[str, dict[str, tp.Any]]] = {}
        self.xps: dict[str, dict[str, tp.Any]] = {}
        self.static: dict[str, dict[str, tp.Any]] = {}
        self.snapshots: tp.Mapping[str, XPSnapshot] = {}
        #: sig -> [[time, state], ...]: each state seen, when it was first seen.
        self.state_history: dict[str, list[list[tp.Any]]] = {}

    def update(self, frame: Frame) -> dict[str, tp.Any] | None:
        """Take one refresh; return what changed (None if nothing did).

        The delta has ``v`` (the new version), ``xps`` (sig -> new state part, with
        ``static`` the first time), ``rows`` (grid -> sig -> new row) and, when the
        grids' layout came with the frame, ``grids``.
        """
        self.snapshots = frame.xps
        delta: dict[str, tp.Any] = {}
        if frame.grids is not None and frame.grids != self.grids:
            self.grids = frame.grids
            delta["grids"] = frame.grids
        changed_xps: dict[str, dict[str, tp.Any]] = {}
        if frame.static:
            for sig, info in frame.static.items():
                if self.static.get(sig) != info:
                    self.static[sig] = info
                    changed_xps[sig] = {"static": info}
        for xp in frame.changed:
            state = xp_state(xp)
            if state != self.xps.get(xp.sig):
                self._saw(xp, state, frame.now)
                self.xps[xp.sig] = state
                changed_xps.setdefault(xp.sig, {}).update(state)
        changed_rows: dict[str, dict[str, dict[str, tp.Any]]] = {}
        for grid, rows in frame.rows.items():
            for sig, row in rows.items():
                mine = self.rows.setdefault(sig, {})
                if mine.get(grid) != row:
                    mine[grid] = row
                    changed_rows.setdefault(grid, {})[sig] = row
        if changed_xps:
            delta["xps"] = changed_xps
        if changed_rows:
            delta["rows"] = changed_rows
        if not delta:
            return None
        self.version += 1
        delta["v"] = self.version
        return delta

    def _saw(self, xp: XPSnapshot, state: dict[str, tp.Any], now: float) -> None:
        seen = self.state_history.get(xp.sig)
        if seen is None:
            seen = self.state_history[xp.sig] = []
            job = self._job(xp.sig)
            if job is not None and job.get("submitted_at"):
                seen.append([job["submitted_at"], "SUBMITTED"])
        label = state["state"] or "no job"
        if not seen or seen[-1][1] != label:
            seen.append([now, label])

    #: sig -> the XP's job record as JSON (set by the server; None: no job).
    job_of: tp.Callable[[str], dict[str, tp.Any] | None] | None = None

    def _job(self, sig: str) -> dict[str, tp.Any] | None:
        return None if self.job_of is None else self.job_of(sig)

    def history(self, sig: str) -> tp.Sequence[tp.Any]:
        xp = self.snapshots.get(sig)
        return () if xp is None else xp.history

    def snapshot(self) -> dict[str, tp.Any]:
        """Everything the page needs to draw itself (the first message to each page)."""
        xps = {sig: {**state, "static": self.static.get(sig)} for sig, state in self.xps.items()}
        rows = {grid["name"]: {sig: self.rows[sig][grid["name"]] for sig in grid["sigs"]
                               if grid["name"] in self.rows.get(sig, {})}
                for grid in self.grids}
        return {"v": self.version, "grids": self.grids, "xps": xps, "rows": rows}

    def details(self, sig: str) -> dict[str, tp.Any] | None:
        """One XP for its page: what the table has, its job record and state history."""
        if sig not in self.xps:
            return None
        return {"sig": sig, **self.xps[sig], "static": self.static.get(sig),
                "grids": [g["name"] for g in self.grids if g["name"] in self.rows.get(sig, {})],
                "names": {g: r["name"] for g, r in self.rows.get(sig, {}).items()},
                "job": self._job(sig), "state_history": self.state_history.get(sig, [])}


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
