"""The on-disk queue of the local backend, shared by the CLI and the runner process.

Everything lives in ``<dir>/.adora/local/``::

    next_id              last job id handed out (under queue.lock)
    config.json          {"max_parallel": N}
    jobs/<id>.json       the job: command, cwd, env, log path (written once)
    jobs/<id>.state.json what the runner saw: RUNNING (pid), COMPLETED, FAILED, CANCELLED
    jobs/<id>.exit       exit code, written by the job's own shell when it ends
    jobs/<id>.cancel     a cancel request
    runner.lock          held (flock) by the live runner process
    runner.log           the runner's own log

A job without a state file is PENDING. The job's exit code is written by the
shell that wraps it, so a runner that dies never loses it: the next runner
picks up where it stopped. These functions are synchronous; the engine calls
them from worker threads.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
import typing as tp
from dataclasses import dataclass
from pathlib import Path

from ..jobs import write_json_atomic

__all__ = ["LocalQueue"]

# Runs the job, then records its exit code atomically; "$@" keeps every
# argument intact whatever characters it holds.
_WRAPPER = ('rc=0; "$@" || rc=$?; printf %s "$rc" > "$ADORA_EXIT_FILE.tmp" '
            '&& mv "$ADORA_EXIT_FILE.tmp" "$ADORA_EXIT_FILE"; exit "$rc"')


def wrap_command(cmd: tp.Sequence[str]) -> list[str]:
    return ["/bin/sh", "-c", _WRAPPER, "adora-job", *cmd]


def _read_json(path: Path) -> tp.Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


@dataclass
class LocalQueue:
    """File-based queue of local jobs under ``root`` (``<dir>/.adora/local``)."""

    root: Path

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    def ensure(self) -> None:
        self.jobs.mkdir(parents=True, exist_ok=True)

    # -- locks -----------------------------------------------------------------
    def _flock(self, name: str, blocking: bool) -> int | None:
        self.ensure()
        fd = os.open(self.root / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @staticmethod
    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    # -- submission ------------------------------------------------------------
    def add_jobs(self, specs: list[dict[str, tp.Any]]) -> list[str]:
        """Queue jobs (dicts with cmd, cwd, env, log, name); return their ids.

        ``{id}`` in a spec's ``log`` path is replaced by the job's id.
        """
        fd = self._flock("queue.lock", blocking=True)
        assert fd is not None
        try:
            counter = self.root / "next_id"
            try:
                last = int(counter.read_text())
            except (FileNotFoundError, ValueError):
                last = 0
            ids = [str(last + i + 1) for i in range(len(specs))]
            for job_id, spec in zip(ids, specs):
                spec = dict(spec, id=job_id, submitted_at=time.time(),
                            log=str(spec.get("log", "")).replace("{id}", job_id))
                write_json_atomic(self.jobs / f"{job_id}.json", spec)
            counter.write_text(str(last + len(specs)))
            return ids
        finally:
            self._unlock(fd)

    def set_max_parallel(self, max_parallel: int) -> None:
        self.ensure()
        write_json_atomic(self.root / "config.json", {"max_parallel": max_parallel})

    def max_parallel(self) -> int:
        config = _read_json(self.root / "config.json") or {}
        return int(config.get("max_parallel") or os.cpu_count() or 1)

    def request_cancel(self, job_ids: tp.Iterable[str]) -> None:
        for job_id in job_ids:
            if (self.jobs / f"{job_id}.json").exists():
                (self.jobs / f"{job_id}.cancel").touch()

    # -- reading -----------------------------------------------------------------
    def spec(self, job_id: str) -> dict[str, tp.Any] | None:
        return tp.cast("dict[str, tp.Any] | None", _read_json(self.jobs / f"{job_id}.json"))

    def state(self, job_id: str) -> dict[str, tp.Any] | None:
        """The state of a job: None if unknown id, else a dict with at least ``state``."""
        state = _read_json(self.jobs / f"{job_id}.state.json")
        if state is not None:
            return tp.cast("dict[str, tp.Any]", state)
        if (self.jobs / f"{job_id}.json").exists():
            return {"state": "PENDING"}
        return None

    def write_state(self, job_id: str, **state: tp.Any) -> None:
        write_json_atomic(self.jobs / f"{job_id}.state.json", state)

    def exit_code(self, job_id: str) -> int | None:
        try:
            return int((self.jobs / f"{job_id}.exit").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def job_ids(self) -> list[str]:
        if not self.jobs.exists():
            return []
        ids = [p.name[:-5] for p in self.jobs.iterdir()
               if p.name.endswith(".json") and not p.name.endswith(".state.json")
               and not p.name.startswith(".")]
        return sorted(ids, key=int)

    def find_by_name(self, names: tp.Collection[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for job_id in self.job_ids():
            spec = self.spec(job_id) or {}
            if spec.get("name") in names:
                found.setdefault(spec["name"], []).append(job_id)
        return found

    # -- the runner ----------------------------------------------------------------
    def runner_alive(self) -> bool:
        fd = self._flock("runner.lock", blocking=False)
        if fd is None:
            return True
        self._unlock(fd)
        return False

    def ensure_runner(self) -> None:
        """Start the runner process unless one is alive. It outlives this process."""
        if self.runner_alive():
            return
        self.ensure()
        log = open(self.root / "runner.log", "ab")
        try:
            subprocess.Popen(
                [sys.executable, "-m", "adora.backends.local_runner", str(self.root)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True)
        finally:
            log.close()
