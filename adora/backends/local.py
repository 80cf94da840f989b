"""The local backend: every XP runs as its own process on this machine, no Slurm needed.

Jobs are queued on disk (`LocalQueue`) and started by a detached runner
process (`adora.backends.local_runner`) that keeps at most ``max_parallel``
running and outlives the command that submitted them.
"""

from __future__ import annotations

import os
import typing as tp
from pathlib import Path

import anyio.to_thread

from ..jobs import JobRecord
from ..states import JobState
from .base import Backend, JobStatus, SubmitRequest
from .local_queue import LocalQueue

__all__ = ["LocalBackend"]


class LocalBackend(Backend):
    """Run XPs as local processes; ``root`` is the output directory (``DoraConfig.dir``)."""

    name = "local"

    def __init__(self, root: Path, *, max_parallel: int | None = None) -> None:
        if max_parallel is not None and (isinstance(max_parallel, bool) or not isinstance(
                max_parallel, int) or max_parallel < 1):
            from ..errors import ConfigError

            raise ConfigError(f"max_parallel (local backend) must be a whole number >= 1, "
                              f"not {max_parallel!r}.")
        self.queue = LocalQueue(Path(root) / ".adora" / "local")
        self.max_parallel = max_parallel

    def describe(self) -> str:
        return f"local (max {self.max_parallel or self.queue.max_parallel()} in parallel)"

    async def submit(self, request: SubmitRequest) -> list[JobRecord]:
        cwd = str(request.launch.cwd)
        # f-strings, not Path joins: one spec and one record per XP (100,000s in big grids).
        specs = [{
            "name": request.job_name,
            "sig": xp.sig,
            "cmd": request.launch.command(xp.argv),
            "cwd": cwd,
            "env": request.launch.env,
            "log": f"{xp.folder}/local_{{id}}.log",
        } for xp in request.xps]
        ids = await anyio.to_thread.run_sync(self._submit_sync, specs)
        return [
            JobRecord(backend=self.name, token=request.token, job_id=job_id,
                      job_name=request.job_name, log=f"{xp.folder}/local_{job_id}.log")
            for xp, job_id in zip(request.xps, ids)
        ]

    def _submit_sync(self, specs: list[dict[str, tp.Any]]) -> list[str]:
        if self.max_parallel is not None:
            self.queue.set_max_parallel(self.max_parallel)
        elif not self.queue.has_max_parallel():
            self.queue.set_max_parallel(os.cpu_count() or 1)
        ids = self.queue.add_jobs(specs)
        self.queue.ensure_runner()
        return ids

    async def cancel(self, records: tp.Sequence[JobRecord]) -> None:
        ids = [r.job_id for r in records if r.job_id is not None]
        await anyio.to_thread.run_sync(self._cancel_sync, ids)

    def _cancel_sync(self, ids: list[str]) -> None:
        self.queue.request_cancel(ids)
        self.queue.ensure_runner()

    async def query(self, records: tp.Sequence[JobRecord]) -> dict[str, JobStatus]:
        return await anyio.to_thread.run_sync(self._query_sync, records)

    def _query_sync(self, records: tp.Sequence[JobRecord]) -> dict[str, JobStatus]:
        out: dict[str, JobStatus] = {}
        ids = [r.job_id for r in records if r.job_id is not None]
        states = self.queue.states(ids) if self.queue.exists() or self.queue.jobs.exists() \
            else {}
        active = False
        for record in records:
            job_id = record.job_id
            if job_id is None:
                continue
            state = states.get(job_id)
            if state is None:
                out[job_id] = JobStatus(JobState.MISSING, reason="unknown to the local queue")
                continue
            if record.job_name and state["name"] != record.job_name:
                # The queue was replaced and the id handed out again: that job is
                # another XP's, never this one's.
                out[job_id] = JobStatus(JobState.MISSING, reason=(
                    f"job {job_id} of the local queue belongs to another submission "
                    f"({state['name']}, not {record.job_name})"))
                continue
            job_state = JobState(state["state"])
            active = active or not job_state.is_final
            out[job_id] = JobStatus(job_state, exit_code=state.get("exit_code"),
                                    reason=state.get("reason") or "",
                                    started_at=state.get("started_at"),
                                    ended_at=state.get("ended_at"))
        if active:
            # Queued or running jobs need a runner: restart one if it died.
            self.queue.ensure_runner()
        return out

    async def recover(self, intents: tp.Sequence[tuple[str, JobRecord]],
                      folders: tp.Mapping[str, Path] | None = None) -> list[str | None]:
        names = {record.job_name for _, record in intents if record.job_name}
        found = await anyio.to_thread.run_sync(self._find_sync, names)
        return [found.get((record.job_name or "", sig)) for sig, record in intents]

    def _find_sync(self, names: set[str]) -> dict[tuple[str, str], str]:
        return {(name, sig): job_id for name, jobs in self.queue.find_by_name(names).items()
                for job_id, sig in jobs}
