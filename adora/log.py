"""Logging helpers that Dora users call from training loops.

`LogProgress` logs a few progress lines over an iterable (like tqdm, but in
log files); `bold`, `red` and `colorize` add ANSI colours; `fatal` logs an
error and exits; `setup_logging` shows adora's own log records on stderr and
`disable_logging` removes them again.
"""

from __future__ import annotations

import logging
import sys
import time
import typing as tp
from collections.abc import Iterable, Iterator, Sized

__all__ = ["LogProgress", "bold", "colorize", "disable_logging", "fatal", "format_speed", "red",
           "setup_logging", "simple_log"]

T = tp.TypeVar("T")


def colorize(text: str, color: str) -> str:
    """Wrap ``text`` in the ANSI colour code ``color`` (e.g. ``"1"`` bold, ``"31"`` red)."""
    return f"\033[{color}m{text}\033[0m"


def bold(text: str) -> str:
    return colorize(text, "1")


def red(text: str) -> str:
    return colorize(text, "31")


def simple_log(first: str, *args: tp.Any, color: str | None = None) -> None:
    """Print ``first`` in bold followed by ``args``, to stderr."""
    line = " ".join(str(a) for a in args)
    if color is not None:
        line = colorize(line, color)
    print(bold(first), line, file=sys.stderr)


def fatal(*args: tp.Any) -> tp.NoReturn:
    """Print an error in red and exit with status 1."""
    simple_log("FATAL:", *args, color="31")
    sys.exit(1)


_handler: logging.Handler | None = None


def setup_logging(verbose: bool = False) -> None:
    """Show adora's own log records (INFO, or DEBUG with ``verbose``) on stderr.

    As Dora: one handler on the ``adora`` logger, never on the root logger, so the
    training code stays free to configure logging as it likes.
    """
    global _handler
    level = logging.DEBUG if verbose else logging.INFO
    logger = logging.getLogger("adora")
    logger.setLevel(level)
    if _handler is None:
        _handler = logging.StreamHandler(sys.stderr)
        _handler.setFormatter(
            logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        logger.addHandler(_handler)
    _handler.setLevel(level)


def disable_logging() -> None:
    """Remove the handler `setup_logging` added (before handing over to training code)."""
    global _handler
    if _handler is not None:
        logging.getLogger("adora").removeHandler(_handler)
        _handler = None


class LogProgress(tp.Generic[T]):
    """Iterate over ``iterable`` and log about ``updates`` progress lines.

    Each line reads ``name | i/total | x it/sec | key value | ...`` with the
    values last given to `update`. Lines are at least ``min_interval`` iterations
    apart (as in Dora); ``time_per_it`` shows ms/it (or sec/it) instead of it/sec
    (see `format_speed`)::

        for batch in (bar := LogProgress(logger, loader, name="train")):
            loss = step(batch)
            bar.update(loss=f"{loss:.3f}")
    """

    def __init__(self, logger: logging.Logger, iterable: Iterable[T], updates: int = 5,
                 min_interval: int = 1, time_per_it: bool = False, total: int | None = None,
                 name: str = "LogProgress", level: int = logging.INFO) -> None:
        self.iterable = iterable
        if total is None:
            if not isinstance(iterable, Sized):
                raise ValueError("LogProgress needs total= when the iterable has no len().")
            total = len(iterable)
        self.total = total
        self.updates = updates
        self.min_interval = min_interval
        self.time_per_it = time_per_it
        self.name = name
        self.logger = logger
        self.level = level
        self._infos: dict[str, tp.Any] = {}
        self._index = -1
        self._will_log = False

    def update(self, **infos: tp.Any) -> bool:
        """Set the values shown on the next line; True if this iteration will log."""
        self._infos = infos
        return self._will_log

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> Iterator[T]:
        self._iterator = iter(self.iterable)
        self._index = -1
        self._infos = {}
        self._begin = time.time()
        self._will_log = False
        return self

    def __next__(self) -> T:
        if self._will_log:
            self._log()
            self._will_log = False
        self._index += 1
        value = next(self._iterator)  # StopIteration ends the loop
        if self.updates > 0:
            # As Dora: `min_interval` is a number of iterations, not seconds.
            every = max(1, self.min_interval, self.total // self.updates)
            if self._index >= 1 and self._index % every == 0:
                self._will_log = True
        return value

    def _log(self) -> None:
        elapsed = time.time() - self._begin
        # As Dora: the speed counts the iteration being finished.
        speed = (1 + self._index) / elapsed if elapsed > 0 else float("inf")
        self._speed = speed
        parts = [self.name, f"{self._index}/{self.total}", format_speed(speed, self.time_per_it)]
        parts += [f"{k.capitalize()} {v}" for k, v in self._infos.items()]
        self.logger.log(self.level, " | ".join(parts))


def format_speed(speed: float, time_per_it: bool = False) -> str:
    """Dora's speed text for ``speed`` iterations per second.

    ``x.xx it/sec``, or below 0.1 it/sec ``x.x sec/it``; with ``time_per_it``,
    ``x.x ms/it`` (``x.xx sec/it`` below 1 it/sec); ``oo sec/it`` when stalled.
    """
    if speed < 1e-4:
        return "oo sec/it"
    if time_per_it and speed < 1:
        return f"{1 / speed:.2f} sec/it"
    if time_per_it:
        return f"{1000 / speed:.1f} ms/it"
    if speed < 0.1:
        return f"{1 / speed:.1f} sec/it"
    return f"{speed:.2f} it/sec"
