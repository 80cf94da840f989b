"""The `adora` command: parse options, call one pipeline, render its result.

Kept light on purpose: ``adora --help`` imports Typer and nothing heavy; the
engine, rich and the user's package are imported inside the commands.
"""

from __future__ import annotations

import json
import os
import sys
import typing as tp
from dataclasses import dataclass

import typer
from typer.core import TyperCommand

from .errors import AdoraError

if tp.TYPE_CHECKING:
    from .main import DecoratedMain

app = typer.Typer(
    name="adora",
    help="Grid searches for ML research, compatible with Dora: run, launch and watch XPs "
         "on local processes, Slurm, or Slurm over SSH.",
    no_args_is_help=True,
    # --install-completion / --show-completion (bash, zsh, fish): grid names complete.
    add_completion=True,
    pretty_exceptions_enable=False,
    # Plain help: rendering it with rich would import rich on every `adora --help`.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class Globals:
    package: str | None = None
    main_module: str | None = None
    verbose: bool = False
    _main: DecoratedMain | None = None

    def load_main(self) -> DecoratedMain:
        if self._main is None:
            from .package import load_main

            self._main = load_main(self.package, self.main_module)
        return self._main


def expand_abbreviations(params: tp.Iterable[tp.Any], args: list[str]) -> list[str]:
    """Long options abbreviated to a unique prefix, as argparse (and so Dora) accepts them:
    ``--dry`` is ``--dry-run``, ``--no_monitor`` is ``--no-monitoring``. ``_`` and ``-``
    are the same in a name. Nothing after ``--`` is touched (training arguments).
    An ambiguous prefix raises ValueError, naming the options it could be."""
    names: dict[str, tuple[str, str]] = {}  # normalised spelling -> (param name, option)
    for param in params:
        for opt in [*getattr(param, "opts", ()), *getattr(param, "secondary_opts", ())]:
            if opt.startswith("--"):
                names.setdefault(opt.replace("_", "-"), (param.name, opt))
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            out += args[i:]
            break
        if not arg.startswith("--"):
            out.append(arg)
            continue
        name, eq, value = arg.partition("=")
        norm = name.replace("_", "-")
        if norm in names:
            out.append(names[norm][1] + eq + value)
            continue
        matches = {param: opt for key, (param, opt) in names.items() if key.startswith(norm)}
        if len(matches) == 1:
            out.append(next(iter(matches.values())) + eq + value)
        elif len(matches) > 1:
            choices = ", ".join(sorted(matches.values()))
            raise ValueError(f"Ambiguous option {name}: it could be {choices}.")
        else:
            out.append(arg)
    return out


class _Command(TyperCommand):
    # Options as Dora's argparse took them: unique prefixes, either spelling.
    def parse_args(self, ctx: tp.Any, args: list[str]) -> list[str]:
        try:
            args = expand_abbreviations(self.params, args)
        except ValueError as exc:
            ctx.fail(str(exc))  # a usage error: exit 2, with the command's usage line
        return super().parse_args(ctx, args)


def _check_env_options(ctx: typer.Context, backend: str | None, cluster: str | None) -> None:
    """An invalid value that came from an environment variable is reported under the
    variable's name (the user never typed ``--backend``)."""
    def from_env(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return source is not None and source.name == "ENVIRONMENT"

    from .backends import BACKENDS

    if backend is not None and backend not in (*BACKENDS, "ssh"):
        where = f"ADORA_BACKEND={backend}" if from_env("backend") else f"--backend {backend}"
        error(f"Unknown backend in {where}: choose one of {', '.join(BACKENDS)} "
              f"(ssh: with --cluster NAME).", 2)
    if cluster is not None and from_env("cluster"):
        from .clusters import load_cluster

        try:
            load_cluster(cluster)
        except AdoraError as exc:
            error(f"ADORA_CLUSTER={cluster}: {exc}", getattr(exc, "exit_code", 2))


def _main_for_completion(ctx: typer.Context) -> DecoratedMain:
    # While completing, the root callback has not run: read its options directly.
    params = ctx.find_root().params
    from .package import load_main

    return load_main(params.get("package"), params.get("main_module"))


def _complete_grids(ctx: typer.Context, incomplete: str) -> list[str]:
    try:
        from .engine.grids import list_grids

        return [name for name in list_grids(_main_for_completion(ctx))
                if name.startswith(incomplete)]
    except Exception:  # completion must never print a traceback into the shell
        return []


def _complete_sigs(ctx: typer.Context, incomplete: str) -> list[str]:
    try:
        main = _main_for_completion(ctx)
        names = os.listdir(main.dora.dir / main.dora.xps)
        return sorted(name for name in names if name.startswith(incomplete))
    except Exception:
        return []


def _globals(ctx: typer.Context) -> Globals:
    return tp.cast(Globals, ctx.obj)


def error(message: str, code: int = 1) -> tp.NoReturn:
    """Print ``message`` as an adora error and exit with ``code``."""
    prefix = "adora: error:"
    if sys.stderr.isatty() and not os.environ.get("NO_COLOR"):
        prefix = typer.style(prefix, fg="red", bold=True)
    typer.echo(f"{prefix} {message}", err=True)
    raise typer.Exit(code)


def log(*parts: tp.Any) -> None:
    typer.echo(" ".join(str(p) for p in parts), err=True)


def _show_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"adora {__version__}")
        raise typer.Exit()


@app.callback()
def _callback(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_show_version,
                                 help="Print adora's version and exit."),
    package: str = typer.Option(None, "-P", "--package",
                                help="Training package (default: $ADORA_PACKAGE, $DORA_PACKAGE, "
                                     "or the one package in the current folder)."),
    main_module: str = typer.Option(None, "--main-module", "--main_module",
                                    help="Module of the package holding `main` (default: train)."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logs."),
) -> None:
    ctx.obj = Globals(package=package, main_module=main_module, verbose=verbose)
    if verbose:
        from .log import setup_logging

        setup_logging(verbose=True)


def _argv_with_sig(main: DecoratedMain, from_sig: str | None, argv: list[str] | None) -> list[str]:
    argv = list(argv or [])
    if from_sig is not None:
        argv = main.get_argv_from_sig(from_sig) + argv
        log("Using the arguments of", from_sig, ":", " ".join(argv))
    return argv


FROM_SIG = typer.Option(None, "-f", "--from-sig", "--from_sig", autocompletion=_complete_sigs,
                        help="Start from the arguments of the XP with this signature.")
ARGV = typer.Argument(None, help="Training arguments (put `--` before them).")
NO_GIT_SAVE = typer.Option(False, "--no-git-save", "--no_git_save",
                           help="Submit from the current code, not a snapshot (turns off "
                                "git_save for this command).")


@app.command(cls=_Command, context_settings={"allow_interspersed_args": False})
def run(
    ctx: typer.Context,
    from_sig: str = FROM_SIG,
    ddp: bool = typer.Option(False, "-d", "--ddp",
                             help="Start local DDP workers (rank > 0 log to "
                                  "<xp folder>/worker_<rank>.log)."),
    ddp_workers: int = typer.Option(None, "--ddp-workers", "--ddp_workers",
                                    help="Number of DDP workers (implies -d; default: the "
                                         "number of GPUs, at least 1)."),
    git_save: bool = typer.Option(False, "--git-save", "--git_save",
                                  help="Run from a snapshot of the code in <dir>/codes."),
    clear: bool = typer.Option(False, "--clear", help="Delete the XP folder first."),
    force: bool = typer.Option(False, "--force",
                               help="Run even if the XP has a live job or another process "
                                    "trains it."),
    argv: list[str] = ARGV,
) -> None:
    """Run one XP in the foreground, in this process (-d: as local DDP workers)."""
    import os

    from .main import FORCE_RUN_ENV
    from .run import clear_xp, refuse_if_live_job, run_xp

    g = _globals(ctx)
    main = g.load_main()
    argv = _argv_with_sig(main, from_sig, argv)
    xp = main.get_xp(argv)
    ddp = ddp or ddp_workers is not None
    if force:
        os.environ[FORCE_RUN_ENV] = "1"
    else:
        refuse_if_live_job(main, xp, warn=log)
    if clear:
        main.check_collision(xp)  # never delete the folder of another experiment
        if clear_xp(xp):
            log("Deleted", xp.folder)
    from .git_save import GIT_SAVE_DONE_ENV

    # As Dora: this process runs with git_save as this command says, whatever the
    # decorator says (the XP's code is the snapshot only with --git_save).
    main.dora.git_save = bool(git_save or os.environ.get(GIT_SAVE_DONE_ENV))
    if git_save and not os.environ.get(GIT_SAVE_DONE_ENV):
        from .git_save import run_from_snapshot

        global_args = (["-P", g.package] if g.package else []) + (
            ["--main-module", g.main_module] if g.main_module else [])
        run_from_snapshot(main, xp, argv, ddp=ddp, ddp_workers=ddp_workers, verbose=g.verbose,
                          global_args=global_args, force=force)
    if ddp and not os.environ.get("RANK"):  # under torchrun, RANK is set: just run
        from .ddp import start_ddp_workers

        try:
            raise typer.Exit(start_ddp_workers(main, argv, ddp_workers))
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    global _user_code_running
    _user_code_running = True
    run_xp(main, argv)


@app.command(cls=_Command)
def info(
    ctx: typer.Context,
    from_sig: str = FROM_SIG,
    job_id: str = typer.Option(None, "-j", "--job-id", "--job_id",
                               help="Select the XP by one of its job ids."),
    metrics: bool = typer.Option(False, "-m", "--metrics", help="Show the last metrics."),
    show_log: bool = typer.Option(False, "-l", "--log", help="Print the job's log."),
    tail: bool = typer.Option(False, "-t", "--tail", help="Follow the job's log."),
    cancel: bool = typer.Option(False, "-C", "--cancel", help="Cancel the XP's job."),
    argv: list[str] = ARGV,
) -> None:
    """Show an XP: signature, name, folder, job and log; -m its last metrics."""
    main = _globals(ctx).load_main()
    if job_id is not None:
        if argv or from_sig:
            error("-j selects the XP: give no other arguments.", 2)
        from .cli_grid import folder_of_job

        xp = main.get_xp_from_sig(folder_of_job(main, job_id).name)
    else:
        argv = _argv_with_sig(main, from_sig, argv)
        xp = main.get_xp(argv)
    main.check_collision(xp)
    typer.echo(f"sig: {xp.sig}")
    typer.echo(f"name: {main.get_name(xp) or '(defaults)'}")
    typer.echo(f"argv: {json.dumps(xp.argv)}")
    typer.echo(f"folder: {xp.folder}{'' if xp.folder.exists() else ' (not created yet)'}")
    if metrics:
        history = main.get_xp_history(xp)
        last = json.dumps(history[-1]) if history else "none"
        typer.echo(f"Metrics[{len(history)}]: {last}")
    from .jobs import load_record

    if load_record(xp.folder) is not None or show_log or tail or cancel:
        from .cli_grid import info_job

        info_job(main, xp, show_log=show_log, follow=tail, cancel=cancel)


@app.command(cls=_Command, context_settings={"allow_interspersed_args": False})
def launch(
    ctx: typer.Context,
    from_sig: str = FROM_SIG,
    attach: bool = typer.Option(False, "-a", "--attach",
                                help="Follow the job; Ctrl-C cancels it."),
    no_tail: bool = typer.Option(False, "--no-tail", "--no_tail",
                                 help="Return once submitted."),
    cancel: bool = typer.Option(False, "-C", "--cancel", help="Cancel the XP's job."),
    clear: bool = typer.Option(False, "--clear",
                               help="Cancel, delete the XP folder, submit again."),
    retry: bool = typer.Option(False, "-r", "--retry", help="Resubmit if failed/cancelled."),
    replace: bool = typer.Option(False, "-R", "--replace", help="Replace a pending/running job."),
    replace_done: bool = typer.Option(False, "-D", "--replace-done", "--replace_done",
                                      help="Resubmit if completed."),
    backend: str = typer.Option("auto", "-b", "--backend", envvar="ADORA_BACKEND",
                                help="local, slurm, or auto."),
    max_parallel: int = typer.Option(None, "--max-parallel",
                                     help="Local backend: XPs running at once (kept for later "
                                          "runs until given again)."),
    cluster: str = typer.Option(None, "--cluster", envvar="ADORA_CLUSTER",
                                help="Run on this remote Slurm cluster over SSH."),
    gpus: int = typer.Option(None, "-g", "--gpus", help="Override SlurmConfig.gpus."),
    partition: str = typer.Option(None, "-p", "--partition", help="Override the partition."),
    dev: bool = typer.Option(False, "--dev", help="Same as --partition devlab (as Dora)."),
    comment: str = typer.Option(None, "-c", "--comment", help="Slurm comment."),
    constraint: str = typer.Option(None, "--constraint", help="Slurm constraint."),
    no_git_save: bool = NO_GIT_SAVE,
    argv: list[str] = ARGV,
) -> None:
    """Submit one XP and follow its log (an XP with a job keeps it, unless -r/-R/-D)."""
    from . import cli_grid
    from .conf import SubmitRules

    main = _globals(ctx).load_main()
    if no_git_save:
        main.dora.git_save = False
    argv = _argv_with_sig(main, from_sig, argv)
    if dev:
        partition = "devlab"
    overrides = {k: v for k, v in dict(gpus=gpus, partition=partition, comment=comment,
                                       constraint=constraint).items() if v is not None}
    _check_env_options(ctx, backend, cluster)
    code = cli_grid.launch_command(
        main, argv, attach=attach, tail=not no_tail, cancel=cancel, clear=clear,
        rules=SubmitRules(retry=retry, replace=replace, replace_done=replace_done),
        backend=backend, max_parallel=max_parallel, slurm_overrides=overrides,
        cluster=cluster)
    raise typer.Exit(code)


@app.command("export", cls=_Command)
def export_(
    ctx: typer.Context,
    sigs: list[str] = typer.Argument(..., help="Signatures of the XPs to export."),
) -> None:
    """Print a block of text that `adora import` (or `dora import`) turns back into XPs."""
    from .share import dump

    main = _globals(ctx).load_main()
    all_argv = [main.get_xp_from_sig(sig).argv for sig in sigs]
    typer.echo("")
    typer.echo(dump(all_argv))
    typer.echo("")


@app.command("import", cls=_Command)
def import_(ctx: typer.Context) -> None:
    """Read a block made by `adora export` (or `dora export`) on stdin; initialise its XPs."""
    from .share import load, read_block

    main = _globals(ctx).load_main()
    block = read_block(sys.stdin)
    if not block:
        error("Nothing to import: paste the block printed by `adora export` on stdin.")
    for argv in load(block):
        xp = main.get_xp(argv)
        main.init_xp(xp)
        typer.echo(f"Imported XP {xp.sig}: {main.get_name(xp)}")


@app.command(cls=_Command, context_settings={"allow_interspersed_args": True})
def grid(
    ctx: typer.Context,
    words: list[str] = typer.Argument(
        None, metavar="[GRID]... [PATTERN]...", autocompletion=_complete_grids,
        help="Grids (modules <package>.grids.<name>; several are watched together), then "
             "patterns: keep XPs whose name contains every pattern; !pat excludes; an "
             "integer selects by index."),
    retry: bool = typer.Option(False, "-r", "--retry", help="Resubmit failed/cancelled XPs."),
    replace: bool = typer.Option(False, "-R", "--replace",
                                 help="Cancel and resubmit pending/running XPs."),
    replace_done: bool = typer.Option(False, "-D", "--replace-done", "--replace_done",
                                      help="Resubmit completed XPs."),
    cancel: bool = typer.Option(False, "-C", "--cancel", help="Cancel the selected XPs' jobs."),
    clear: bool = typer.Option(False, "--clear",
                               help="Cancel, delete the XP folders, start again (asks)."),
    dry_run: bool = typer.Option(False, "--dry-run", "--dry_run",
                                 help="Show what would be done, change nothing."),
    init: bool = typer.Option(False, "--init", help="Write .argv.json of every XP (for -f SIG)."),
    yes: bool = typer.Option(False, "-y", "--yes", help="Confirm cancellations without asking."),
    watch: bool = typer.Option(False, "-w", "--watch",
                               help="Keep the table live until every XP is done (Ctrl-C "
                                    "stops watching; jobs keep running). Not on a terminal: "
                                    "a timestamped line per state change."),
    interval: float = typer.Option(None, "-i", "--interval",
                                   help="Refresh period in minutes, 0 or more (default: "
                                        "adaptive; at least every second)."),
    no_monitoring: bool = typer.Option(False, "--no-monitoring", "--no_monitoring",
                                       hidden=True, help="Accepted for Dora compatibility."),
    as_json: bool = typer.Option(False, "--json", help="Print states and metrics as JSON."),
    metrics: str = typer.Option(None, "--metrics", metavar="NAMES",
                                help="Only these metric columns, comma-separated "
                                     "(valid.loss,valid.acc; a group name keeps the group)."),
    trim: int = typer.Option(None, "-T", "--trim", help="Trim histories to XP #IDX's length."),
    trim_last: bool = typer.Option(False, "-L", "--trim-last", "--trim_last",
                                   help="Trim histories to the shortest."),
    folder: int = typer.Option(None, "-f", "--folder", help="Print the folder of XP #IDX."),
    show_log: int = typer.Option(None, "-l", "--log", help="Print the log of XP #IDX."),
    tail: int = typer.Option(None, "-t", "--tail", help="Follow the log of XP #IDX."),
    backend: str = typer.Option("auto", "-b", "--backend", envvar="ADORA_BACKEND",
                                help="local, slurm, or auto (Slurm if sbatch is found)."),
    max_parallel: int = typer.Option(None, "--max-parallel",
                                     help="Local backend: XPs of this output folder running at "
                                          "once (default: CPUs). Kept for later runs until "
                                          "given again."),
    cluster: str = typer.Option(None, "--cluster", envvar="ADORA_CLUSTER",
                                help="Run on this remote Slurm cluster over SSH "
                                     "(clusters.toml or [tool.adora.clusters])."),
    gpus: int = typer.Option(None, "-g", "--gpus", help="Override SlurmConfig.gpus."),
    partition: str = typer.Option(None, "-p", "--partition", help="Override the partition."),
    dev: bool = typer.Option(False, "--dev", help="Same as --partition devlab (as Dora)."),
    comment: str = typer.Option(None, "-c", "--comment", help="Slurm comment."),
    constraint: str = typer.Option(None, "--constraint", help="Slurm constraint."),
    no_git_save: bool = NO_GIT_SAVE,
) -> None:
    """Make the backend match a grid: submit what is missing, cancel what was removed, and
    show a table of states and metrics."""
    from . import cli_grid

    g = _globals(ctx)
    main = g.load_main()
    if no_git_save:
        main.dora.git_save = False
    if not words:
        cli_grid.print_grids(main)
        return
    names, patterns = cli_grid.split_grids(main, list(words))
    if sum(x is not None for x in (folder, show_log, tail)) > 1:
        error("-f, -l and -t cannot be combined.", 2)
    if dev:
        partition = "devlab"
    overrides = {k: v for k, v in dict(gpus=gpus, partition=partition, comment=comment,
                                       constraint=constraint).items() if v is not None}
    _check_env_options(ctx, backend, cluster)
    code = cli_grid.grid_command(
        main, names, patterns=patterns, retry=retry, replace=replace,
        replace_done=replace_done, cancel=cancel, clear=clear, dry_run=dry_run, init=init,
        yes=yes, watch=watch, interval=interval, as_json=as_json, trim=trim,
        trim_last=trim_last, folder=folder, show_log=show_log, tail=tail, backend=backend,
        max_parallel=max_parallel, slurm_overrides=overrides, cluster=cluster,
        metrics=None if metrics is None else [m.strip() for m in metrics.split(",")])
    global _prompt_exit
    _prompt_exit = True  # nothing of the training code's runs here (see entry_point)
    raise typer.Exit(code)


cluster_app = typer.Typer(help="Remote clusters (configured in clusters.toml or pyproject).",
                          no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("list")
def cluster_list() -> None:
    """List the configured clusters and where each is defined."""
    from .clusters import available_clusters, user_clusters_file

    clusters = available_clusters()
    if not clusters:
        typer.echo(f"No cluster configured (see {user_clusters_file()}).")
    for name, path in sorted(clusters.items()):
        typer.echo(f"{name}\t{path}")


@cluster_app.command("check")
def cluster_check(name: str = typer.Argument(..., help="Cluster name.")) -> None:
    """Check the SSH connection, Slurm's commands, the remote Python and the workdir."""
    import anyio

    from .backends.ssh import check_cluster
    from .clusters import load_cluster

    config = load_cluster(name)
    results = anyio.run(check_cluster, config)
    for what, ok, detail in results:
        typer.echo(f"{'ok  ' if ok else 'FAIL'}  {what}: {detail}")
    if not all(ok for _, ok, _ in results):
        raise typer.Exit(1)


_GLOBAL_WITH_VALUE = ("-P", "--package", "--main-module", "--main_module")
_GLOBAL_FLAGS = ("-v", "--verbose")


def hoist_global_options(args: list[str]) -> list[str]:
    """Move global options given after the command to the front (Dora refused them there).

    Nothing after ``--`` is touched: those are training arguments.
    """
    if not args or args[0].startswith("-"):
        return args
    head: list[str] = []
    rest: list[str] = [args[0]]
    i = 1
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        name = arg.split("=", 1)[0]
        if name in _GLOBAL_WITH_VALUE:
            if "=" in arg:
                head.append(arg)
            elif i + 1 < len(args):
                head += args[i:i + 2]
                i += 1
            else:
                rest.append(arg)
        elif arg in _GLOBAL_FLAGS:
            head.append(arg)
        else:
            rest.append(arg)
        i += 1
    return head + rest


#: Set while the training code runs in this process (`adora run`): its errors are its
#: own, and keep their tracebacks.
_user_code_running = False


def _expected_error(exc: BaseException) -> AdoraError | OSError | None:
    """The error to report without a traceback: an `AdoraError`, or an `OSError` of
    adora's (disk full, read-only folder...); also the first such error of an exception
    group made only of them (concurrent tasks). None for anything else: a bug, whose
    traceback is kept."""
    if isinstance(exc, AdoraError):
        return exc
    if isinstance(exc, OSError):
        return None if _user_code_running else exc
    if sys.version_info >= (3, 11):
        group: type[BaseException] = BaseExceptionGroup  # noqa: F821 (new in 3.11)
    else:  # anyio's backport
        from exceptiongroup import BaseExceptionGroup as group
    if isinstance(exc, group):
        leaves = [_expected_error(e) for e in exc.exceptions]
        if leaves and all(leaf is not None for leaf in leaves):
            return leaves[0]
    return None


def main(args: list[str] | None = None) -> None:
    """Entry point of the `adora` command."""
    from .errors import os_error_message

    args = hoist_global_options(list(sys.argv[1:] if args is None else args))
    try:
        app(args=args, prog_name="adora", standalone_mode=True)
    except Exception as exc:  # exception groups of Exceptions included
        expected = _expected_error(exc)
        if expected is None:
            raise
        if isinstance(expected, BrokenPipeError):
            sys.exit(1)  # the reader of our output is gone (`adora grid g | head`)
        if isinstance(expected, AdoraError):
            message, code = str(expected), expected.exit_code
        else:
            message, code = os_error_message(expected), 1
        try:
            error(message, code)
        except typer.Exit as stop:
            sys.exit(stop.exit_code)


#: Set by commands after which the process may end without interpreter teardown.
_prompt_exit = False


def entry_point() -> None:
    """The ``adora`` command (and ``python -m adora``): `main`, then a prompt exit.

    After ``adora grid``, once its output is flushed, the process ends without
    tearing down every object the run built (~15 ms for a 1,000-XP grid, paid by
    every re-run and every refresh script): its files are written and closed
    before it returns, and jobs run detached. Commands that run training code
    (``run``, the DDP workers) exit normally: their interpreter shutdown stops
    what the training started (e.g. data-loader worker processes). Tests call
    `main`, which always exits normally.
    """
    try:
        main()
        code: int = 0
    except SystemExit as stop:
        if not _prompt_exit:
            raise
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    if not _prompt_exit:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # e.g. `adora grid g | head`: the reader is gone
        pass
    import logging

    logging.shutdown()
    os._exit(code)
