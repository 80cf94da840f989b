"""Job states shared by every backend, and what they mean for scheduling.

Names follow Slurm's (what users read in ``sacct``). ``UNKNOWN`` means adora
could not learn the state right now (controller down, connection lost): it is
never treated as a failure, and never triggers a resubmission by itself.
"""

from __future__ import annotations

import enum
import functools

__all__ = ["ACTIVE", "FAILED_STATES", "FINAL", "JobState", "normalize_state"]


class JobState(str, enum.Enum):
    PENDING = "PENDING"
    REQUEUED = "REQUEUED"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    MISSING = "MISSING"
    UNKNOWN = "UNKNOWN"

    def __str__(self) -> str:
        return self.value

    @property
    def short(self) -> str:
        """Three letters, as Dora's table shows (RUN, PEN, COM, FAI, ...)."""
        return self.value[:3]

    @property
    def is_final(self) -> bool:
        return self in FINAL

    @property
    def is_failed(self) -> bool:
        return self in FAILED_STATES


#: States after which a job never runs again (without a resubmission).
FAILED_STATES = frozenset({
    JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT, JobState.OUT_OF_MEMORY,
    JobState.NODE_FAIL, JobState.BOOT_FAIL, JobState.DEADLINE, JobState.MISSING,
})
FINAL = FAILED_STATES | {JobState.COMPLETED}
#: States of a job that holds or waits for resources.
ACTIVE = frozenset({
    JobState.PENDING, JobState.REQUEUED, JobState.RUNNING, JobState.COMPLETING,
    JobState.SUSPENDED, JobState.PREEMPTED,
})

_ALIASES = {
    "CANCELLED+": JobState.CANCELLED,
    "CA": JobState.CANCELLED,
    "CD": JobState.COMPLETED,
    "CG": JobState.COMPLETING,
    "F": JobState.FAILED,
    "PD": JobState.PENDING,
    "R": JobState.RUNNING,
    "RQ": JobState.REQUEUED,
    "RH": JobState.REQUEUED,
    "RF": JobState.REQUEUED,
    "RS": JobState.REQUEUED,
    "S": JobState.SUSPENDED,
    "ST": JobState.SUSPENDED,
    "TO": JobState.TIMEOUT,
    "OOM": JobState.OUT_OF_MEMORY,
    "NF": JobState.NODE_FAIL,
    "PR": JobState.PREEMPTED,
    "BF": JobState.BOOT_FAIL,
    "DL": JobState.DEADLINE,
    "CF": JobState.PENDING,
    "SE": JobState.REQUEUED,
    "RESIZING": JobState.RUNNING,
    "REQUEUE_FED": JobState.REQUEUED,
    "REQUEUE_HOLD": JobState.REQUEUED,
    "RESV_DEL_HOLD": JobState.PENDING,
    "SPECIAL_EXIT": JobState.REQUEUED,
    "CONFIGURING": JobState.PENDING,
    "STOPPED": JobState.SUSPENDED,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.COMPLETING,
    "REVOKED": JobState.CANCELLED,
}


_BY_WORD = {**_ALIASES, **JobState.__members__}


@functools.lru_cache(maxsize=512)
def normalize_state(raw: str) -> JobState:
    """Map a state as Slurm prints it (``CANCELLED by 0``, ``CD``, ...) to a `JobState`.

    Cached: a queue listing of tens of thousands of jobs holds a handful of states.
    """
    word = raw.strip().split(" ", 1)[0].upper()
    return _BY_WORD.get(word, JobState.UNKNOWN)
