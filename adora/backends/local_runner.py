"""The local backend's runner: a small detached process that starts queued jobs.

``python -m adora.backends.local_runner <queue dir>`` is started by the CLI
when jobs are queued and no runner is alive. It runs at most ``max_parallel``
jobs at once, each in its own session (so cancelling kills its whole process
group), starts queued jobs as slots free up, handles cancel requests, and
exits once nothing is queued or running. It keeps working after the CLI that
started it has exited.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import typing as tp
from pathlib import Path

from ..jobs import pid_alive
from .local_queue import LocalQueue, QueueError, wrap_command

__all__ = ["Runner", "main"]

class Runner:
    """One pass of `tick` starts, reaps and cancels jobs; `loop` ticks until idle.

    Each tick reads, in one indexed query, the running jobs, the cancel requests and
    only as many pending jobs as it could start (not every job's state): a queue of
    100,000 finished or 100,000 pending jobs costs next to nothing.
    """

    def __init__(self, queue: LocalQueue, *, tick: float = 0.1, idle_exit: float = 1.0,
                 kill_grace: float = 5.0, sleep: tp.Callable[[float], None] = time.sleep,
                 clock: tp.Callable[[], float] = time.monotonic) -> None:
        self.queue = queue
        self.tick_seconds = tick
        self.idle_exit = idle_exit
        self.kill_grace = kill_grace
        self.sleep = sleep
        self.clock = clock
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.adopted: dict[str, int] = {}
        self.cancelling: dict[str, float] = {}

    # -- one tick ------------------------------------------------------------
    def scan(self, limit: int | None = None) -> tuple[list[str], set[str]]:
        """Pending job ids in submission order (the first ``limit`` only, plus those
        with a cancel request), and the ids with a cancel request.

        Adopts the RUNNING jobs of a previous runner whose process is alive.
        """
        pending, cancel = [], set()
        self.queue.reopen_if_replaced()
        for job in self.queue.active(limit):
            job_id = job["id"]
            if job["cancel"]:
                cancel.add(job_id)
            if job_id in self.children or job_id in self.adopted:
                continue
            if job["state"] == "RUNNING":
                pid = int(job["pid"] or 0)
                if pid and pid_alive(pid):
                    self.adopted[job_id] = pid
                elif not pid:
                    # A runner died between marking it RUNNING and learning its pid:
                    # it may have started. Never start it a second time.
                    self.finish(job_id, None, lost="the runner stopped while starting it")
                else:
                    self.finish(job_id, None)
            else:
                pending.append(job_id)
        return pending, cancel

    def start(self, job_id: str) -> None:
        spec = self.queue.spec(job_id)
        if spec is None:
            return
        # RUNNING first: a runner killed right after starting the process must not
        # leave the job PENDING, or the next runner would start it again.
        self.queue.write_state(job_id, "RUNNING", started_at=time.time())
        env = dict(spec.get("env") or os.environ)
        env["ADORA_EXIT_FILE"] = str(self.queue.jobs / f"{job_id}.exit")
        env["ADORA_JOB_ID"] = job_id
        try:
            log_path = Path(spec["log"])
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(log_path, "ab")
        except OSError as exc:
            self._failed_to_start(job_id, f"could not open its log {spec['log']}: {exc}")
            return
        with log:
            try:
                proc = subprocess.Popen(
                    wrap_command(spec["cmd"]), cwd=spec.get("cwd"), env=env,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True)
            except OSError as exc:
                log.write(f"adora: could not start the job: {exc}\n".encode())
                self._failed_to_start(job_id, str(exc))
                return
        self.children[job_id] = proc
        self.queue.write_state(job_id, "RUNNING", pid=proc.pid)

    def _failed_to_start(self, job_id: str, reason: str) -> None:
        self.queue.write_state(job_id, "FAILED", exit_code=None, reason=reason,
                               ended_at=time.time())

    def finish(self, job_id: str, returncode: int | None, *, lost: str = "") -> None:
        exit_code = self.queue.exit_code(job_id)
        if exit_code is None and returncode is not None and returncode >= 0:
            exit_code = returncode
        cancelled = job_id in self.cancelling or bool(
            (self.queue.state(job_id) or {}).get("cancel"))
        if cancelled and exit_code is None:
            state = "CANCELLED"
        elif exit_code == 0:
            state = "COMPLETED"
        else:
            state = "FAILED"
        reason = "" if exit_code is not None or state == "CANCELLED" else \
            f"killed by signal {-returncode}" if returncode is not None and returncode < 0 else \
            f"lost: {lost or 'the process ended while no runner watched it'}"
        self.queue.write_state(job_id, state, exit_code=exit_code, reason=reason,
                               ended_at=time.time())
        self.children.pop(job_id, None)
        self.adopted.pop(job_id, None)
        self.cancelling.pop(job_id, None)

    def _signal(self, job_id: str, sig: int) -> None:
        pid = self.children[job_id].pid if job_id in self.children else self.adopted.get(job_id)
        if pid is None:
            return
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def handle_cancels(self, pending: list[str], cancel: set[str]) -> list[str]:
        still_pending = []
        for job_id in pending:
            if job_id in cancel:
                self.queue.write_state(job_id, "CANCELLED", exit_code=None,
                                       ended_at=time.time())
            else:
                still_pending.append(job_id)
        now = self.clock()
        for job_id in list(self.children) + list(self.adopted):
            if job_id not in self.cancelling:
                if job_id in cancel:
                    self._signal(job_id, signal.SIGTERM)
                    self.cancelling[job_id] = now + self.kill_grace
            elif now >= self.cancelling[job_id]:
                self._signal(job_id, signal.SIGKILL)
        return still_pending

    def reap(self) -> None:
        for job_id, proc in list(self.children.items()):
            returncode = proc.poll()
            if returncode is not None:
                self.finish(job_id, returncode)
        for job_id, pid in list(self.adopted.items()):
            if not pid_alive(pid):
                self.finish(job_id, None)

    def tick(self) -> int:
        """Do one round; return the number of jobs queued or running afterwards (the
        queued ones counted up to ``max_parallel + 1``: 0 means idle)."""
        limit = self.queue.max_parallel()
        pending = self.handle_cancels(*self.scan(limit + 1))
        self.reap()
        slots = limit - len(self.children) - len(self.adopted)
        for job_id in pending[:max(0, slots)]:
            self.start(job_id)
        return len(pending) - max(0, min(slots, len(pending))) + len(self.children) \
            + len(self.adopted)

    # -- the loop --------------------------------------------------------------
    def loop(self) -> None:
        idle_since: float | None = None
        while True:
            busy = self.tick()
            if busy:
                idle_since = None
            else:
                idle_since = self.clock() if idle_since is None else idle_since
                if self.clock() - idle_since >= self.idle_exit:
                    return
            self.sleep(self.tick_seconds)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    queue = LocalQueue(Path(argv[0]))
    try:
        return _serve(queue)
    except QueueError as exc:
        print(f"adora local runner: {exc}", file=sys.stderr)
        return 1


def _serve(queue: LocalQueue) -> int:
    while True:
        fd = queue._flock("runner.lock", blocking=False)
        if fd is None:
            return 0  # another runner is alive and will do the work
        try:
            Runner(queue).loop()
        finally:
            queue._unlock(fd)
        # A job queued while we were deciding to exit would be stranded if we
        # left now: the CLI saw the lock held and started no runner.
        if not Runner(queue).scan(1)[0]:
            return 0


if __name__ == "__main__":
    sys.exit(main())
