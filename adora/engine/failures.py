"""Why XPs failed: the backend's reason and exit code, and the error line of their logs.

Only failed XPs are looked at, and only the tail of their logs is read (two small
batched reads, whatever the size of the log): cheap enough for every refresh of a
watch, and each job's log is read once (`FailureReader` keeps what it found).
"""

from __future__ import annotations

import re
import typing as tp

from ..explore import Sheep
from ..states import JobState

if tp.TYPE_CHECKING:
    from ..backends.base import Backend

__all__ = ["TAIL_BYTES", "FailureReader", "describe", "is_failure", "last_error_line"]

#: How much of the end of a failed XP's log is read for its error line.
TAIL_BYTES = 16384

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TRACEBACK = "Traceback (most recent call last):"
# The exception line of a traceback: ``ValueError: boom``, ``torch.OutOfMemoryError``.
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(: .*)?$")
_ERRORISH = re.compile(r"error|exception|killed|out of memory|oom|cancelled|fatal|"
                       r"time limit|segmentation fault|aborted", re.IGNORECASE)


def last_error_line(text: str) -> str | None:
    """The line of a log's tail that says what went wrong, or None.

    The exception line of the last Python traceback (its prefix, e.g. a DDP
    rank's ``[rank0]: ``, removed); else the last line that reads like an error
    (``slurmstepd: error: *** JOB 12 CANCELLED AT ... DUE TO TIME LIMIT ***``);
    else the last line. Pure::

        >>> last_error_line("Traceback (most recent call last):\\n  File ...\\nValueError: x")
        'ValueError: x'
    """
    lines = [_ANSI.sub("", line).rstrip() for line in text.replace("\r", "\n").splitlines()]
    lines = [line for line in lines if line.strip()]
    if not lines:
        return None
    for start in range(len(lines) - 1, -1, -1):
        at = lines[start].find(_TRACEBACK)
        if at < 0:
            continue
        prefix = lines[start][:at]
        for line in lines[start + 1:]:
            body = line[len(prefix):] if prefix and line.startswith(prefix) else line
            if body and not body[0].isspace() and _EXCEPTION.match(body.split(":", 1)[0]):
                return _clip(body)
        break
    for line in reversed(lines):
        if _ERRORISH.search(line):
            return _clip(line.strip())
    return _clip(lines[-1].strip())


def _clip(line: str, limit: int = 300) -> str:
    return line if len(line) <= limit else line[:limit - 3] + "..."


def is_failure(sheep: Sheep, *, cancelled_here: tp.Container[str] = ()) -> bool:
    """Whether this XP counts as failed for the exit status: a failed state, except a
    cancellation that adora made (this run's ``-C``, or an earlier one's)."""
    state = sheep.job_state
    if state is None or not state.is_failed or sheep.stale:
        return False
    if state is JobState.CANCELLED:
        if sheep.xp.sig in cancelled_here:
            return False
        if sheep.job is not None and sheep.job.extra.get("cancelled_by") == "adora":
            return False
    return True


def describe(sheep: Sheep, *, state_name: bool = True) -> str:
    """Why a job ended badly, from what the backend said: ``FAILED, exit code 1``,
    ``TIMEOUT``, ``FAILED, could not start: ...`` (without the state: ``exit code 1``)."""
    state = sheep.job_state
    if state is None:
        return "no job"
    parts = [state.value] if state_name else []
    status = sheep.status
    code = status.exit_code if status is not None else None
    if code is None and sheep.job is not None:
        code = sheep.job.exit_code
    if code not in (None, 0):
        assert code is not None
        parts.append(f"exit code {code}" + (f" (signal {code - 128})" if code > 128 else ""))
    reason = (status.reason if status is not None else "") or (
        str(sheep.job.extra.get("reason") or "") if sheep.job is not None else "")
    if reason and reason.lower() not in ("none", state.value.lower()):
        parts.append(reason)
    return ", ".join(parts) or state.value


class FailureReader:
    """The error line of each failed XP's log, read once per job."""

    def __init__(self) -> None:
        self.lines: dict[str, str | None] = {}  # job id -> error line (None: none found)

    def line(self, sheep: Sheep) -> str | None:
        job_id = sheep.current_job_id
        return None if job_id is None else self.lines.get(job_id)

    async def refresh(self, backend: Backend, sheeps: tp.Iterable[Sheep]) -> None:
        """Read the tails of the logs of the failed XPs not read yet (two batched reads)."""
        from .tail import ReadRequest

        todo = [s for s in sheeps if s.job_state is not None and s.job_state.is_failed
                and s.log is not None and s.current_job_id not in self.lines]
        if not todo:
            return
        paths = [str(s.log) for s in todo]
        # First the sizes (an offset past the end reads nothing), then the tails.
        stamps = await backend.read_many([ReadRequest(p, 1 << 62) for p in paths])
        requests, owners = [], []
        for sheep, path, got in zip(todo, paths, stamps):
            job_id = tp.cast(str, sheep.current_job_id)
            if not isinstance(got, tuple):
                self.lines[job_id] = None
                continue
            requests.append(ReadRequest(path, max(0, got[1].size - TAIL_BYTES)))
            owners.append(job_id)
        if not requests:
            return
        tails = await backend.read_many(requests)
        for job_id, got in zip(owners, tails):
            text = got[0].decode(errors="replace") if isinstance(got, tuple) else ""
            self.lines[job_id] = last_error_line(text)
