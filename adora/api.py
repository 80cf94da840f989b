"""The Python API of the grid pipeline: what `adora grid` does, callable from code.

``await run_grid(...)`` works from any anyio-supported event loop (asyncio, trio);
`run_grid_sync` is for scripts and notebooks without a running loop.
`watch_grid` follows the states and metrics of grids (or of XPs by signature):
the table, ``adora plot``, ``adora ui`` and HiPlot all read grids through it.
"""

from __future__ import annotations

import typing as tp

import anyio

from .engine.run import GridResult, RunGridArgs, run_grid
from .engine.snapshots import GridWatcher, HistoryView, Snapshot, Subscription, XPSnapshot
from .explore import Explorer
from .package import load_main

if tp.TYPE_CHECKING:
    from .backends.base import Backend
    from .engine.clock import Clock
    from .engine.watch import GridWatch
    from .main import DecoratedMain

__all__ = ["GridResult", "GridWatcher", "HistoryView", "RunGridArgs", "Snapshot",
           "Subscription", "XPSnapshot", "load_explorer", "load_main", "run_grid",
           "run_grid_sync", "watch_grid", "watch_results"]


def load_explorer(main: DecoratedMain, grid_name: str) -> Explorer:
    """The explorer of grid ``grid_name`` of ``main``'s grid package."""
    from .engine.grids import load_explorer as _load

    return _load(main, grid_name)[0]


def _in_running_loop() -> bool:
    import asyncio
    import sys

    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        pass
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
            return True
        except RuntimeError:
            pass
    return False


def run_grid_sync(main: DecoratedMain, explorer: Explorer, grid_name: str,
                  *args: tp.Any, **kwargs: tp.Any) -> GridResult:
    """`run_grid` for code without an event loop (scripts, notebooks without ``await``).

    Raises `RuntimeError` when called from a running event loop: there, use
    ``await adora.run_grid(...)``.
    """
    if _in_running_loop():
        raise RuntimeError("run_grid_sync() was called from a running event loop (e.g. a "
                           "Jupyter cell): use `await adora.run_grid(...)` there instead.")
    return anyio.run(lambda: run_grid(main, explorer, grid_name, *args, **kwargs))


def watch_grid(main: DecoratedMain | None, grids: str | tp.Sequence[str] = (),
               patterns: tp.Sequence[str] = (), *, sigs: tp.Sequence[str] = (),
               backend: Backend | str | None = None, cluster: str | None = None,
               interval: float | None = None, clock: Clock | None = None,
               max_parallel: int | None = None) -> GridWatcher:
    """Follow the XPs of ``grids`` (names of grid files) and/or of signatures ``sigs``.

    Nothing is submitted or cancelled: the grids are evaluated as ``adora grid
    NAME --dry-run`` would, keeping the XPs whose name matches every pattern of
    ``patterns`` (as on the command line). ``backend`` (``local``, ``slurm``,
    ``auto``, an instance) or ``cluster`` (a remote cluster over SSH) is where the
    jobs run; for ``sigs`` alone it defaults to the backend their jobs were
    submitted with. ``main`` None: the project of the current folder.

    Nothing runs until the first snapshot is asked for. Every consumer of the
    returned `GridWatcher` shares one poller and one metrics tailer::

        import adora

        async def follow() -> None:
            async with adora.watch_grid(None, "sweep", ["lr=0.1"], backend="local") as w:
                async for snapshot in w:            # ends once every XP has ended
                    for xp in snapshot.changed:     # only what changed since the last one
                        print(xp.name, xp.state, xp.job_id, len(xp.history),
                              [m["valid"]["loss"] for m in xp.new_history])
                # or, without iterating: final = await w.wait()
    """
    names = [grids] if isinstance(grids, str) else list(grids)
    sig_list = list(sigs)
    if not names and not sig_list:
        raise ValueError("watch_grid needs grid names or signatures.")

    async def make() -> GridWatch:
        from .engine.watch import GridWatch

        the_main = main if main is not None else load_main()
        results = []
        backend_obj: Backend | None = None
        if names or backend is not None or cluster is not None:
            from .engine.run import resolve_backend

            backend_obj = resolve_backend(the_main, backend, max_parallel, cluster)
        for name in names:
            from .engine.grids import load_explorer as _load

            explorer, grid_file = await anyio.to_thread.run_sync(_load, the_main, name)
            args = RunGridArgs(patterns=list(patterns), read_only=True, silent=True)
            results.append(await run_grid(the_main, explorer, name, args=args,
                                          backend=backend_obj, grid_file=grid_file,
                                          log=lambda _message: None, clock=clock))
        if sig_list:
            results.append(await _sigs_result(the_main, sig_list, patterns, backend_obj,
                                              max_parallel))
        results = [r for r in results if r.sheeps] or results[:1]
        return GridWatch(the_main, results, clock=clock)

    return GridWatcher(make, interval=interval, clock=clock,
                       owns_backend=backend is None or isinstance(backend, str))


def watch_results(main: DecoratedMain, results: tp.Sequence[GridResult], *,
                  interval: float | None = None, clock: Clock | None = None,
                  just_submitted: bool = False) -> GridWatcher:
    """A `GridWatcher` over grids already run with `run_grid` (their backend, their XPs).

    ``just_submitted``: the results come from runs that ended a moment ago (their
    new XP folders are not looked up for metrics on the first refresh).
    """
    from .engine.watch import GridWatch

    return GridWatcher(GridWatch(main, results, clock=clock, just_submitted=just_submitted),
                       interval=interval, clock=clock)


async def _sigs_result(main: DecoratedMain, sigs: list[str], patterns: tp.Sequence[str],
                       backend: Backend | None, max_parallel: int | None) -> GridResult:
    # XPs named by signature, outside any grid: their folders and job records as found.
    from .engine.plan import Plan
    from .engine.run import resolve_backend, select
    from .explore import Sheep
    from .jobs import load_records

    def _load() -> list[Sheep]:
        xps = [main.get_xp_from_sig(sig) for sig in dict.fromkeys(sigs)]
        records = load_records([xp.folder for xp in xps])
        return [Sheep(xp, record) for xp, record in zip(xps, records)]

    sheeps = await anyio.to_thread.run_sync(_load)
    if backend is None:
        used = {s.job.backend for s in sheeps if s.job is not None}
        name = used.pop() if len(used) == 1 else "local"
        if name.startswith("ssh:"):
            backend = resolve_backend(main, None, max_parallel, name.split(":", 1)[1])
        else:
            backend = resolve_backend(main, name if name in ("local", "slurm") else "local",
                                      max_parallel)
    for sheep in sheeps:
        if sheep.job is not None and sheep.job.backend != backend.name \
                and sheep.job.final is None:
            sheep.job = None  # another backend's job: this one cannot tell its state
    names, base_name = main.get_names([s.xp for s in sheeps])
    sheeps, names = select(sheeps, names, patterns)
    return GridResult("", sheeps, names, base_name, Plan(), backend,
                      Explorer(lambda _launcher: None))
