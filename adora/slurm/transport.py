"""Where Slurm commands run (this host, or a login node over SSH), and how often.

Every command adora sends to Slurm goes through a `CommandRunner`; wrapping
one in `RateLimited` puts a token bucket in front of it, so however many
grids and XPs adora handles, the controller sees at most ``rate`` commands per
second (after a burst of ``burst``).
"""

from __future__ import annotations

import logging
import typing as tp
from dataclasses import dataclass

import anyio

from ..engine.clock import Clock, SystemClock
from ..errors import CommandError, CommandTimeoutError

__all__ = ["CommandResult", "CommandRunner", "LocalCommands", "RateLimited", "TokenBucket"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    exit_status: int
    stdout: str
    stderr: str

    def check(self) -> CommandResult:
        """Raise `CommandError` unless the command succeeded."""
        if self.exit_status != 0:
            raise CommandError(self.argv, self.exit_status, self.stdout, self.stderr)
        return self


class CommandRunner(tp.Protocol):
    """Runs one command given as an argument vector (never through a local shell)."""

    async def run(self, argv: tp.Sequence[str], *, timeout: float = 60.0,
                  input: str | None = None) -> CommandResult:
        ...


class LocalCommands:
    """Run commands on this host with `anyio.run_process`; counts what it ran."""

    def __init__(self, env: tp.Mapping[str, str] | None = None) -> None:
        self.env = dict(env) if env is not None else None
        self.count: dict[str, int] = {}

    async def run(self, argv: tp.Sequence[str], *, timeout: float = 60.0,
                  input: str | None = None) -> CommandResult:
        argv = list(argv)
        self.count[argv[0]] = self.count.get(argv[0], 0) + 1
        logger.debug("running %s", argv[:3])
        try:
            with anyio.fail_after(timeout):
                proc = await anyio.run_process(
                    argv, input=None if input is None else input.encode(), check=False,
                    env=self.env)
        except TimeoutError:
            raise CommandTimeoutError(argv, None, message=f"`{argv[0]}` did not answer in "
                                      f"{timeout:.0f} s") from None
        except FileNotFoundError as exc:
            raise CommandError(argv, None, message=f"`{argv[0]}` not found: {exc}") from exc
        return CommandResult(argv, proc.returncode, proc.stdout.decode(errors="replace"),
                             proc.stderr.decode(errors="replace"))


class TokenBucket:
    """At most ``rate`` acquisitions per second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: int, *, clock: Clock | None = None) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("TokenBucket needs rate > 0 and burst >= 1.")
        self.rate = rate
        self.burst = burst
        self.clock = clock or SystemClock()
        self.tokens = float(burst)
        self.updated = self.clock.now()
        self.lock = anyio.Lock()
        #: Total time spent waiting for tokens.
        self.waited = 0.0

    def _refill(self) -> None:
        now = self.clock.now()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    async def acquire(self) -> None:
        async with self.lock:
            self._refill()
            if self.tokens < 1:
                delay = (1 - self.tokens) / self.rate
                self.waited += delay
                await self.clock.sleep(delay)
                self._refill()
            self.tokens -= 1


class RateLimited:
    """A `CommandRunner` whose every command first takes a token from a bucket."""

    def __init__(self, runner: CommandRunner, bucket: TokenBucket) -> None:
        self.runner = runner
        self.bucket = bucket

    async def run(self, argv: tp.Sequence[str], *, timeout: float = 60.0,
                  input: str | None = None) -> CommandResult:
        await self.bucket.acquire()
        return await self.runner.run(argv, timeout=timeout, input=input)
