"""Watching grids: keep states (one poller per backend) and metrics (incremental tails) fresh."""

from __future__ import annotations

import gc
import math
import typing as tp

import anyio
import anyio.to_thread

from ..errors import ConfigError
from ..explore import Sheep
from ..main import DecoratedMain
from .clock import Clock, SystemClock
from .poll import Poller
from .run import GridResult
from .tail import MetricsTailer

__all__ = ["MIN_INTERVAL", "GridWatch", "check_interval"]

#: Shortest refresh period, in seconds: a shorter ``interval`` (``-i 0``) is raised to it,
#: so that watching never keeps a core busy.
MIN_INTERVAL = 1.0


def check_interval(interval: float | None, what: str = "interval") -> float | None:
    """``interval`` (seconds) raised to `MIN_INTERVAL`; a negative or non-finite one is a
    `ConfigError`."""
    if interval is None:
        return None
    if not 0 <= interval < math.inf:
        raise ConfigError(f"The {what} must be 0 or more (0: refresh as often as adora "
                          f"allows, every {MIN_INTERVAL:g} s), not {interval:g}.")
    return max(interval, MIN_INTERVAL)


def _history_key(sheep: Sheep) -> str:
    # ``str(sheep.xp.history)`` without building a Path per XP on every refresh.
    xp = sheep.xp
    name = xp.dora.history
    if "/" in name or name in ("", ".", ".."):
        return str(xp.history)
    return f"{xp.folder}/{name}"


class GridWatch:
    """States and metrics of the XPs of one or more grid runs on one backend."""

    def __init__(self, main: DecoratedMain, results: tp.Sequence[GridResult], *,
                 poller: Poller | None = None, tailer: MetricsTailer | None = None,
                 clock: Clock | None = None, just_submitted: bool = False) -> None:
        if not results:
            raise ValueError("GridWatch needs at least one grid result.")
        self.main = main
        self.results = list(results)
        backend = results[0].backend
        self.clock = clock or SystemClock()
        self.poller = poller or Poller(backend, clock=self.clock)
        self.tailer = tailer or MetricsTailer.for_backend(backend)
        self.histories: dict[str, list[dict[str, tp.Any]]] = {}
        # ``just_submitted``: the results come from runs that ended a moment ago, so the
        # XPs they submitted into new folders have no metrics to look for yet (the next
        # refreshes read them as the others). Not for results kept around for later.
        self._fresh: set[str] = set().union(*(r.fresh for r in self.results)) \
            if just_submitted else set()
        # Likewise the XPs whose local folder had no history when the runs began
        # (`prescan`): where metrics are local files, the first refresh skips them.
        self._no_history: set[str] = set().union(*(r.no_history for r in self.results)) \
            if just_submitted else set()
        #: Kept across refreshes by the table (incremental default metrics).
        self.merge_cache: dict[str, tp.Any] = {}
        for sheep in self.sheeps:
            if sheep.status is not None and sheep.job is not None and sheep.job.job_id:
                self.poller.statuses.setdefault(sheep.job.job_id, sheep.status)
        self.poller.track(s.job for s in self.sheeps)
        self._custom_history = (type(main).get_xp_history
                                is not DecoratedMain.get_xp_history)

    @property
    def sheeps(self) -> list[Sheep]:
        """Every XP once (an XP in two grids: its first handle)."""
        # Made again only when the results change: a one-shot run of 100,000 XPs asked
        # for it five times (0.1 s each).
        key = [(id(r), id(r.sheeps), len(r.sheeps)) for r in self.results]
        cached = self.__dict__.get("_sheeps")
        if cached is not None and cached[0] == key:
            return list(cached[1])
        seen: dict[str, Sheep] = {}
        for result in self.results:
            for sheep in result.sheeps:
                seen.setdefault(sheep.xp.sig, sheep)
        sheeps = list(seen.values())
        self.__dict__["_sheeps"] = (key, sheeps)
        return list(sheeps)

    def all_done(self) -> bool:
        return all(s.is_done() and not s.stale for s in self.sheeps)

    async def refresh_states(self) -> None:
        await self.poller.poll()
        # Every handle, not one per XP: an XP in two grids has a handle in each.
        for sheep in (s for result in self.results for s in result.sheeps):
            status = self.poller.status(sheep.job)
            if status is not None:
                sheep.status = status

    async def refresh_metrics(self) -> None:
        sheeps = self.sheeps
        if self._custom_history:
            # The training package reads metrics its own way: honour it.
            def _read() -> dict[str, list[dict[str, tp.Any]]]:
                return {s.xp.sig: self.main.get_xp_history(s.xp) for s in sheeps}
            self.histories = await anyio.to_thread.run_sync(_read)
            return
        fresh, self._fresh = self._fresh, set()
        # Only XPs whose folder exists can have metrics: one listing of the XP folders,
        # not a stat per XP (None: the backend cannot tell, ask for every file).
        present = await self.poller.backend.list_folder(str(self.main.dora.xps_dir()))
        if present is not None and self._no_history:
            fresh |= self._no_history
        self._no_history = set()
        keys = {s.xp.sig: _history_key(s) for s in sheeps
                if s.xp.sig not in fresh and (present is None or s.xp.sig in present)}
        await self.tailer.refresh(keys.values())
        history = self.tailer.history
        self.histories = {sig: history(key) for sig, key in keys.items()}
        if self.tailer.bytes_read > 1 << 20 or len(sheeps) > 10_000:
            # Parsed histories and XPs live as long as the watch: keep the collector
            # from scanning them again and again (full collections took ~1 s).
            gc.freeze()

    async def refresh(self) -> None:
        """One refresh: states (one batched query) and metrics (new bytes only), concurrently."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.refresh_states)
            tg.start_soon(self.refresh_metrics)

    def history(self, sheep: Sheep) -> list[dict[str, tp.Any]]:
        return self.histories.get(sheep.xp.sig, [])

    async def run(self, on_update: tp.Callable[[GridWatch], None], *,
                  interval: float | None = None, until_done: bool = True) -> None:
        """Refresh, call ``on_update``, sleep; until every XP is done (or forever).

        ``interval`` is in seconds, at least `MIN_INTERVAL` (default: adaptive).
        """
        interval = check_interval(interval)
        while True:
            await self.refresh()
            on_update(self)
            if until_done and self.all_done():
                return
            delay = interval if interval is not None else self.poller.next_delay()
            self.poller.backend.set_poll_period(delay)
            await self.clock.sleep(delay)
