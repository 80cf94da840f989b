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
  the scan did not see (a new member, an unreadable file) is checked as before, under
  the lock. Job records are never taken from the scan: they are read under the lock.
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


def scan(xps_dir: str, sigs: tp.Iterable[str], history_names: tp.Sequence[str]) -> Scan:
    """What the folders ``xps_dir/SIG`` hold (blocking). A folder whose ``.argv.json``
    cannot be read for another reason than its absence is left out (checked later)."""
    out: Scan = {}
    flags = os.O_RDONLY | os.O_CLOEXEC
    for sig in sigs:
        folder = f"{xps_dir}/{sig}"
        try:
            fd = os.open(f"{folder}/.argv.json", flags)
        except (FileNotFoundError, NotADirectoryError):
            argv = None
        except OSError:
            continue
        else:
            try:
                argv = os.read(fd, _MAX_ARGV)
                if len(argv) == _MAX_ARGV:
                    continue
            except OSError:
                continue
            finally:
                os.close(fd)
        history = not history_names  # no names given: unknown, read as usual
        for name in history_names:
            try:
                os.stat(f"{folder}/{name}")
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError:
                pass  # cannot tell: read it as usual
            history = True
            break
        out[sig] = (argv, history)
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


async def scan_in_child(xps_dir: str, grid_dir: str,
                        history_names: tp.Sequence[str]) -> Scan | None:
    """`scan` of the members of ``grid_dir``, made by a child process; None when the
    grid has fewer than `MIN_MEMBERS` members or the child failed (the caller then
    reads everything itself, as without a scan)."""
    import anyio
    import anyio.to_thread

    def _count() -> int:
        try:
            with os.scandir(grid_dir) as entries:
                return sum(1 for _ in entries)
        except OSError:
            return 0

    if await anyio.to_thread.run_sync(_count) < MIN_MEMBERS:
        return None
    try:
        done = await anyio.run_process(
            [sys.executable, "-I", "-S", __file__, xps_dir, grid_dir, *history_names],
            check=False)
    except OSError:
        return None
    if done.returncode != 0:
        return None
    try:
        result = marshal.loads(done.stdout)
    except (EOFError, ValueError, TypeError):
        return None
    return result if isinstance(result, dict) else None


if __name__ == "__main__":
    _child(sys.argv[1:])
