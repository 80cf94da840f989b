"""One poller per backend: the states of every tracked job, in one batched query per tick.

Ticks come quickly right after a submission and slow down while nothing
changes; errors back off exponentially and mark states *stale* (the last known
state is kept, flagged, never turned into a failure); polling resumes by itself.
Time comes from an injectable `Clock`, so schedules are tested instantly.
"""

from __future__ import annotations

import logging
import typing as tp
from dataclasses import dataclass, replace

import anyio

from ..jobs import JobRecord
from ..states import JobState
from .clock import Clock, SystemClock

if tp.TYPE_CHECKING:
    from ..backends.base import Backend, JobStatus

__all__ = ["Poller", "Schedule"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """Delays between ticks, in seconds."""

    fastest: float = 1.0
    slowest: float = 30.0
    growth: float = 1.5
    backoff_start: float = 2.0
    backoff_max: float = 120.0

    def delay(self, quiet_ticks: int, failures: int) -> float:
        """Delay before the next tick after ``quiet_ticks`` unchanged ticks or ``failures``."""
        if failures:
            return float(min(self.backoff_max, self.backoff_start * 2 ** (failures - 1)))
        return float(min(self.slowest, self.fastest * self.growth ** quiet_ticks))


class Poller:
    """Tracks jobs of one backend and keeps their latest `JobStatus`."""

    def __init__(self, backend: Backend, *, clock: Clock | None = None,
                 schedule: Schedule | None = None) -> None:
        self.backend = backend
        self.clock = clock or SystemClock()
        self.schedule = schedule or Schedule()
        self.statuses: dict[str, JobStatus] = {}
        self._tracked: dict[str, JobRecord] = {}
        self.quiet_ticks = 0
        self.failures = 0
        self.ticks = 0
        self.last_error: BaseException | None = None
        self._changed = anyio.Event()

    def track(self, records: tp.Iterable[JobRecord | None]) -> None:
        """Follow these jobs until they reach a final state."""
        for record in records:
            if record is None or record.job_id is None:
                continue
            if record.final is not None:
                from ..backends.base import JobStatus

                self.statuses[record.job_id] = JobStatus.of_final(record)
                continue
            self._tracked[record.job_id] = record

    def kick(self) -> None:
        """Poll quickly again (e.g. right after submitting)."""
        self.quiet_ticks = 0

    @property
    def tracked(self) -> list[str]:
        return list(self._tracked)

    def status(self, record: JobRecord | None) -> JobStatus | None:
        if record is None or record.job_id is None:
            return None
        return self.statuses.get(record.job_id)

    async def poll(self) -> bool:
        """One tick: one batched query for all tracked jobs; True if any state changed."""
        self.ticks += 1
        records = list(self._tracked.values())
        if not records:
            return False
        try:
            got = await self.backend.query(records)
        except Exception as exc:  # any failure of the backend: states become stale
            self.failures += 1
            self.last_error = exc
            logger.debug("poll failed (%d in a row): %r", self.failures, exc)
            from ..backends.base import JobStatus

            for record in records:
                assert record.job_id is not None
                old = self.statuses.get(record.job_id) or JobStatus(JobState.UNKNOWN)
                self.statuses[record.job_id] = replace(old, stale=True, reason=str(exc))
            return True
        was_failing = self.failures > 0
        self.failures = 0
        self.last_error = None
        changed = was_failing
        for job_id, status in got.items():
            if self.statuses.get(job_id) != status:
                changed = True
            self.statuses[job_id] = status
            if status.state.is_final and not status.stale:
                self._tracked.pop(job_id, None)
        self.quiet_ticks = 0 if changed else self.quiet_ticks + 1
        if changed:
            self._changed.set()
            self._changed = anyio.Event()
        return changed

    def next_delay(self) -> float:
        return self.schedule.delay(self.quiet_ticks, self.failures)

    async def run(self, *, until: tp.Callable[[], bool] = lambda: False) -> None:
        """Poll forever (or until ``until()``), sleeping on the schedule between ticks."""
        while not until():
            await self.poll()
            if until():
                return
            await self.clock.sleep(self.next_delay())
