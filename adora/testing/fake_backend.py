"""An in-memory backend for tests: canned states, counted calls, injected faults."""

from __future__ import annotations

import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from ..backends.base import Backend, JobStatus, SubmitRequest
from ..errors import BackendError
from ..jobs import JobRecord
from ..states import JobState

__all__ = ["FakeBackend", "FakeJob"]


@dataclass
class FakeJob:
    job_id: str
    sig: str
    name: str
    state: JobState = JobState.PENDING
    exit_code: int | None = None


@dataclass
class FakeBackend(Backend):
    """Jobs live in ``jobs``; tests set their states and inspect the calls made.

    ``submit_delay`` makes each submission take that long (after the jobs
    exist, like a slow ``sbatch``); ``crash_after_submit`` raises after the
    jobs were created, as if the process died before recording them;
    ``fail_queries`` makes `query` raise (controller down).
    """

    name: str = "fake"
    max_group_size: int | None = None
    submit_delay: float = 0.0
    crash_after_submit: bool = False
    fail_queries: bool = False
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    submissions: list[SubmitRequest] = field(default_factory=list)
    cancel_calls: list[list[str]] = field(default_factory=list)
    query_calls: int = 0
    _next: int = 100

    async def submit(self, request: SubmitRequest) -> list[JobRecord]:
        self.submissions.append(request)
        array_id = str(self._next)
        self._next += 1
        records = []
        for index, xp in enumerate(request.xps):
            job_id = f"{array_id}_{index}" if request.array else array_id
            self.jobs[job_id] = FakeJob(job_id, xp.sig, request.job_name)
            records.append(JobRecord(backend=self.name, token=request.token, job_id=job_id,
                                     job_name=request.job_name, array_index=index,
                                     array_id=array_id if request.array else None,
                                     log=str(xp.folder / f"fake_{job_id}.log")))
        if self.submit_delay:
            await anyio.sleep(self.submit_delay)
        if self.crash_after_submit:
            raise BackendError("simulated crash after the jobs were submitted")
        return records

    async def cancel(self, records: tp.Sequence[JobRecord]) -> None:
        ids = [r.job_id for r in records if r.job_id is not None]
        self.cancel_calls.append(ids)
        for job_id in ids:
            job = self.jobs.get(job_id)
            if job is not None and not job.state.is_final:
                job.state = JobState.CANCELLED

    async def query(self, records: tp.Sequence[JobRecord]) -> dict[str, JobStatus]:
        self.query_calls += 1
        if self.fail_queries:
            raise BackendError("simulated controller outage")
        out = {}
        for record in records:
            assert record.job_id is not None
            job = self.jobs.get(record.job_id)
            out[record.job_id] = JobStatus(JobState.MISSING) if job is None else \
                JobStatus(job.state, job.exit_code)
        return out

    async def recover(self, intents: tp.Sequence[tuple[str, JobRecord]],
                      folders: tp.Mapping[str, Path] | None = None) -> list[str | None]:
        found = []
        for sig, record in intents:
            match = [j.job_id for j in self.jobs.values()
                     if j.name == record.job_name and j.sig == sig]
            found.append(match[0] if match else None)
        return found

    def set_state(self, state: JobState, *, sig: str | None = None,
                  exit_code: int | None = None) -> None:
        """Set the state of every job (or of the jobs of XP ``sig``)."""
        for job in self.jobs.values():
            if sig is None or job.sig == sig:
                job.state = state
                job.exit_code = exit_code

    def jobs_of(self, sig: str) -> list[FakeJob]:
        return [j for j in self.jobs.values() if j.sig == sig]
