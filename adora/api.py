"""The Python API of the grid pipeline: what `adora grid` does, callable from code.

``await run_grid(...)`` works from any anyio-supported event loop (asyncio, trio);
`run_grid_sync` is for scripts and notebooks without a running loop.
"""

from __future__ import annotations

import typing as tp

import anyio

from .engine.run import GridResult, RunGridArgs, run_grid
from .explore import Explorer
from .package import load_main

if tp.TYPE_CHECKING:
    from .main import DecoratedMain

__all__ = ["GridResult", "RunGridArgs", "load_explorer", "load_main", "run_grid",
           "run_grid_sync"]


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
