"""git_save: every job runs from a frozen copy of the code, as Dora's ``git_save``.

With ``argparse_main(..., git_save=True)`` (Hydra: ``dora.git_save: true``),
each submission snapshots the project (`adora.snapshot`: tracked files and
untracked files git does not ignore, uncommitted changes included; unlike
Dora, the repository need not be clean; the grids package and the output
folder are left out) into ``<dir>/codes/<hash>/``, links
``<xp folder>/code`` to it, and starts the job from it. Editing the code
afterwards changes neither running nor requeued jobs; the next submission of
changed code makes a new snapshot, identical code reuses the existing one.

The job's working directory is then the snapshot. `to_absolute_path` (and
``DoraConfig.dir``) still resolve relative paths against the directory the
user started from, found in ``$_ADORA_ORIGINAL_DIR``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import typing as tp
from contextlib import contextmanager
from pathlib import Path

if tp.TYPE_CHECKING:
    from .backends.base import LaunchSpec
    from .main import DecoratedMain
    from .xp import XP

__all__ = ["GIT_SAVE_DONE_ENV", "ORIGINAL_DIR_ENV", "CommandError", "assign_clone",
           "check_repo_clean", "enter_clone", "get_git_commit", "get_git_root", "get_new_clone",
           "launch_spec", "original_dir", "project_root", "rerun_command", "run_command",
           "shallow_clone", "snapshot_code", "to_absolute_path"]

logger = logging.getLogger(__name__)

#: Environment variable holding the directory the user started from.
ORIGINAL_DIR_ENV = "_ADORA_ORIGINAL_DIR"
_DORA_ORIGINAL_DIR_ENV = "_DORA_ORIGINAL_DIR"
#: Set in a process already re-started from a snapshot by ``adora run --git-save``.
GIT_SAVE_DONE_ENV = "_ADORA_GIT_SAVE_DONE"

AnyPath = tp.TypeVar("AnyPath", str, Path)


def original_dir() -> Path | None:
    """The directory the user started from, if running from a snapshot."""
    value = os.environ.get(ORIGINAL_DIR_ENV) or os.environ.get(_DORA_ORIGINAL_DIR_ENV)
    return Path(value) if value else None


def to_absolute_path(path: AnyPath) -> AnyPath:
    """Make ``path`` absolute relative to the directory the user started from.

    Falls back on Hydra's original working directory when a Hydra app runs
    (Hydra changes directory to the XP folder), then on the current directory.
    The return type is the type given (`str` or `Path`).
    """
    klass = type(path)
    p = Path(path)
    if p.is_absolute():
        return klass(p)  # type: ignore[return-value]
    base = original_dir()
    if base is None and "hydra" in sys.modules:
        try:
            from hydra.utils import get_original_cwd

            base = Path(get_original_cwd())
        except (ImportError, ValueError):
            base = None  # Hydra imported but no app running
    if base is None:
        base = Path(os.getcwd())
    return klass(base / p)  # type: ignore[return-value]


# -- snapshots of the code -----------------------------------------------------------------------

def project_root(cwd: Path | None = None) -> Path:
    """The folder snapshotted: the top of the git work tree holding ``cwd``, else ``cwd``."""
    cwd = (cwd or Path.cwd()).resolve()
    try:
        proc = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd,
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return cwd
    if proc.returncode != 0 or not proc.stdout.strip():
        return cwd
    return Path(proc.stdout.strip()).resolve()


def _grids_folder(main: DecoratedMain) -> Path | None:
    # The grids package: scheduling configuration the jobs never import (Dora let it
    # change without a commit; here it stays out of the snapshot, so editing a grid does
    # not make a new copy of the code).
    import importlib.util

    name = main.dora.grid_package or f"{main.package}.grids"
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]).resolve()


def _excludes(main: DecoratedMain, root: Path) -> list[Path]:
    # Never snapshot the outputs: the whole output folder when it lies inside the
    # project, else (output folder = project or above it) adora's folders in it.
    dirs = [main.dora.dir] + ([main.dora.shared] if main.dora.shared is not None else [])
    out: list[Path] = []
    for folder in dirs:
        folder = Path(folder).resolve()
        if folder != root and folder.is_relative_to(root):
            out.append(folder)
        else:
            out += [folder / name for name in (main.dora.xps, main.dora._codes, main.dora._grids,
                                               main.dora.shep.by_id, main.dora.shep.arrays,
                                               main.dora.shep.orphans, ".adora")]
    grids = _grids_folder(main)
    if grids is not None and grids != root and grids.is_relative_to(root):
        out.append(grids)
    return out


def snapshot_code(main: DecoratedMain, cwd: Path | None = None) -> tuple[Path, Path]:
    """Snapshot the project of ``cwd`` into ``<dir>/codes/<hash>``.

    Returns the snapshot folder and the folder in it that corresponds to ``cwd``
    (where jobs start). Identical code gives the existing folder back.
    ``post_git_save_commands`` run in a new snapshot before it is published.
    """
    from .snapshot import SnapshotChangedError, materialize, snapshot

    cwd = (cwd or Path.cwd()).resolve()
    root = project_root(cwd)
    codes = main.dora.dir / main.dora._codes

    def post_commands(folder: Path) -> None:
        for command in main.dora.post_git_save_commands:
            proc = subprocess.run(command, shell=True, cwd=folder, capture_output=True,
                                  text=True)
            if proc.returncode:
                from .errors import CommandError

                raise CommandError(
                    ["sh", "-c", command], proc.returncode, proc.stdout, proc.stderr,
                    message=f"post_git_save_commands: {command!r} failed ({proc.returncode}) "
                            f"in {folder}:\n{proc.stdout}{proc.stderr}")

    for attempt in range(3):
        snap = snapshot(root, exclude=_excludes(main, root))
        try:
            clone = materialize(snap, codes, on_create=post_commands)
            break
        except SnapshotChangedError:
            if attempt == 2:
                raise
            logger.info("A file changed while snapshotting the code: trying again.")
    return clone, clone / cwd.relative_to(root)


def get_new_clone(main: DecoratedMain) -> Path:
    """Dora's name: the snapshot folder of the current code (see `snapshot_code`)."""
    return snapshot_code(main)[0]


def assign_clone(xp: XP, clone: Path) -> None:
    """Point ``<xp folder>/code`` to ``clone`` (relative link); a real folder there is
    renamed ``old_code``, as Dora."""
    xp.folder.mkdir(parents=True, exist_ok=True)
    code = xp.folder / "code"
    if code.is_dir() and not code.is_symlink():
        code.rename(code.parent / "old_code")
    tmp = code.with_name(f".code.{os.getpid()}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(os.path.relpath(clone, xp.folder))
    os.replace(tmp, code)


@contextmanager
def enter_clone(clone: Path) -> tp.Iterator[None]:
    """Move to the folder of ``clone`` that corresponds to the current one, for the duration
    (``$_ADORA_ORIGINAL_DIR`` then names the current folder)."""
    cwd = Path.cwd().resolve()
    target = clone / cwd.relative_to(project_root(cwd))
    old = os.environ.get(ORIGINAL_DIR_ENV)
    os.environ[ORIGINAL_DIR_ENV] = str(original_dir() or cwd)
    os.chdir(target)
    try:
        yield
    finally:
        os.chdir(cwd)
        if old is None:
            del os.environ[ORIGINAL_DIR_ENV]
        else:
            os.environ[ORIGINAL_DIR_ENV] = old


def launch_spec(main: DecoratedMain, xps: tp.Sequence[XP] = ()) -> LaunchSpec:
    """How the backends start ``xps``: from the current folder, or with ``git_save`` from
    a snapshot of the code (each XP's ``code`` link is set to it). Stale rendezvous files
    of these XPs are removed, as Dora does at submission."""
    from .backends.base import LaunchSpec

    if main.dora.use_rendezvous:
        for xp in xps:  # a file left by an interrupted run would mislead the new workers
            xp.rendezvous_file.unlink(missing_ok=True)
    if not main.dora.git_save:
        return LaunchSpec(package=main.package, main_module=main.main_module, cwd=Path.cwd())
    clone, start = snapshot_code(main)
    for xp in xps:
        assign_clone(xp, clone)
    env = dict(os.environ)
    env[ORIGINAL_DIR_ENV] = str(original_dir() or Path.cwd())
    return LaunchSpec(package=main.package, main_module=main.main_module, cwd=start, env=env)


def rerun_command(main: DecoratedMain, argv: tp.Sequence[str], *, ddp: bool = False,
                  ddp_workers: int | None = None, verbose: bool = False,
                  global_args: tp.Sequence[str] | None = None, force: bool = False
                  ) -> list[str]:
    """The ``python -m adora ... run`` command that runs ``argv`` again. Pure.

    ``global_args``: the global options as the user gave them (``-P``,
    ``--main_module``), so the package and main module are found again the way they
    were found the first time, whatever module defines the main function; None:
    name ``main``'s own package and module.
    """
    cmd = [sys.executable, "-m", "adora"]
    if global_args is None:
        cmd += ["-P", main.package, "--main-module", main.main_module]
    else:
        cmd += list(global_args)
    if verbose:
        cmd.append("-v")
    cmd.append("run")
    if ddp:
        cmd.append("-d")
        if ddp_workers is not None:
            cmd += ["--ddp-workers", str(ddp_workers)]
    if force:
        cmd.append("--force")
    return cmd + ["--", *argv]


def run_from_snapshot(main: DecoratedMain, xp: XP, argv: tp.Sequence[str], *,
                      ddp: bool = False, ddp_workers: int | None = None,
                      verbose: bool = False, global_args: tp.Sequence[str] | None = None,
                      force: bool = False) -> tp.NoReturn:
    """``adora run --git-save``: snapshot the code, link the XP to it, and replace this
    process by the same ``adora run`` started from the snapshot."""
    clone, start = snapshot_code(main)
    assign_clone(xp, clone)
    env = dict(os.environ)
    env[GIT_SAVE_DONE_ENV] = "1"
    env[ORIGINAL_DIR_ENV] = str(original_dir() or Path.cwd())
    cmd = rerun_command(main, argv, ddp=ddp, ddp_workers=ddp_workers, verbose=verbose,
                        global_args=global_args, force=force)
    logger.info("Running from the code snapshot %s", clone)
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(start)
    os.execve(cmd[0], cmd, env)


# Dora's git helpers, by their names: projects call them to log or check their code.

class CommandError(Exception):
    """A command of `run_command` failed; the message holds its output."""


def run_command(command: str | tp.Sequence[str], **kwargs: tp.Any) -> str:
    """Run ``command`` (stdout and stderr together); return its output, stripped.
    Raises `CommandError` with the output if it fails."""
    import shlex

    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          shell=isinstance(command, str), **kwargs)
    out = proc.stdout.decode(errors="replace")
    if proc.returncode:
        shown = command if isinstance(command, str) else shlex.join(command)
        raise CommandError(f"Command {shown} failed ({proc.returncode}):\n{out}")
    return out.strip()


def get_git_root() -> Path:
    """The root of the git work tree holding the current folder."""
    return Path(run_command(["git", "rev-parse", "--show-toplevel"])).resolve()


def get_git_commit(repo: str | os.PathLike[str] = ".") -> str:
    """The hash of the commit checked out in ``repo``."""
    return run_command(["git", "log", "-1", "--format=%H"], cwd=repo)


def check_repo_clean(root: Path, main: DecoratedMain) -> None:
    """Stop (`log.fatal`) if files outside the grids package have uncommitted changes, as
    Dora's git_save required. adora's own snapshots do not need a clean repository; this
    is for projects that call it themselves."""
    grids = _grids_folder(main)
    dirty = []
    entries = iter(run_command(["git", "status", "--porcelain", "-z"], cwd=root).split("\0"))
    for entry in entries:
        status, path = entry[:2], entry[3:]
        if not path:
            continue
        paths = [path, next(entries, "")] if status[0] in "RC" else [path]  # renames: both
        if any(grids is None or not (root / p).resolve().is_relative_to(grids)
               for p in paths if p):
            dirty.append(path)
    if dirty:
        from .log import fatal

        fatal("Repository is not clean! Commit or ignore these files first:\n  "
              + "\n  ".join(dirty))


def shallow_clone(source: Path, target: Path) -> None:
    """A depth-1 git clone of ``source`` into ``target`` (through ``target.tmp`` and a
    rename, so ``target`` exists only complete), at the commit ``source`` has checked out."""
    tmp = target.parent / f"{target.name}.tmp"
    run_command(["git", "clone", "--depth=1", f"file://{Path(source).resolve()}", str(tmp)])
    commit = get_git_commit(source)
    if get_git_commit(tmp) != commit:  # a commit landed in between: fetch the one we want
        run_command(["git", "fetch", "--depth=1", "origin", commit], cwd=tmp)
        run_command(["git", "checkout", commit], cwd=tmp)
    os.replace(tmp, target)
