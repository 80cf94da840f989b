"""Snapshots of watched grids, shared by every view: the table, plots, the web page, notebooks.

A `GridWatcher` owns one `GridWatch` (hence one poller and one metrics tailer)
however many consumers read it. Each consumer subscribes and gets `Snapshot`s
that tell what changed since *its own* previous snapshot: the XPs whose state
or metrics moved, and for each the history entries it has not seen yet.

Refreshes are pulled, not pushed: a refresh happens when some consumer asks
for a snapshot newer than the last one, at most once per refresh period, and
consumers waiting at the same time share it. With no consumer, nothing polls.
"""

from __future__ import annotations

import collections
import time
import typing as tp
from dataclasses import dataclass, field, replace

import anyio

from .clock import Clock
from .watch import GridWatch, check_interval

if tp.TYPE_CHECKING:
    from ..explore import Sheep

__all__ = ["GridWatcher", "HistoryView", "Snapshot", "Subscription", "XPSnapshot"]

Entry = dict[str, tp.Any]

#: Generations whose changed XPs are remembered; a consumer further behind is sent
#: every XP (as on its first snapshot).
_KEPT_GENERATIONS = 64


class HistoryView(tp.Sequence[Entry]):
    """Entries ``start:stop`` of a metrics history, without copying it.

    Histories only grow (a rewritten one is a new list), so a view stays what it
    was when the snapshot was taken. ``list(view)`` copies it.
    """

    __slots__ = ("_entries", "_start", "_stop")

    def __init__(self, entries: list[Entry], start: int = 0, stop: int | None = None) -> None:
        self._entries = entries
        self._start = start
        self._stop = len(entries) if stop is None else stop

    def __len__(self) -> int:
        return self._stop - self._start

    @tp.overload
    def __getitem__(self, index: int) -> Entry: ...

    @tp.overload
    def __getitem__(self, index: slice) -> list[Entry]: ...

    def __getitem__(self, index: int | slice) -> Entry | list[Entry]:
        if isinstance(index, slice):
            return [self._entries[i] for i in range(self._start, self._stop)[index]]
        return self._entries[range(self._start, self._stop)[index]]

    def __iter__(self) -> tp.Iterator[Entry]:
        entries = self._entries
        for i in range(self._start, self._stop):
            yield entries[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (HistoryView, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"HistoryView({list(self)!r})"


_EMPTY: HistoryView = HistoryView([], 0, 0)


@dataclass(frozen=True)
class XPSnapshot:
    """One XP as a consumer last saw it.

    ``state`` is the job state (``"RUNNING"``, ``"COMPLETED"``...), None for an XP
    with no job; ``reason`` says why when the backend gives one (a failure, a
    pending reason, a lost connection); ``stale``: the state could not be
    refreshed and is the last known one. ``history`` holds every metric entry
    read so far; ``new_history`` those this consumer had not been sent yet
    (all of ``history`` when it was rewritten: ``history_reset``).
    """

    sig: str
    name: str
    grid: str
    index: int
    argv: tuple[str, ...]
    delta: tuple[tuple[str, tp.Any], ...]
    state: str | None
    reason: str
    exit_code: int | None
    stale: bool
    job_id: str | None
    log: str | None
    history: HistoryView = field(default_factory=lambda: _EMPTY)
    new_history: HistoryView = field(default_factory=lambda: _EMPTY)
    history_reset: bool = False

    @property
    def done(self) -> bool:
        """True once the XP's job ended (or when it has no job)."""
        return self.state is None or self.state in _FINAL

    @property
    def last_metrics(self) -> Entry | None:
        return self.history[-1] if len(self.history) else None


def _final_states() -> frozenset[str]:
    from ..states import JobState

    return frozenset(s.value for s in JobState if s.is_final)


_FINAL = _final_states()


@dataclass(frozen=True)
class Snapshot:
    """Every selected XP at one refresh, and which ones changed for this consumer.

    ``xps``: every XP by signature, in table order (grid by grid). ``changed``:
    the XPs whose state, job or metrics changed since this consumer's previous
    snapshot (every XP in its first). ``done``: every XP has ended and its last
    metrics were read. ``grids``: grid name -> signatures in table order;
    ``base_names``: grid name -> what every XP of the grid shares.
    """

    generation: int
    time: float
    xps: tp.Mapping[str, XPSnapshot]
    changed: tuple[XPSnapshot, ...]
    done: bool
    grids: tp.Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    base_names: tp.Mapping[str, str] = field(default_factory=dict)
    #: Why the last poll failed (states are then stale), None if it worked.
    poll_error: str | None = None
    #: Metric reads that failed so far (their XPs keep their last history).
    read_errors: int = 0


@dataclass
class _XPInfo:
    # What does not change while watching, computed once per XP.
    sheep: Sheep
    name: str
    grid: str
    index: int
    argv: tuple[str, ...]
    delta: tuple[tuple[str, tp.Any], ...]


class GridWatcher:
    """Shared, pulled refreshes of one `GridWatch`, read by any number of consumers.

    Consumers iterate (``async for snapshot in watcher``: one `Subscription` each)
    or ``await watcher.wait()`` for the final snapshot. Use it as an async context
    manager to close the backend's connections (SSH) at the end::

        async with adora.watch_grid(main, "sweep", backend="local") as watcher:
            async for snapshot in watcher:
                for xp in snapshot.changed:
                    print(xp.name, xp.state, len(xp.new_history))

    ``interval`` is the refresh period in seconds (at least `MIN_INTERVAL`;
    default: the poller's adaptive schedule).
    """

    def __init__(self, watch: GridWatch | tp.Callable[[], tp.Awaitable[GridWatch]], *,
                 interval: float | None = None, clock: Clock | None = None,
                 owns_backend: bool = False) -> None:
        self._watch: GridWatch | None = None
        self._make: tp.Callable[[], tp.Awaitable[GridWatch]] | None = None
        if isinstance(watch, GridWatch):
            self._watch = watch
        else:
            self._make = watch
        self.interval = check_interval(interval)
        self._clock = clock
        self.owns_backend = owns_backend
        self.generation = 0
        self._lock = anyio.Lock()
        self._next_at = 0.0
        self._done = False
        self._final_read = False
        self._info: dict[str, _XPInfo] = {}
        self._order: dict[str, int] = {}
        self._grids: dict[str, tuple[str, ...]] = {}
        self._base_names: dict[str, str] = {}
        # The watcher's view of each XP: its state key, and its history as an append-only
        # list with an epoch bumped whenever the history was rewritten.
        self._states: dict[str, tuple[tp.Any, ...]] = {}
        self._hist: dict[str, list[Entry]] = {}
        self._hist_src: dict[str, list[Entry]] = {}
        self._hist_len: dict[str, int] = {}
        self._hist_epoch: dict[str, int] = {}
        self._changes: collections.deque[tuple[int, set[str]]] = collections.deque(
            maxlen=_KEPT_GENERATIONS)
        self._time = 0.0

    # -- the underlying watch ---------------------------------------------------------------
    @property
    def watch(self) -> GridWatch:
        """The `GridWatch` underneath (after the first snapshot)."""
        if self._watch is None:
            raise RuntimeError("The watcher has not started yet: take a snapshot first.")
        return self._watch

    @property
    def clock(self) -> Clock:
        return self._clock or self.watch.clock

    async def _start(self) -> GridWatch:
        if self._watch is None:
            assert self._make is not None
            self._watch = await self._make()
            self._make = None
        gw = self._watch
        if not self._info:
            for result in gw.results:
                sigs = []
                for index, (sheep, name) in enumerate(zip(result.sheeps, result.names)):
                    sig = sheep.xp.sig
                    sigs.append(sig)
                    if sig not in self._info:
                        self._order[sig] = len(self._order)
                        self._info[sig] = _XPInfo(sheep, name, result.name, index,
                                                  tuple(sheep.xp.argv),
                                                  tuple(sheep.xp.delta or ()))
                self._grids[result.name] = tuple(sigs)
                self._base_names[result.name] = result.base_name
        return gw

    async def _refresh(self) -> None:
        gw = await self._start()
        if self.generation:
            delay = self._next_at - self.clock.now()
            if delay > 0:
                await self.clock.sleep(delay)
        await gw.refresh()
        if gw.all_done() and not self._final_read:
            # The last lines may have been written after this refresh read the metrics
            # and before the job was seen ending: read once more.
            await gw.refresh_metrics()
            self._final_read = True
        self._done = self._final_read
        delay = self.interval if self.interval is not None else gw.poller.next_delay()
        gw.poller.backend.set_poll_period(delay)
        self._next_at = self.clock.now() + delay
        self._time = time.time()
        self.generation += 1
        self._changes.append((self.generation, self._update()))

    def _update(self) -> set[str]:
        # O(XPs) cheap comparisons; the sigs whose state, job or history changed.
        changed: set[str] = set()
        histories = self.watch.histories
        for sig, info in self._info.items():
            sheep = info.sheep
            status = sheep.status
            job = sheep.job
            key = (sheep.state(), status.reason if status else "",
                   status.exit_code if status and status.exit_code is not None
                   else (job.exit_code if job else None),
                   sheep.stale, sheep.current_job_id, None if sheep.log is None else str(sheep.log))
            if self._states.get(sig) != key:
                self._states[sig] = key
                changed.add(sig)
            src = histories.get(sig)
            if src is None:
                src = []
            if self._note_history(sig, src):
                changed.add(sig)
        return changed

    def _note_history(self, sig: str, src: list[Entry]) -> bool:
        old_src = self._hist_src.get(sig)
        old_len = self._hist_len.get(sig, 0)
        if old_src is None:
            self._hist_src[sig] = self._hist[sig] = src
            self._hist_len[sig] = len(src)
            self._hist_epoch[sig] = 0
            return True
        if src is old_src:  # the tailer's list, grown in place
            if len(src) == old_len:
                return False
            if len(src) > old_len:
                self._hist_len[sig] = len(src)
                return True
        elif len(src) >= old_len and src[:old_len] == self._hist[sig][:old_len]:
            # A new list with the same beginning (a history re-read whole: Dora's
            # history.json, a custom get_xp_history): only its end is new.
            self._hist_src[sig] = self._hist[sig] = src
            if len(src) == old_len:
                return False
            self._hist_len[sig] = len(src)
            return True
        # Rewritten (Link.update_history) or shorter: start over.
        self._hist_src[sig] = self._hist[sig] = src
        self._hist_len[sig] = len(src)
        self._hist_epoch[sig] += 1
        return True

    async def _advance(self, seen: int) -> None:
        """Make sure a snapshot newer than generation ``seen`` exists: refresh once,
        after the refresh period, unless another consumer did meanwhile."""
        async with self._lock:
            if self.generation <= seen:
                await self._refresh()

    def _changed_since(self, generation: int) -> set[str] | None:
        # None: too far behind (or first snapshot): everything.
        if generation == 0 or not self._changes or self._changes[0][0] > generation + 1:
            return None
        out: set[str] = set()
        for gen, sigs in self._changes:
            if gen > generation:
                out |= sigs
        return out

    # -- consumers --------------------------------------------------------------------------
    def subscribe(self, *, until_done: bool = True) -> Subscription:
        """A new consumer: an async iterator of snapshots, each relative to the previous one.

        With ``until_done`` (default) the iteration ends after the snapshot in which
        every XP has ended; otherwise it goes on (until the consumer stops).
        """
        return Subscription(self, until_done=until_done)

    def __aiter__(self) -> Subscription:
        return self.subscribe()

    async def snapshot(self) -> Snapshot:
        """A snapshot of every XP (all marked changed): refreshes once if none was taken."""
        await self._advance(0)
        return Subscription(self)._take()

    async def wait(self) -> Snapshot:
        """Refresh until every selected XP has ended; return the final snapshot."""
        last: Snapshot | None = None
        async for snap in self.subscribe():
            last = snap
        assert last is not None
        return last

    @property
    def done(self) -> bool:
        """Every XP has ended and its last metrics were read."""
        return self._done

    async def aclose(self) -> None:
        """Close the backend's connections, if this watcher made the backend."""
        if self.owns_backend and self._watch is not None:
            await self._watch.poller.backend.aclose()

    async def __aenter__(self) -> GridWatcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Subscription:
    """One consumer of a `GridWatcher`: ``async for snapshot in subscription``."""

    def __init__(self, watcher: GridWatcher, *, until_done: bool = True) -> None:
        self.watcher = watcher
        self.until_done = until_done
        self.generation = 0
        self._finished = False
        self._views: dict[str, XPSnapshot] = {}
        self._seen: dict[str, tuple[int, int]] = {}  # sig -> (history epoch, entries sent)
        self._dirty: set[str] = set()  # views carrying new entries: to clear next time

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Snapshot:
        if self._finished:
            raise StopAsyncIteration
        await self.watcher._advance(self.generation)
        snap = self._take()
        if self.until_done and snap.done:
            self._finished = True
        return snap

    def _take(self) -> Snapshot:
        w = self.watcher
        changed = w._changed_since(self.generation)
        sigs = list(w._info) if changed is None else sorted(changed, key=w._order.__getitem__)
        views = self._views
        out = []
        dirty = set()
        for sig in sigs:
            view = self._view(sig)
            views[sig] = view
            out.append(view)
            if len(view.new_history) or view.history_reset:
                dirty.add(sig)
        for sig in self._dirty.difference(sigs):
            # Sent with new entries last time, unchanged since: nothing new any more.
            views[sig] = replace(views[sig], new_history=_EMPTY, history_reset=False)
        self._dirty = dirty
        self.generation = w.generation
        gw = w.watch
        error = gw.poller.last_error
        return Snapshot(generation=w.generation, time=w._time, xps=dict(views),
                        changed=tuple(out), done=w.done, grids=dict(w._grids),
                        base_names=dict(w._base_names),
                        poll_error=None if error is None else str(error),
                        read_errors=gw.tailer.errors)

    def _view(self, sig: str) -> XPSnapshot:
        w = self.watcher
        info = w._info[sig]
        state, reason, exit_code, stale, job_id, log = w._states[sig]
        entries, length, epoch = w._hist[sig], w._hist_len[sig], w._hist_epoch[sig]
        seen_epoch, sent = self._seen.get(sig, (epoch, 0))
        reset = seen_epoch != epoch
        start = 0 if reset or sent > length else sent
        self._seen[sig] = (epoch, length)
        return XPSnapshot(sig=sig, name=info.name, grid=info.grid, index=info.index,
                          argv=info.argv, delta=info.delta, state=state, reason=reason,
                          exit_code=exit_code, stale=stale, job_id=job_id, log=log,
                          history=HistoryView(entries, 0, length),
                          new_history=HistoryView(entries, start, length),
                          history_reset=reset)
