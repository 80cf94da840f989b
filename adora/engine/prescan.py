"""A look at a grid's XP folders, taken by a second process while the grid is evaluated.

A re-run of a big grid reads two things per XP that do not depend on the evaluation:
the ``.argv.json`` its folder holds (the signature-collision check) and whether it has
a metrics history at all. For 100,000 XPs that is 300,000 system calls and about 2 s of
Python; evaluation is another ~2 s of Python on one core. A child process does the
former on the other core while the latter runs: it lists the grid's members (its
``grids/NAME`` links, i.e. the XPs of the last run) and reports, for each, the bytes of
its ``.argv.json`` and whether a history file exists.

What the scan says is used only where staleness is harmless:

* ``.argv.json`` is created once with its folder and never rewritten with another
  XP's argv, so bytes read before the output-folder lock are the bytes under it. An XP
  the scan did not see or found no ``.argv.json`` for (a new member, a folder made
  since, an unreadable file) is checked as before, under the lock. Job records are
  never taken from the scan: they are read under the lock.
* "No history" makes the first metrics read skip that XP: the table shows its
  metrics as they were when the command started (a watch reads them on its next
  refresh). It applies only where metrics are local files (not over SSH).

This file runs as a script (``python -I -S prescan.py ...``): its top level imports only
the standard library, so the child starts in tens of milliseconds.
"""

from __future__ import annotations

import marshal
import os
import sys
import typing as tp

#: Below this many members the child costs more than it saves (it starts in ~30 ms).
MIN_MEMBERS = 5_000

#: sig -> (bytes of .argv.json, or None when there is none; a history file exists)
Scan = dict[str, tuple[bytes | None, bool]]

_MAX_ARGV = 1 << 20  # an .argv.json is small: a bigger file is left to the normal check
_CHUNK = 1 << 16  # not _MAX_ARGV: a 1 MB buffer per read tripled the scan's time


def scan(xps_dir: str, sigs: tp.Iterable[str], history_names: tp.Sequence[str]) -> Scan:
    """What the folders ``xps_dir/SIG`` hold (blocking). A folder whose ``.argv.json``
    cannot be read for another reason than its absence is left out (checked later)."""
    out: Scan = {}
    flags = os.O_RDONLY | os.O_CLOEXEC
    try:
        # Paths relative to the open XPs folder: the kernel walks 2 components, not 7+.
        root = os.open(xps_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return out
    try:
        for sig in sigs:
            try:
                fd = os.open(f"{sig}/.argv.json", flags, dir_fd=root)
            except (FileNotFoundError, NotADirectoryError):
                argv = None
            except OSError:
                continue
            else:
                try:
                    chunks = []
                    size = 0
                    while (chunk := os.read(fd, _CHUNK)) and size < _MAX_ARGV:
                        chunks.append(chunk)
                        size += len(chunk)
                except OSError:
                    continue
                finally:
                    os.close(fd)
                if size >= _MAX_ARGV:
                    continue
                argv = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            history = not history_names  # no names given: unknown, read as usual
            for name in history_names:
                try:
                    os.stat(f"{sig}/{name}", dir_fd=root)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                except OSError:
                    pass  # cannot tell: read it as usual
                history = True
                break
            out[sig] = (argv, history)
    finally:
        os.close(root)
    return out


def _child(argv: list[str]) -> None:
    # argv: XPS_DIR GRID_DIR HISTORY_NAME... ; the scan goes to stdout, marshalled.
    xps_dir, grid_dir, *history_names = argv
    try:
        sigs = os.listdir(grid_dir)
    except OSError:
        sigs = []
    sys.stdout.buffer.write(marshal.dumps(scan(xps_dir, sigs, history_names)))
    sys.stdout.buffer.flush()


class Prescan:
    """A `scan` of the members of a grid, made by a child process (`start` it, evaluate
    the grid, then ask for the `result`)."""

    def __init__(self, process: tp.Any) -> None:
        self._process = process

    @classmethod
    async def start(cls, xps_dir: str, grid_dir: str, history_names: tp.Sequence[str]
                    ) -> Prescan | None:
        """Start the child; None when the grid has fewer than `MIN_MEMBERS` members (or
        the child cannot start): the caller then reads everything itself.

        Call it *before* the evaluation starts: while a thread evaluates, this event
        loop gets the GIL back only every switch interval after each system call, and
        the child would start when the evaluation is over (measured: 1.4 s late)."""
        import itertools
        import subprocess

        import anyio
        import anyio.to_thread

        def _count() -> int:
            # Up to MIN_MEMBERS: the child lists the folder whole anyway.
            try:
                with os.scandir(grid_dir) as entries:
                    return sum(1 for _ in itertools.islice(entries, MIN_MEMBERS))
            except OSError:
                return 0

        if await anyio.to_thread.run_sync(_count) < MIN_MEMBERS:
            return None
        try:
            process = await anyio.open_process(
                [sys.executable, "-I", "-S", __file__, xps_dir, grid_dir, *history_names],
                stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            return None
        return cls(process)

    async def result(self) -> Scan | None:
        """The scan, or None if the child failed. Its output waits in the pipe (the
        child blocks on it) until this reads it, after the evaluation."""
        import anyio.to_thread

        process = self._process
        chunks = [chunk async for chunk in process.stdout]
        if await process.wait() != 0:
            return None
        try:  # 5 MB for 100,000 XPs: not on the event loop
            result = await anyio.to_thread.run_sync(marshal.loads, b"".join(chunks))
        except (EOFError, ValueError, TypeError):
            return None
        return result if isinstance(result, dict) else None

    async def aclose(self) -> None:
        """Stop the child if it still runs (the evaluation failed) and reap it."""
        if self._process.returncode is None:
            self._process.kill()
        await self._process.aclose()


if __name__ == "__main__":
    _child(sys.argv[1:])
