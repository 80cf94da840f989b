"""Pure builders and parsers for Slurm's commands; no I/O here.

The same argument vectors run on this host (local Slurm) or on a login node
over SSH; the parsers are tested on output recorded from a real cluster.
"""

from __future__ import annotations

import re
import typing as tp
from dataclasses import dataclass
from datetime import datetime

from ..states import JobState, normalize_state

__all__ = [
    "QueueEntry",
    "ABANDONED_STATUS",
    "array_spec",
    "fence_files",
    "fenced_command",
    "parse_duration",
    "parse_exit_code",
    "parse_sacct",
    "parse_sbatch",
    "parse_scontrol_config",
    "parse_squeue",
    "sacct_command",
    "scancel_command",
    "squeue_command",
]

SEP = "|"
# %A job id, %F array job id, %K array task id, %T state, %M time used, %r reason, %j
# name (last: names are the user's and may hold the separator). Run times are durations,
# not timestamps: a remote cluster's clock and time zone need not be ours.
SQUEUE_FORMAT = SEP.join(["%A", "%F", "%K", "%T", "%M", "%r", "%j"])
SACCT_FIELDS = ["JobID", "State", "ExitCode", "Elapsed", "Reason", "JobName"]
#: Every state sacct accepts in ``--state`` (Slurm 22.05).
SACCT_STATES = ["PD", "R", "RQ", "S", "CD", "CA", "F", "TO", "OOM", "NF", "PR", "BF", "DL"]


@dataclass(frozen=True)
class QueueEntry:
    """One job (or array task) as a Slurm command reports it."""

    job_id: str
    state: JobState
    raw_state: str
    exit_code: int | None = None
    reason: str = ""
    name: str = ""
    #: Seconds the job has run (squeue's time used, sacct's elapsed); None if not told.
    used: float | None = None


_DURATION = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)(?:\.\d+)?$")


def parse_duration(text: str) -> float | None:
    """Slurm's ``[days-][hours:]minutes:seconds`` -> seconds (``"1-02:03:04"`` ->
    93784); None for anything else (``INVALID``, ``UNLIMITED``, empty)."""
    match = _DURATION.match(text.strip())
    if not match:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def job_key(array_job_id: str, task_id: str | None) -> str:
    """How adora names a job: ``<id>``, or ``<array id>_<index>`` for an array task."""
    return f"{array_job_id}_{task_id}" if task_id not in (None, "", "N/A") else array_job_id


def base_job_id(job_id: str) -> str:
    """``123_4`` -> ``123``: the id Slurm commands accept for a whole array."""
    return job_id.split("_", 1)[0]


def squeue_command(user: str | None = None, job_ids: tp.Sequence[str] = ()) -> list[str]:
    """One squeue for every job of ``user`` (array tasks one per line).

    Asking by user rather than by id: squeue fails outright when any listed id
    has left the controller's memory.
    """
    cmd = ["squeue", "--noheader", "--array", "--states=all", f"--format={SQUEUE_FORMAT}"]
    if user:
        cmd.append(f"--user={user}")
    if job_ids:
        cmd.append("--jobs=" + ",".join(sorted({base_job_id(j) for j in job_ids})))
    return cmd


def parse_squeue(text: str, keys: tp.Container[str] | None = None) -> dict[str, QueueEntry]:
    """Entries of `squeue_command` output, by adora job key; only ``keys`` if given.

    The listing covers every job of the user (tens of thousands on a busy
    account): entries are built only for the jobs asked about.
    """
    out: dict[str, QueueEntry] = {}
    for line in text.splitlines():
        parts = line.strip().split(SEP, 6)
        if len(parts) < 4:
            continue
        job_id, array_id, task_id, state = parts[:4]
        key = job_key(array_id, task_id) if task_id not in ("N/A", "") else job_id
        if keys is not None and key not in keys:
            continue
        used = parse_duration(parts[4]) if len(parts) > 4 else None
        reason = parts[5] if len(parts) > 5 else ""
        name = parts[6] if len(parts) > 6 else ""
        out[key] = QueueEntry(key, normalize_state(state), state, reason=reason, name=name,
                              used=used)
    return out


def format_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def sacct_command(job_ids: tp.Sequence[str] = (), start: datetime | None = None,
                  end: datetime | None = None, *, names: tp.Sequence[str] = ()) -> list[str]:
    """sacct for these jobs (or job names), allocations only, explicit absolute -S/-E.

    (``-S now-1hour`` silently returns nothing on some versions, and without
    -S, sacct only looks at jobs since midnight.)
    """
    cmd = ["sacct", "--noheader", "--parsable2", "--allocations",
           f"--format={','.join(SACCT_FIELDS)}"]
    if start is not None:
        cmd.append(f"--starttime={format_time(start)}")
    if end is not None:
        cmd.append(f"--endtime={format_time(end)}")
    if job_ids:
        ids = sorted({base_job_id(j) for j in job_ids}, key=lambda s: (len(s), s))
        cmd.append("--jobs=" + ",".join(ids))
    if names:
        cmd.append("--name=" + ",".join(sorted(set(names))))
        # Selected by name and time window only, sacct leaves out the jobs cancelled
        # before they started (a chain's later links); naming every state keeps them.
        cmd.append("--state=" + ",".join(SACCT_STATES))
    return cmd


def parse_exit_code(text: str) -> int | None:
    """``"2:0"`` -> 2; a job killed by a signal (``"0:9"``) -> 128 + signal."""
    match = re.fullmatch(r"\s*(\d+):(\d+)\s*", text or "")
    if not match:
        return None
    code, signal = int(match.group(1)), int(match.group(2))
    return code if signal == 0 else 128 + signal


_PENDING_ARRAY = re.compile(r"^(\d+)_\[(.*)\]$")


def expand_array_ranges(spec: str) -> list[int]:
    """``"0-3,7%2"`` -> [0, 1, 2, 3, 7]."""
    spec = spec.split("%", 1)[0]
    out: list[int] = []
    for part in spec.split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            step = 1
            if ":" in hi:
                hi, step_text = hi.split(":", 1)
                step = int(step_text)
            out.extend(range(int(lo), int(hi) + 1, step))
        else:
            out.append(int(part))
    return out


def parse_sacct(text: str) -> dict[str, QueueEntry]:
    """Entries of `sacct_command` output by adora job key; pending array ranges expanded."""
    out: dict[str, QueueEntry] = {}
    for line in text.splitlines():
        parts = line.strip().split(SEP, 5)
        if len(parts) < 3:
            continue
        job_id, state, exit_code = parts[:3]
        used = parse_duration(parts[3]) if len(parts) > 3 else None
        reason = parts[4] if len(parts) > 4 else ""
        name = parts[5] if len(parts) > 5 else ""
        entry_state = normalize_state(state)
        code = parse_exit_code(exit_code)
        pending = _PENDING_ARRAY.match(job_id)
        keys = [f"{pending.group(1)}_{i}" for i in expand_array_ranges(pending.group(2))] \
            if pending else [job_id]
        for key in keys:
            out[key] = QueueEntry(key, entry_state, state, code, reason, name, used)
    return out


def scancel_command(job_ids: tp.Sequence[str]) -> list[str]:
    """One scancel for every job (array tasks by ``<id>_<index>``)."""
    return ["scancel", *sorted(set(job_ids), key=lambda s: (len(s), s))]


def parse_sbatch(text: str) -> str:
    """Job id from ``sbatch --parsable`` (``123`` or ``123;cluster``)."""
    first = text.strip().splitlines()[-1] if text.strip() else ""
    job_id = first.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise ValueError(f"Unexpected sbatch output: {text!r}")
    return job_id


def parse_scontrol_config(text: str) -> dict[str, str]:
    """``scontrol show config`` as a dict (``MaxArraySize`` -> ``"10001"``)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" not in line:
            continue
        key, value = line.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def array_spec(count: int, parallelism: int | None = None) -> str:
    """``--array`` value for ``count`` tasks: ``0-<count-1>%<parallelism>``."""
    spec = f"0-{count - 1}" if count > 1 else "0"
    if parallelism:
        spec += f"%{min(count, parallelism)}"
    return spec


#: Exit status of a fenced sbatch that found its submission abandoned (see `fenced_command`).
ABANDONED_STATUS = 4

_FENCED = ('if [ -e "$1" ]; then echo "adora: this submission was abandoned by the run '
           f'that recovered it" >&2; exit {ABANDONED_STATUS}; fi; shift; exec "$@"')


def fence_files(folder: str, job_name: str) -> tuple[str, str]:
    """The lock and the abandoned mark of the submission ``job_name`` in ``folder``."""
    return (f"{folder.rstrip('/')}/.{job_name}.lock",
            f"{folder.rstrip('/')}/.{job_name}.abandoned")


def fenced_command(argv: tp.Sequence[str], lock: str, mark: str) -> list[str]:
    """``argv`` (an sbatch) run under ``flock`` on ``lock``, and only if ``mark`` is absent.

    The sbatch of an adora that was killed goes on running; the run that recovers the
    submission takes the same lock and writes the mark before it looks for the job by
    name, so that the sbatch either returned before or never submits
    (`adora.backends.slurm.fence`).
    """
    return ["flock", lock, "sh", "-c", _FENCED, "adora-sbatch", mark, *argv]
