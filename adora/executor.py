"""Local DDP workers, by the names of Dora's ``dora.executor``.

`start_ddp_workers` starts one process per rank (what ``adora run -d`` does) and waits
for them; `ChildrenManager` watches processes a caller started itself: when one fails,
the others are stopped.
"""

from __future__ import annotations

import subprocess
import sys
import time
import typing as tp

from .ddp import start_ddp_workers

__all__ = ["ChildrenManager", "start_ddp_workers"]


class ChildrenManager:
    """Watch child processes (`subprocess.Popen`) as one group::

        with ChildrenManager() as manager:
            for rank in range(world_size):
                manager.add(subprocess.Popen([...]))

    On leaving the block, waits until every child ended; as soon as one fails (or
    an exception or Ctrl-C interrupts), the others are terminated. ``failed`` tells
    afterwards whether anything went wrong. Each child gets a ``rank`` attribute,
    its order of addition.
    """

    def __init__(self, *, poll: float = 0.05) -> None:
        self.children: list[subprocess.Popen[tp.Any]] = []
        self.failed = False
        self._poll = poll

    def add(self, child: subprocess.Popen[tp.Any]) -> None:
        child.rank = len(self.children)  # type: ignore[attr-defined]
        self.children.append(child)

    def __enter__(self) -> ChildrenManager:
        return self

    def __exit__(self, exc_type: tp.Any, exc: BaseException | None, tb: tp.Any) -> None:
        if exc is not None:
            print(f"adora: stopping the workers: {exc!r}", file=sys.stderr)
            self.failed = True
        running = list(self.children)
        try:
            while running and not self.failed:
                for child in list(running):
                    code = child.poll()
                    if code is None:
                        continue
                    running.remove(child)
                    if code:
                        print(f"adora: worker {child.rank} exited with {code}; stopping the "  # type: ignore[attr-defined]
                              "others.", file=sys.stderr)
                        self.failed = True
                time.sleep(self._poll)
        except KeyboardInterrupt:
            self.failed = True
        for child in running:
            if child.poll() is None:
                child.terminate()
