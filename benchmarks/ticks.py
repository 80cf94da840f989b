"""Run the adora or Dora command line with each monitoring refresh logged (benchmark S3).

    <adora venv>/bin/python benchmarks/ticks.py adora -P abench grid w1 --watch -i 0.0334
    <Dora venv>/bin/python benchmarks/ticks.py dora -P dbench grid w1 -i 0.0334

It is the tool's own command line, in this process, with one function wrapped so
that every refresh appends ``<time> <pid> tick`` to ``$ADORA_BENCH_TICK_LOG``:

* adora: ``adora.engine.poll.Poller.poll``, the one batched state query of each
  `GridWatch.refresh` (``adora grid --watch`` calls it once per tick, for every grid
  it watches; the queries of the grid runs before the watch starts are not ticks);
* Dora: ``dora.shep.Shepherd.update``, the forced ``sacct`` at the top of each
  iteration of Dora's monitoring loop (also called twice while the grid is run,
  before the loop: those fall before the measured window).

The Slurm commands themselves are counted by the wrappers put first on PATH
(their log gives the calling process's pid), so commands are attributed to the
refreshes of each process exactly. Nothing else changes: same code, same output.
"""

from __future__ import annotations

import os
import sys
import time
import typing as tp


def _log_tick() -> None:
    path = os.environ.get("ADORA_BENCH_TICK_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{time.time():.6f} {os.getpid()} tick\n")


def run_adora(argv: list[str]) -> int:
    from adora.engine import poll

    original = poll.Poller.poll

    async def poll_logged(self: tp.Any) -> bool:
        _log_tick()
        return await original(self)

    poll.Poller.poll = poll_logged  # type: ignore[method-assign]
    from adora.cli import main

    sys.argv = ["adora", *argv]
    main(argv)
    return 0


def run_dora(argv: list[str]) -> int:
    from dora import shep

    original = shep.Shepherd.update

    def update_logged(self: tp.Any) -> None:
        _log_tick()
        original(self)

    shep.Shepherd.update = update_logged  # type: ignore[method-assign]
    from dora.__main__ import main

    sys.argv = ["dora", *argv]
    main()
    return 0


if __name__ == "__main__":
    tool, *rest = sys.argv[1:]
    sys.exit(run_adora(rest) if tool == "adora" else run_dora(rest))
