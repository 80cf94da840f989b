"""Crash injection for crash-consistency tests, in the spirit of ALICE (OSDI '14).

Runs the adora CLI with a Python audit hook that counts the file-system writes
(and external commands) the process makes under a given folder, and kills the
process with a signal just before the ``k``-th one, i.e. right after the
``k - 1``-th has happened::

    python -m adora.testing.crash --root DIR --at K [--signal KILL|TERM] \\
        [--log EVENTS.txt] -- grid sweep --backend local

``--at 0`` never crashes; with ``--log`` every counted event is written (one
line each, flushed before it happens), so a test first counts the N events of
a clean run, then enumerates ``k = 1 .. N``. With ``--delay S`` the signal comes
``S`` seconds after the ``k``-th event began (from a timer thread), while what it
started may still be under way (a remote command in flight). With ``--event NAME``
only the events named NAME count (``--event adora.remote --at 1``: the first remote
submission). What counts as a write:

- ``open`` for writing, appending or creating (also ``os.open`` with such flags);
- ``os.rename``/``os.replace``, ``os.remove``/``unlink``, ``os.rmdir``,
  ``os.mkdir``, ``os.symlink``, ``os.link``, ``os.truncate``, ``shutil.rmtree``;
- ``subprocess.Popen`` (``sbatch``, ``scancel``, the local runner: a write to
  the outside world);
- ``adora.write`` events that adora raises itself before a database commit
  (the local queue), whose writes happen inside SQLite, out of sight of the hook;
- ``adora.remote`` events that adora raises itself just before and just after a
  remote command that changes the cluster (the SSH backend's submission: files,
  code snapshot and sbatch in one command over an SSH channel, which the hook
  cannot see otherwise).

Only paths under ``--root`` count (the interpreter's own files, such as byte
code, are not the program's state). Run with ``PYTHONDONTWRITEBYTECODE=1`` so
that two runs count the same events.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap
import typing as tp
from pathlib import Path

__all__ = ["clean_env", "crash_command", "install", "main", "run_batch", "write_package"]

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.symlink", "os.link",
                "os.truncate", "shutil.rmtree"}


def _is_write_open(args: tuple[tp.Any, ...]) -> bool:
    mode, flags = (args + (None, None))[1:3]
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


def install(root: str, at: int, sig: int = signal.SIGKILL, log: str | None = None,
            delay: float = 0.0, event: str | None = None) -> None:
    """Count writes under ``root``; send ``sig`` to this process before the ``at``-th
    (``delay`` seconds after it began, if given; only events named ``event`` count,
    if given)."""
    root = os.path.realpath(root)
    count = 0
    log_file = open(log, "a", buffering=1) if log else None  # opened before the hook

    def under_root(path: tp.Any) -> bool:
        if isinstance(path, int) or path is None:
            return False
        try:
            text = os.fsdecode(path)
        except TypeError:
            return False
        full = os.path.abspath(text)
        return any(p == root or p.startswith(root + os.sep)
                   for p in (full, os.path.realpath(full)))

    only = event

    def hook(event: str, args: tuple[tp.Any, ...]) -> None:
        nonlocal count
        if only is not None and event != only:
            return
        if event == "open":
            counted = _is_write_open(args) and under_root(args[0])
        elif event in _PATH_EVENTS:
            counted = under_root(args[0])
        elif event == "subprocess.Popen":
            counted = True
        elif event in ("adora.write", "adora.remote"):
            counted = True
        else:
            return
        if not counted:
            return
        count += 1
        if log_file is not None:
            log_file.write(f"{count} {event} {args[0]!s}\n")
        if count == at and delay > 0:
            import threading

            threading.Timer(delay, os.kill, (os.getpid(), sig)).start()
        elif count == at:
            os.kill(os.getpid(), sig)
            if sig != signal.SIGKILL:
                # A handler may have turned the signal into an exception or a
                # graceful stop; the hook itself returns and lets that happen.
                return

    sys.addaudithook(hook)


# -- for the tests that use it -------------------------------------------------------

def crash_command(root: str | os.PathLike[str], at: int, args: tp.Sequence[str], *,
                  sig: str = "KILL", log: str | os.PathLike[str] | None = None,
                  delay: float = 0.0, event: str | None = None) -> list[str]:
    """The command running ``adora ARGS`` killed before its ``at``-th write under ``root``
    (or ``delay`` seconds after that write began)."""
    cmd = [sys.executable, "-m", "adora.testing.crash", "--root", os.fspath(root), "--at",
           str(at), "--signal", sig]
    if delay:
        cmd += ["--delay", str(delay)]
    if event is not None:
        cmd += ["--event", event]
    if log is not None:
        cmd += ["--log", os.fspath(log)]
    return cmd + ["--", *args]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what selects a package or a distributed rank,
    plus ``extra``; byte code is not written, so two runs count the same writes."""
    out = {k: v for k, v in os.environ.items()
           if k not in ("ADORA_PACKAGE", "DORA_PACKAGE", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    out["PYTHONDONTWRITEBYTECODE"] = "1"
    out.update(extra)
    return out


def run_batch(commands: tp.Sequence[tuple[list[str], str | os.PathLike[str]]],
              env: dict[str, str], *, parallel: int = 2, timeout: float = 300
              ) -> list[subprocess.CompletedProcess[str]]:
    """Run ``(argv, cwd)`` commands, ``parallel`` at a time; their results, in order."""
    results: list[subprocess.CompletedProcess[str] | None] = [None] * len(commands)
    running: list[tuple[int, subprocess.Popen[str]]] = []
    waiting = list(enumerate(commands))
    while waiting or running:
        while waiting and len(running) < parallel:
            i, (argv, cwd) = waiting.pop(0)
            running.append((i, subprocess.Popen(argv, cwd=cwd, env=env, text=True,
                                                stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)))
        i, proc = running.pop(0)
        out, err = proc.communicate(timeout=timeout)
        results[i] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return [r for r in results if r is not None]


def write_package(root: Path, name: str, train: str, grids: tp.Mapping[str, str]) -> Path:
    """A training package ``name`` under ``root``: ``train.py`` and ``grids/<grid>.py``."""
    pkg = root / name
    (pkg / "grids").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "train.py").write_text(train)
    (pkg / "grids" / "__init__.py").write_text("")
    for grid, text in grids.items():
        (pkg / "grids" / f"{grid}.py").write_text(textwrap.dedent(text))
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m adora.testing.crash")
    parser.add_argument("--root", required=True)
    parser.add_argument("--at", type=int, default=0)
    parser.add_argument("--signal", default="KILL", choices=["KILL", "TERM", "INT"])
    parser.add_argument("--log")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--event")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    install(args.root, args.at, getattr(signal, f"SIG{args.signal}"), args.log, args.delay,
            args.event)
    from adora.cli import main as cli_main

    sys.argv = ["adora", *rest]
    cli_main()


if __name__ == "__main__":
    main()
