"""Where the page's data comes from: the engine's watch pipeline, one refresh at a time.

The web view never polls a backend or reads a metric file itself: each refresh of
the one watch (one poller, one incremental metrics tailer for every grid shown)
becomes one `Frame`, which the hub turns into one delta for every open page.
"""

from __future__ import annotations

import time
import typing as tp
from dataclasses import dataclass

from ..engine.watch import GridWatch, check_interval
from ..monitor import build_table
from ._model import GridFrame

if tp.TYPE_CHECKING:
    from ..engine.clock import Clock
    from ..engine.run import GridResult
    from ..main import DecoratedMain

__all__ = ["Frame", "frames"]


@dataclass
class Frame:
    """One refresh: the table of each grid and every XP's metric history."""

    grids: list[GridFrame]
    histories: tp.Mapping[str, tp.Sequence[tp.Any]]
    now: float


def _frame(watch: GridWatch) -> Frame:
    grids = []
    for result in watch.results:
        table = build_table(f"Grid {result.name}", result.explorer, result.sheeps, result.names,
                            result.base_name, watch.histories, cache=watch.merge_cache)
        grids.append(GridFrame(result.name, table))
    return Frame(grids, watch.histories, time.time())


async def frames(main: DecoratedMain, results: tp.Sequence[GridResult], *,
                 interval: float | None = None, clock: Clock | None = None
                 ) -> tp.AsyncIterator[Frame]:
    """A `Frame` after each refresh of one `GridWatch` over ``results``, forever.

    ``interval``: seconds between refreshes (default: the poller's adaptive delay,
    at most 2 s for local grids, where asking costs one read of the queue's database,
    and 10 s elsewhere, so that new metric lines show up while the states are quiet).
    """
    watch = GridWatch(main, results, clock=clock)
    interval = check_interval(interval)
    local = results[0].backend.name == "local"
    while True:
        await watch.refresh()
        yield _frame(watch)
        delay = interval if interval is not None else watch.poller.next_delay()
        if interval is None:
            delay = min(delay, 2.0 if local else 10.0)
        watch.poller.backend.set_poll_period(delay)
        await watch.clock.sleep(delay)
