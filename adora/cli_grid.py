"""The engine-backed commands: `adora grid`, `adora launch`, and the job side of `adora info`.

Imported only when one of them runs (it pulls in anyio and rich). Each runs
one pipeline of `adora.engine` and renders what it returns.
"""

from __future__ import annotations

import gc
import math
import sys
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
import typer

from .backends import get_backend
from .backends.base import Backend
from .conf import SlurmConfig, SubmitRules
from .engine.clock import Clock, SystemClock
from .engine.failures import FailureReader, describe, is_failure
from .engine.grids import list_grids, load_explorer
from .engine.plan import describe_plan
from .engine.poll import Poller
from .engine.run import GridResult, RunGridArgs, launch, resolve_backend, run_grid
from .engine.watch import MIN_INTERVAL, GridWatch, check_interval
from .errors import ConfigError, XPNotFoundError
from .explore import Sheep
from .jobs import JobRecord, load_record, sig_of_job
from .monitor import GridTable, build_table, dumps, write_json

if tp.TYPE_CHECKING:
    from .main import DecoratedMain

__all__ = ["grid_command", "info_job", "launch_command", "print_grids", "split_grids"]


def _log(message: str) -> None:
    typer.echo(message, err=True)


def print_grids(main: DecoratedMain) -> None:
    names = list_grids(main)
    typer.echo("Available grids: " + (", ".join(names) if names else "(none)"))


def split_grids(main: DecoratedMain, words: list[str]) -> tuple[list[str], list[str]]:
    """``adora grid a b pat``: leading words naming grids are grids, the rest patterns."""
    known = set(list_grids(main))
    grids = [words[0]]
    rest = words[1:]
    while rest and rest[0] in known:
        grids.append(rest.pop(0))
    return grids, rest


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


async def _confirm(message: str) -> bool:
    if not _interactive():
        return False
    return bool(await anyio.to_thread.run_sync(
        lambda: typer.confirm(message, default=False, err=True)))


def _table(result: GridResult, watch: GridWatch, args: RunGridArgs, view: _View) -> GridTable:
    table = build_table(f"Grid {result.name}", result.explorer, result.sheeps, result.names,
                        result.base_name, watch.histories, trim=args.trim,
                        trim_last=args.trim_last, cache=watch.merge_cache)
    if view.metrics:
        table = table.only_metrics(view.metrics)
    table.failures = failure_report(result, view)
    table.name = result.name
    return table


def _summary(sheeps: tp.Sequence[Sheep]) -> str:
    counts: dict[str, int] = {}
    for sheep in sheeps:
        state = sheep.state() or "no job"
        counts[state] = counts.get(state, 0) + 1
    parts = [f"{n} {state}" for state, n in sorted(counts.items())]
    return f"{len(sheeps)} XPs: " + ", ".join(parts)


def _check_positive(max_parallel: int | None) -> None:
    if max_parallel is not None and max_parallel < 1:
        raise ConfigError("--max-parallel must be at least 1.")


#: What Ctrl-C interrupted, by the phase the command was in.
INTERRUPTED = {
    "start": "Interrupted before anything was done.",
    "evaluating": "Interrupted while evaluating the grid: nothing was submitted or cancelled.",
    "lock": "Interrupted while waiting for the lock of the output folder: nothing was "
            "submitted or cancelled.",
    "query": "Interrupted while asking the backend for job states: nothing was submitted "
             "or cancelled.",
    "cancel": "Interrupted while cancelling jobs: some may be cancelled; run the command "
              "again to see their states.",
    "submit": "Interrupted while submitting: every job submitted is recorded; run the same "
              "command again to submit what is missing.",
    "metrics": "Interrupted while reading metrics; the jobs keep running.",
    "watch": "Stopped watching; the jobs keep running.",
    "log": "Stopped following the log; the job keeps running.",
}


@dataclass
class _View:
    # How the tables are shown, and what the command is doing (for Ctrl-C).
    names: list[str]
    patterns: list[str]
    metrics: list[str]
    failures: FailureReader = field(default_factory=FailureReader)
    phase: str = "start"

    def set_phase(self, phase: str) -> None:
        self.phase = phase


def _command(grid: str, patterns: tp.Sequence[str], *options: str) -> str:
    import shlex

    return " ".join(["adora", "grid", shlex.quote(grid), *map(shlex.quote, patterns), *options])


def failure_report(result: GridResult, view: _View) -> list[str]:
    """Under the table: each failed XP, why (the backend's reason, the error line of its
    log), and the commands to see a whole log and to resubmit."""
    failed = [(i, s) for i, s in enumerate(result.sheeps)
              if is_failure(s, cancelled_here=result.cancelled)]
    if not failed:
        return []
    lines = [f"{len(failed)} XP{'s' if len(failed) > 1 else ''} failed:"]
    for index, sheep in failed:
        line = f"  #{index} {sheep.xp.sig} {result.names[index] or '(base)'}: {describe(sheep)}"
        error = view.failures.line(sheep)
        if error:
            line += f": {error}"
        lines.append(line)
    first = str(failed[0][0])
    lines.append(f"Whole log of #{first}: {_command(result.name, view.patterns, '-l', first)}; "
                 f"resubmit the failed XPs: {_command(result.name, view.patterns, '-r')}")
    return lines


def exit_status(results: tp.Sequence[GridResult]) -> int:
    """1 when a selected XP failed (or was cancelled, not by adora), else 0."""
    for result in results:
        if any(is_failure(s, cancelled_here=result.cancelled) for s in result.sheeps):
            return 1
    return 0


def grid_command(main: DecoratedMain, names: list[str], *, patterns: list[str], retry: bool,
                 replace: bool, replace_done: bool, cancel: bool, clear: bool, dry_run: bool,
                 init: bool, yes: bool, watch: bool, interval: float | None, as_json: bool,
                 trim: int | None, trim_last: bool, folder: int | None, show_log: int | None,
                 tail: int | None, backend: str, max_parallel: int | None,
                 slurm_overrides: dict[str, tp.Any], cluster: str | None = None,
                 metrics: list[str] | None = None) -> int:
    """Run `adora grid` on one or more grids; return the exit status (see README)."""
    _check_positive(max_parallel)
    explorers = [load_explorer(main, name) for name in names]
    slurm = main.get_slurm_config().replace(**slurm_overrides)
    rules = SubmitRules(retry=retry, replace=replace, replace_done=replace_done)
    show_index = next((i for i in (folder, show_log, tail) if i is not None), None)
    if show_index is not None and len(names) > 1:
        raise ConfigError("-f, -l and -t show one XP: name one grid.")
    args = RunGridArgs(patterns=patterns, dry_run=dry_run, cancel=cancel, clear=clear,
                       init=init, yes=yes, read_only=show_index is not None, trim=trim,
                       trim_last=trim_last)
    if interval is not None and not 0 <= interval < math.inf:
        raise ConfigError(f"-i/--interval is the refresh period in minutes: it must be 0 or "
                          f"more (0: as often as adora allows, every {MIN_INTERVAL:g} s), "
                          f"not {interval:g}.")
    period = check_interval(None if interval is None else interval * 60)
    backend_obj = resolve_backend(main, backend, max_parallel, cluster)
    view = _View(names, patterns, [m for m in metrics or [] if m])

    async def pipeline() -> int:
        results = []
        for name, (explorer, grid_file) in zip(names, explorers):
            results.append(await run_grid(
                main, explorer, name, rules, slurm, args, backend=backend_obj,
                grid_file=grid_file, confirm=None if yes else _confirm, log=_log,
                phase=view.set_phase))
        if show_index is not None:
            view.phase = "log"
            return await _show_one(results[0], show_index, folder=folder is not None,
                                   follow=tail is not None)
        results = [r for r in results if r.sheeps] or results
        if not any(r.sheeps for r in results):
            _log("The grid selects no XP.")
            return 0
        # One watch, hence one poller, for every grid: one query per tick for all.
        view.phase = "metrics"
        gw = GridWatch(main, results, clock=SystemClock(), just_submitted=True)
        await gw.refresh_metrics()
        await view.failures.refresh(backend_obj, gw.sheeps)
        if not watch:
            _render(gw, args, as_json, final=True, view=view)
            if dry_run:
                for result in results:
                    where = f"Grid {result.name}: " if len(results) > 1 else ""
                    for line in describe_plan(result.plan, [
                            (s.xp.sig, n, s.job_state) for s, n in zip(result.sheeps,
                                                                        result.names)]):
                        _log(f"{where}{line}")
                _log("Dry run: nothing was submitted or cancelled.")
            unreachable = [r.query_error for r in results if r.query_error]
            if unreachable:  # never pass stale states off as fresh
                _log(f"adora: error: {unreachable[0]}")
                return 1
            return exit_status(gw.results)
        view.phase = "watch"
        await _watch(gw, args, period, as_json, view)
        return exit_status(gw.results)

    # One run then exit: the cyclic garbage collector would only scan the XPs again
    # and again (seconds for 100,000 XPs); a watch freezes them instead (`GridWatch`).
    collecting = gc.isenabled()
    if not watch:
        gc.disable()
    try:
        return anyio.run(pipeline)
    except KeyboardInterrupt:
        _log(INTERRUPTED.get(view.phase, INTERRUPTED["watch"]))
        return 130
    finally:
        if collecting:
            gc.enable()


#: Rows of a grid shown on a terminal: the first and last half (all: --json, or pipe).
TERMINAL_ROWS = 100


def _console() -> tp.Any:
    from rich.console import Console

    return Console()


def _render(gw: GridWatch, args: RunGridArgs, as_json: bool, final: bool,
            view: _View) -> str:
    tables = [_table(r, gw, args, view) for r in gw.results]
    if as_json and final:
        # Streamed: the JSON of a 100,000-XP grid is never held whole.
        write_json(tables, sys.stdout.write)
        sys.stdout.write("\n")
        sys.stdout.flush()
        return ""
    if as_json:
        text = dumps(tables)
    elif final and sys.stdout.isatty():
        text = ""
    elif final:
        # Streamed, as the JSON: 100,000 rows are never one string.
        out = sys.stdout
        for n, table in enumerate(tables):
            if n:
                out.write("\n\n")
            for line in table.iter_text():
                out.write(line)
                out.write("\n")
            out.write(_summary(table.sheeps))
        out.write("\n")
        out.flush()
        return ""
    else:
        text = "\n\n".join(t.to_text() + "\n" + _summary(t.sheeps) for t in tables)
    if final:
        if not sys.stdout.isatty():
            typer.echo(text)
        else:
            console = _console()
            for table in tables:
                console.print(table.to_rich(console.width, summary=_summary(table.sheeps),
                                            max_rows=TERMINAL_ROWS))
    return text


async def _run_watch(gw: GridWatch, view: _View, on_update: tp.Callable[[GridWatch], None],
                     period: float | None) -> None:
    # `GridWatch.run`, with the failed XPs' error lines read between refresh and show.
    interval = check_interval(period)
    while True:
        await gw.refresh()
        await view.failures.refresh(gw.results[0].backend, gw.sheeps)
        on_update(gw)
        if gw.all_done():
            return
        delay = interval if interval is not None else gw.poller.next_delay()
        gw.poller.backend.set_poll_period(delay)
        await gw.clock.sleep(delay)


def _changes(gw: GridWatch, seen: dict[tuple[str, str], str], view: _View) -> list[str]:
    # One timestamped line per XP whose state changed since the last refresh.
    import time

    stamp = time.strftime("%H:%M:%S")
    lines = []
    for result in gw.results:
        for index, (sheep, name) in enumerate(zip(result.sheeps, result.names)):
            state = sheep.state() or "no job"
            if sheep.stale:
                state += "?"
            key = (result.name, sheep.xp.sig)
            old = seen.get(key)
            seen[key] = state
            if old is None or old == state:
                continue
            line = f"{stamp} {result.name} #{index} {sheep.xp.sig} {name or '(base)'}: " \
                f"{old} -> {state}"
            if is_failure(sheep, cancelled_here=result.cancelled):
                line += f" ({describe(sheep, state_name=False)})"
                error = view.failures.line(sheep)
                if error:
                    line += f": {error}"
            lines.append(line)
    return lines


async def _watch(gw: GridWatch, args: RunGridArgs, period: float | None,
                 as_json: bool, view: _View) -> None:
    if period is None and gw.results[0].backend.name == "local":
        period = 2.0
    if as_json:
        # JSON Lines: the `--json` document, on one line, each time something changed.
        last = [""]

        def on_update_text(w: GridWatch) -> None:
            text = dumps([_table(r, w, args, view) for r in w.results], one_line=True)
            if text != last[0]:
                typer.echo(text)
                last[0] = text
        await _run_watch(gw, view, on_update_text, period)
        return
    if not sys.stdout.isatty():
        # A log, not a screen: the table once, a line per change, the table at the end.
        seen: dict[tuple[str, str], str] = {}
        _changes(gw, seen, view)
        typer.echo(_render(gw, args, False, final=False, view=view))

        def on_change(w: GridWatch) -> None:
            for line in _changes(w, seen, view):
                typer.echo(line)
        await _run_watch(gw, view, on_change, period)
        typer.echo("")
        _render(gw, args, False, final=True, view=view)
        return

    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    console = _console()

    def renderable(w: GridWatch) -> Group:
        parts: list[tp.Any] = []
        for result in w.results:
            parts.append(_table(result, w, args, view).to_rich(
                console.width, summary=_summary(result.sheeps), max_rows=TERMINAL_ROWS))
        if not w.all_done():
            stale = any(s.stale for s in w.sheeps)
            footer = ("?: state unknown right now, retrying.  " if stale else "") + \
                "Ctrl-C stops watching; the jobs keep running."
            parts.append(Text(footer, style="dim"))
        return Group(*parts)

    with Live(renderable(gw), console=console, auto_refresh=False, transient=False) as live:
        def on_update(w: GridWatch) -> None:
            live.update(renderable(w), refresh=True)
        await _run_watch(gw, view, on_update, period)


async def _follow(backend: Backend, log: str, *, follow: bool, clock: Clock,
                  done: tp.Callable[[], tp.Awaitable[bool]] | None = None,
                  missing_ok: bool = False) -> None:
    """Print a log; with ``follow``, keep printing what is added until ``done()``."""
    offset = 0
    while True:
        got = await backend.read_file(log, offset)
        if got is None and not follow and not missing_ok:
            raise ConfigError(f"The log {log} does not exist (yet).")
        if got is not None and got[0]:
            sys.stdout.write(got[0].decode(errors="replace"))
            sys.stdout.flush()
            offset += len(got[0])
        if not follow or (done is not None and await done()):
            if follow:
                # What came after the last read (or all of it, if the log appeared only
                # after that read: a short job may end between the two).
                rest = await backend.read_file(log, offset)
                if rest is not None and rest[0]:
                    sys.stdout.write(rest[0].decode(errors="replace"))
            return
        await clock.sleep(1.0)


async def show_job_log(backend: Backend, record: JobRecord, *, follow: bool,
                       clock: Clock | None = None, log: str | None = None) -> None:
    """Print a job's log (``-l``); with ``follow`` (``-t``), until the job ends: at once
    for a job that already ended. The same for `adora grid` and `adora info`.

    ``log``: the log to show, if not the record's (a chain of dependent jobs shows the
    log of its job running, or that ended the chain)."""
    clock = clock or SystemClock()
    log = log or record.log
    if not log:
        raise ConfigError(f"Job {record.job_id} has no log.")
    done = None
    if follow:
        poller = Poller(backend, clock=clock)
        poller.track([record])

        async def done() -> bool:
            status = poller.status(record)
            if status is not None and status.state.is_final and not status.stale:
                return True
            await poller.poll()
            status = poller.status(record)
            return status is None or (status.state.is_final and not status.stale)
    await _follow(backend, log, follow=follow, clock=clock, done=done)


async def _show_one(result: GridResult, index: int, *, folder: bool, follow: bool) -> int:
    if not 0 <= index < len(result.sheeps):
        raise ConfigError(f"No XP #{index}: the grid selects {len(result.sheeps)} XPs "
                          f"(0..{len(result.sheeps) - 1}).")
    sheep = result.sheeps[index]
    if folder:
        typer.echo(str(sheep.xp.folder))
        return 0
    if sheep.job is None or sheep.log is None:
        raise ConfigError(f"XP #{index} ({sheep.xp.sig}) has no job, hence no log yet.")
    await show_job_log(result.backend, sheep.job, follow=follow, log=str(sheep.log))
    return 0


# -- adora launch ---------------------------------------------------------------------------
def launch_command(main: DecoratedMain, argv: list[str], *, attach: bool, tail: bool,
                   cancel: bool, clear: bool, rules: SubmitRules, backend: str,
                   max_parallel: int | None, slurm_overrides: dict[str, tp.Any],
                   cluster: str | None = None) -> int:
    """Submit one XP; follow its log (Ctrl-C cancels the job with ``attach``)."""
    _check_positive(max_parallel)
    slurm: SlurmConfig = main.get_slurm_config().replace(**slurm_overrides)
    backend_obj = resolve_backend(main, backend, max_parallel, cluster)
    args = RunGridArgs(cancel=cancel, clear=clear, yes=clear)
    clock = SystemClock()
    submitted: list[Sheep] = []

    async def pipeline() -> int:
        result = await launch(main, argv, rules=rules, slurm=slurm, args=args,
                              backend=backend_obj, log=_log)
        sheep = result.sheeps[0]
        submitted.append(sheep)
        _log(f"XP {sheep.xp.sig} ({main.get_name(sheep.xp) or 'defaults'}): job "
             f"{sheep.current_job_id or '-'} {sheep.state() or 'not submitted'}; folder "
             f"{sheep.xp.folder}")
        if cancel or not tail or sheep.log is None:
            return 0
        poller = Poller(backend_obj, clock=clock)
        poller.track([sheep.job])

        async def done() -> bool:
            await poller.poll()
            status = poller.status(sheep.job)
            return status is not None and status.state.is_final and not status.stale

        _log(f"Following {sheep.log} (Ctrl-C {'cancels the job' if attach else 'stops'})")
        await _follow(backend_obj, str(sheep.log), follow=True, clock=clock, done=done,
                      missing_ok=True)
        status = poller.status(sheep.job)
        _log(f"Job {sheep.current_job_id} ended: {status.state if status else 'unknown'}")
        return 0 if status is not None and status.state.value == "COMPLETED" else 1

    try:
        return anyio.run(pipeline)
    except KeyboardInterrupt:
        if attach and submitted and submitted[0].job is not None:
            record = submitted[0].job
            anyio.run(backend_obj.cancel, [record])
            _log(f"Cancelled job {record.job_id}.")
        else:
            _log("Stopped following; the job keeps running.")
        return 130


# -- adora info -------------------------------------------------------------------------------
def folder_of_job(main: DecoratedMain, job_id: str) -> Path:
    """The XP folder of a job id: from adora's submission files, else from the
    ``by_id`` links Dora (and earlier adora versions) made."""
    sig = sig_of_job(main.dora.dir, job_id)
    if sig is not None:
        return main.dora.dir / main.dora.xps / sig
    by_id = main.dora.dir / main.dora.shep.by_id
    for name in (job_id, f"local_{job_id}"):
        link = by_id / name
        if link.is_symlink() or link.exists():
            return link.resolve()
    raise XPNotFoundError(job_id, f"No XP known for job {job_id}: no submission of "
                          f"{main.dora.dir} made it, and no link {by_id / job_id}.")


def backend_of(main: DecoratedMain, name: str) -> Backend:
    """The backend that submitted a job (``local``, ``slurm`` or ``ssh:<cluster>``)."""
    if name.startswith("ssh:"):
        return resolve_backend(main, None, cluster=name.split(":", 1)[1])
    return get_backend(name if name in ("local", "slurm") else None, root=main.dora.dir)


def info_job(main: DecoratedMain, sheep_xp: tp.Any, *, show_log: bool, follow: bool,
             cancel: bool) -> None:
    """Print the job of an XP (state, log); optionally its log, followed, or cancel it."""
    record = load_record(sheep_xp.folder)
    if record is None:
        typer.echo("job: none")
        if show_log or follow or cancel:
            raise ConfigError(f"XP {sheep_xp.sig} has no job: nothing to show or cancel.")
        return
    backend = backend_of(main, record.backend)
    sheep = Sheep(sheep_xp, record)

    async def pipeline() -> None:
        if record.job_id is not None and record.final is None:
            statuses = await backend.query([record])
            sheep.status = statuses.get(record.job_id)
        state = sheep.state()
        code = sheep.status.exit_code if sheep.status else record.exit_code
        typer.echo(f"job: {sheep.current_job_id} on {record.backend}, {state}"
                   + (f" (exit code {code})" if code not in (None, 0) else ""))
        if record.dependents:
            typer.echo(f"jobs of its chain (dependents): {', '.join(record.links)}")
        typer.echo(f"log: {sheep.log}")
        if record.previous:
            typer.echo(f"previous jobs: {', '.join(record.previous)}")
        if cancel:
            if sheep.is_done():
                typer.echo("The job is not running: nothing to cancel.")
            else:
                await backend.cancel([record])
                typer.echo(f"Cancelled job {', '.join(record.links)}.")
        if (show_log or follow) and record.log:
            await show_job_log(backend, record, follow=follow, log=str(sheep.log))

    try:
        anyio.run(pipeline)
    except KeyboardInterrupt:
        _log(INTERRUPTED["log"] if show_log or follow else "Interrupted.")
