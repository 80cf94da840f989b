"""Durable records of the jobs of each XP, kept in its folder.

``xps/<sig>/adora_job.json`` holds the XP's current job: the backend, the job
id, where its log goes, and once known its final state. It is written in two
steps around every submission:

1. an *intent* (``job_id`` None, a fresh ``token`` that is also in the job name)
   before the backend is asked to submit;
2. the job id, once the backend answered.

An interrupted submission thus leaves an intent, never an unknown job: the
next run asks the backend for jobs named after the token and adopts what it
finds, or submits anew. Files are replaced atomically (write, then rename).
"""

from __future__ import annotations

import json
import os
import time
import typing as tp
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .states import JobState

__all__ = ["JOB_FILE", "JobRecord", "clear_record", "job_name_for", "load_record", "new_token",
           "save_record", "write_json_atomic"]

JOB_FILE = "adora_job.json"


def new_token() -> str:
    """A short random token naming one submission."""
    return uuid.uuid4().hex[:12]


@dataclass
class JobRecord:
    """The current job of one XP."""

    backend: str
    token: str
    job_id: str | None = None
    array_id: str | None = None
    array_index: int | None = None
    job_name: str | None = None
    log: str | None = None
    submitted_at: float = field(default_factory=time.time)
    #: Final state once reached (so finished jobs are never queried again).
    final_state: str | None = None
    exit_code: int | None = None
    #: Earlier job ids of this XP, oldest first.
    previous: list[str] = field(default_factory=list)
    slurm: dict[str, tp.Any] | None = None
    extra: dict[str, tp.Any] = field(default_factory=dict)

    @property
    def submitting(self) -> bool:
        """True for an intent whose submission was never confirmed."""
        return self.job_id is None

    @property
    def final(self) -> JobState | None:
        return JobState(self.final_state) if self.final_state else None

    def to_json(self) -> dict[str, tp.Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, tp.Any]) -> JobRecord:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def record_path(folder: Path) -> Path:
    return folder / JOB_FILE


def load_record(folder: Path) -> JobRecord | None:
    """The job record in XP folder ``folder``, or None if it has none (or it is unreadable)."""
    try:
        data = json.loads(record_path(folder).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    try:
        return JobRecord.from_json(data)
    except TypeError:
        return None


def write_json_atomic(path: Path, value: tp.Any) -> None:
    """Write ``value`` as JSON to ``path`` through a temporary file and a rename.

    Readers see the old content or the new one, never a half-written file.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def save_record(folder: Path, record: JobRecord) -> None:
    """Atomically write ``record`` into XP folder ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record_path(folder), record.to_json())


def clear_record(folder: Path) -> None:
    try:
        record_path(folder).unlink()
    except FileNotFoundError:
        pass


def job_name_for(token: str) -> str:
    """The job name of a submission: lets an interrupted submission be found again."""
    return f"adora_{token}"
