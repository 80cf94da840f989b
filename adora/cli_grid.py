"""The `adora grid` command: run the grid pipeline, then render, watch, or show one XP.

Imported only when `adora grid` runs (it pulls in anyio and rich).
"""

from __future__ import annotations

import sys
import typing as tp

import anyio
import anyio.to_thread
import typer

from .conf import SubmitRules
from .engine.clock import SystemClock
from .engine.grids import list_grids, load_explorer
from .engine.run import GridResult, RunGridArgs, run_grid
from .engine.watch import GridWatch
from .errors import ConfigError
from .monitor import GridTable, build_table, dumps

if tp.TYPE_CHECKING:
    from .main import DecoratedMain

__all__ = ["grid_command", "print_grids"]


def _log(message: str) -> None:
    typer.echo(message, err=True)


def print_grids(main: DecoratedMain) -> None:
    names = list_grids(main)
    typer.echo("Available grids: " + (", ".join(names) if names else "(none)"))


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


async def _confirm(message: str) -> bool:
    if not _interactive():
        return False
    return bool(await anyio.to_thread.run_sync(
        lambda: typer.confirm(message, default=False, err=True)))


def _table(result: GridResult, watch: GridWatch | None, args: RunGridArgs) -> GridTable:
    histories = watch.histories if watch is not None else {}
    return build_table(f"Grid {result.name}", result.explorer, result.sheeps, result.names,
                       result.base_name, histories, trim=args.trim, trim_last=args.trim_last)


def _summary(result: GridResult) -> str:
    counts: dict[str, int] = {}
    for sheep in result.sheeps:
        state = sheep.state() or "no job"
        counts[state] = counts.get(state, 0) + 1
    parts = [f"{n} {state}" for state, n in sorted(counts.items())]
    return f"{len(result.sheeps)} XPs: " + ", ".join(parts)


def grid_command(main: DecoratedMain, name: str, *, patterns: list[str], retry: bool,
                 replace: bool, replace_done: bool, cancel: bool, clear: bool, dry_run: bool,
                 init: bool, yes: bool, watch: bool, interval: float | None, as_json: bool,
                 trim: int | None, trim_last: bool, folder: int | None, show_log: int | None,
                 tail: int | None, backend: str, max_parallel: int | None,
                 slurm_overrides: dict[str, tp.Any]) -> int:
    """Run `adora grid`; return the exit status."""
    explorer, grid_file = load_explorer(main, name)
    slurm = main.get_slurm_config().replace(**slurm_overrides)
    rules = SubmitRules(retry=retry, replace=replace, replace_done=replace_done)
    show_index = next((i for i in (folder, show_log, tail) if i is not None), None)
    args = RunGridArgs(patterns=patterns, dry_run=dry_run, cancel=cancel, clear=clear,
                       init=init, yes=yes, read_only=show_index is not None, trim=trim,
                       trim_last=trim_last)
    if max_parallel is not None and max_parallel < 1:
        raise ConfigError("--max-parallel must be at least 1.")
    period = None if interval is None else interval * 60

    async def pipeline() -> int:
        result = await run_grid(main, explorer, name, rules, slurm, args, backend=backend,
                                grid_file=grid_file, confirm=None if yes else _confirm,
                                log=_log, max_parallel=max_parallel)
        if show_index is not None:
            return await _show_one(result, show_index, folder=folder is not None,
                                   follow=tail is not None)
        if not result.sheeps:
            _log("The grid selects no XP.")
            return 0
        gw = GridWatch(main, [result], clock=SystemClock())
        await gw.refresh_metrics()
        if as_json and not watch:
            typer.echo(dumps([_table(result, gw, args)]))
            return 0
        if not watch:
            _render_once(result, gw, args)
            return 0
        await _watch(result, gw, args, period, as_json)
        return 0

    try:
        return anyio.run(pipeline)
    except KeyboardInterrupt:
        _log("Stopped watching; the jobs keep running.")
        return 130


def _render_once(result: GridResult, gw: GridWatch, args: RunGridArgs) -> None:
    table = _table(result, gw, args)
    if sys.stdout.isatty():
        from rich.console import Console

        Console().print(table.to_rich())
    else:
        typer.echo(table.to_text())
    typer.echo(_summary(result))


async def _watch(result: GridResult, gw: GridWatch, args: RunGridArgs, period: float | None,
                 as_json: bool) -> None:
    if period is None and result.backend.name == "local":
        period = 2.0
    if as_json or not sys.stdout.isatty():
        last = [""]

        def on_update_text(w: GridWatch) -> None:
            table = _table(result, w, args)
            text = dumps([table]) if as_json else table.to_text() + "\n" + _summary(result)
            if text != last[0]:
                typer.echo(text)
                last[0] = text
        await gw.run(on_update_text, interval=period)
        return

    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    def renderable(w: GridWatch) -> Group:
        stale = any(s.stale for s in w.sheeps)
        footer = _summary(result) + ("  (?: state unknown right now, retrying)" if stale else "")
        return Group(_table(result, w, args).to_rich(),
                     Text(footer + "  — Ctrl-C stops watching, jobs keep running", style="dim"))

    with Live(renderable(gw), auto_refresh=False, transient=False) as live:
        def on_update(w: GridWatch) -> None:
            live.update(renderable(w), refresh=True)
        await gw.run(on_update, interval=period)


async def _show_one(result: GridResult, index: int, *, folder: bool, follow: bool) -> int:
    if not 0 <= index < len(result.sheeps):
        raise ConfigError(f"No XP #{index}: the grid selects {len(result.sheeps)} XPs "
                          f"(0..{len(result.sheeps) - 1}).")
    sheep = result.sheeps[index]
    if folder:
        typer.echo(str(sheep.xp.folder))
        return 0
    log = sheep.log
    if log is None:
        raise ConfigError(f"XP #{index} ({sheep.xp.sig}) has no job, hence no log yet.")
    offset = 0
    backend = result.backend
    while True:
        got = await backend.read_file(str(log), offset)
        if got is None:
            if not follow:
                raise ConfigError(f"The log {log} does not exist (yet).")
        else:
            data, size = got
            if data:
                sys.stdout.write(data.decode(errors="replace"))
                sys.stdout.flush()
                offset += len(data)
        if not follow:
            return 0
        await anyio.sleep(1.0)
