"""Dora's Grid API (``dora.grid``) by its names, over adora's engine.

``run_grid(main, explorer, grid_name, rules, slurm, args)`` evaluates the grid,
makes the backend match it and, with ``args.monitor``, shows the table every
``args.interval`` minutes until every job ended, then returns the XPs' sheeps::

    from adora.grid import RunGridArgs, run_grid

    sheeps = run_grid(main, explorer, "sweep", args=RunGridArgs(jupyter=True, interval=1))
    print([sheep.job.job_id for sheep in sheeps])

This module only translates: the grid run is `adora.engine.run.run_grid`, the
watching one `adora.engine.watch.GridWatch` (one poller, incremental metric
tails) and the table `adora.monitor.build_table`, as for ``adora grid``.

It works in a Jupyter cell, where an asyncio loop already runs in the calling
thread: the engine then runs in a helper thread with its own loop, and the
tables come back to the calling thread to be shown (``jupyter=True`` clears the
cell before each one).
"""

from __future__ import annotations

import os
import queue
import threading
import typing as tp
from dataclasses import dataclass, field

from .conf import SlurmConfig, SubmitRules
from .explore import Explorer, Sheep

if tp.TYPE_CHECKING:
    from .engine.run import GridResult
    from .engine.run import RunGridArgs as EngineArgs
    from .engine.watch import GridWatch
    from .main import DecoratedMain

__all__ = ["RunGridArgs", "monitor", "no_print", "run_grid"]


def no_print(*args: tp.Any, **kwargs: tp.Any) -> None:
    """A ``print`` that prints nothing (what ``silent=True`` uses)."""


@dataclass
class RunGridArgs:
    """Options of `run_grid`: Dora's ``dora.grid.RunGridArgs``, field for field.

    ``patterns``: keep XPs whose name contains every pattern (``!pat`` excludes,
    an integer picks by index). ``monitor``: show the table every ``interval``
    minutes until every job ended (else once). ``trim``/``trim_last``: cut every
    history to the length of XP #``trim``'s / the shortest. ``silent``: print
    nothing. ``dry_run``, ``cancel``, ``clear``, ``init``: as ``adora grid``'s
    flags (``clear`` does not ask, as in Dora's API). ``jupyter``: clear the
    notebook cell before each table. ``folder``, ``log``, ``tail``: command
    line only (`RuntimeError` here, as in Dora).

    adora's addition: ``yes`` cancels the jobs of XPs removed from the grid
    (Dora cancels them unasked; adora keeps them unless told).
    """

    patterns: list[str] = field(default_factory=list)

    monitor: bool = True
    interval: float = 5
    trim: int | None = None
    trim_last: bool = False
    silent: bool = False

    dry_run: bool = False
    cancel: bool = False
    clear: bool = False
    init: bool | None = False

    jupyter: bool = False

    folder: int | None = None
    log: int | None = None
    tail: int | None = None

    _from_commandline: bool = False

    yes: bool = False

    def to_engine(self) -> EngineArgs:
        """The engine's options for these (`adora.RunGridArgs`)."""
        from .engine.run import RunGridArgs as EngineArgs

        return EngineArgs(patterns=list(self.patterns), dry_run=self.dry_run,
                          cancel=self.cancel, clear=self.clear, init=bool(self.init),
                          yes=self.yes or self.clear, trim=self.trim,
                          trim_last=self.trim_last, silent=self.silent)


def _loop_running() -> bool:
    from .api import _in_running_loop

    return _in_running_loop()


def _table_text(result: GridResult, sheeps: tp.Sequence[Sheep],
                histories: tp.Mapping[str, list[dict[str, tp.Any]]], args: RunGridArgs,
                cache: dict[str, tp.Any] | None) -> str:
    from .monitor import build_table

    table = build_table(f"Grid {result.name}", result.explorer, sheeps, result.names,
                        result.base_name, histories, trim=args.trim,
                        trim_last=args.trim_last, cache=cache)
    return table.to_text()


def _show(text: str, args: RunGridArgs, maybe_print: tp.Callable[..., None]) -> None:
    if args.jupyter and not args.silent:
        from IPython import display

        display.clear_output(wait=True)
    maybe_print(text)


def run_grid(main: DecoratedMain, explorer: Explorer, grid_name: str,
             rules: SubmitRules | None = None, slurm: SlurmConfig | None = None,
             args: RunGridArgs | None = None, *, backend: tp.Any = None) -> list[Sheep]:
    """Run grid ``grid_name`` as ``dora grid`` does and return its XPs (`Sheep`).

    Blocking, like Dora's; from a running event loop (a Jupyter cell) too.
    ``backend``: a backend or its name (default: ``$ADORA_BACKEND``, else Slurm
    when ``sbatch`` is on PATH, else local processes).
    """
    if not isinstance(explorer, Explorer):
        raise TypeError(f"{explorer!r} must be an adora (or Dora) Explorer.")
    rules = rules if rules is not None else SubmitRules()
    args = args if args is not None else RunGridArgs()
    if any(v is not None for v in (args.folder, args.log, args.tail)) \
            and not args._from_commandline:
        raise RuntimeError("The folder, log and tail flags are only supported from the "
                           "command line (`adora grid NAME -f/-l/-t INDEX`).")
    if backend is None:
        backend = os.environ.get("ADORA_BACKEND") or None
    maybe_print: tp.Callable[..., None] = no_print if args.silent else print
    period = max(1.0, float(args.interval) * 60)

    def show(item: str) -> None:
        # A table (cleared before in Jupyter), or the line announcing them.
        if item.startswith("Monitoring Grid"):
            maybe_print(item)
        else:
            _show(item, args, maybe_print)

    async def pipeline(emit: tp.Callable[[str], None]) -> list[Sheep]:
        from .engine.run import run_grid as engine_run_grid
        from .engine.watch import GridWatch

        result = await engine_run_grid(main, explorer, grid_name, rules, slurm,
                                       args.to_engine(), backend=backend,
                                       log=lambda message: maybe_print("Grid: " + message))
        if not result.sheeps:
            maybe_print("Grid: No sheep to handle.")
        elif not args.cancel:
            emit(f"Monitoring Grid {grid_name}")
            watch = GridWatch(main, [result], just_submitted=True)

            def on_update(w: GridWatch) -> None:
                emit(_table_text(result, result.sheeps, w.histories, args, w.merge_cache))

            if args.monitor:
                await watch.run(on_update, interval=period)
            else:
                await watch.refresh()
                on_update(watch)
        return result.sheeps

    import anyio

    if not _loop_running():
        return anyio.run(pipeline, show)

    # A running loop in this thread (a Jupyter cell): the engine gets a thread and a loop
    # of its own; the tables are shown from this thread, where the cell's output goes.
    out: queue.Queue[tuple[str, tp.Any]] = queue.Queue()

    def drive() -> None:
        try:
            out.put(("done", anyio.run(pipeline, lambda text: out.put(("show", text)))))
        except BaseException as exc:  # raised again in the calling thread
            out.put(("error", exc))

    worker = threading.Thread(target=drive, name="adora-grid", daemon=True)
    worker.start()
    while True:
        kind, value = out.get()
        if kind == "show":
            show(value)
            continue
        worker.join()
        if kind == "error":
            raise value
        return tp.cast(list[Sheep], value)


def monitor(args: tp.Any, main: DecoratedMain, explorer: Explorer, herd: list[Sheep],
            maybe_print: tp.Callable[..., tp.Any] = print) -> bool:
    """Print the table of ``herd`` once, as it stands; True when every job ended.

    Dora's single monitoring step. Job states are those the sheeps hold (from
    the last `run_grid`); metrics are read now with ``main.get_xp_history``.
    """
    from .monitor import build_table

    names, base_name = main.get_names([sheep.xp for sheep in herd])
    histories = {sheep.xp.sig: main.get_xp_history(sheep.xp) for sheep in herd}
    table = build_table("Grid", explorer, herd, names, base_name, histories,
                        trim=getattr(args, "trim", None),
                        trim_last=bool(getattr(args, "trim_last", False)))
    maybe_print(table.to_text())
    return all(sheep.is_done() for sheep in herd)
