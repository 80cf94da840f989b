"""Durable records of the jobs of each XP, kept in its folder.

``xps/<sig>/adora_job.json`` holds the XP's current job: the backend, the job
id, where its log goes, and once known its final state. A submission of many
XPs (a job array) is recorded in two steps:

1. before the backend is asked to submit, each XP gets an *intent*: its record
   without a job id, naming the submission by a fresh ``token`` (also in the job
   name) and its place in it (``array_index``);
2. once the backend answered, one file for the whole submission,
   ``<dir>/.adora/submissions/<token>.json``, gives the job ids.

Loading a record whose job id is missing looks it up in its submission's file
(`load_records`); a record is written again in full when something about its
job changes (e.g. its final state). One file per submission rather than one
write per XP halves the file-system work of submitting a large grid.

An interrupted submission thus leaves intents without a submission file, never
an unknown job: the next run asks the backend for jobs named after the token
and adopts what it finds, or submits anew. Files are replaced atomically
(write, then rename).
"""

from __future__ import annotations

import json
import os
import time
import typing as tp
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .states import JobState

__all__ = ["JOB_FILE", "JobRecord", "clear_record", "job_name_for", "load_record", "load_records",
           "new_token", "save_record", "save_submission", "sig_of_job", "write_json_atomic"]

JOB_FILE = "adora_job.json"
#: Under the output directory: one file per submission, with its job ids.
SUBMISSIONS = Path(".adora") / "submissions"
#: Fields a submission file gives to its intents (the rest stays the intent's).
_FROM_SUBMISSION = ("job_id", "array_id", "job_name", "log", "submitted_at", "extra")


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
        # Shallow (asdict deep-copies, a third of the cost of writing a record): the
        # result is for serialising, not for keeping.
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: dict[str, tp.Any]) -> JobRecord:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def record_path(folder: Path) -> Path:
    return folder / JOB_FILE


def _read_record(folder: Path) -> JobRecord | None:
    try:
        data = json.loads(record_path(folder).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    try:
        return JobRecord.from_json(data)
    except TypeError:
        return None


def submission_path(root: Path, token: str) -> Path:
    """The file recording the job ids of submission ``token`` under output dir ``root``."""
    return root / SUBMISSIONS / f"{token}.json"


def save_submission(root: Path, token: str, records: tp.Sequence[JobRecord],
                    sigs: tp.Sequence[str]) -> None:
    """Record the job ids of one submission, ``records[i]`` (XP ``sigs[i]``) being array
    index ``i``.

    One atomic write completes the intents of every XP of the submission, and
    lets `sig_of_job` find the XP of a job id.
    """
    path = submission_path(root, token)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"token": token, "records": [
        {"sig": sig, **{name: getattr(r, name) for name in _FROM_SUBMISSION}}
        for sig, r in zip(sigs, records)]})


def sig_of_job(root: Path, job_id: str) -> str | None:
    """The signature of the XP that job ``job_id`` runs, from the submission files
    (newest first), or None."""
    folder = root / SUBMISSIONS
    try:
        paths = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return None
    for path in paths:
        try:
            entries = json.loads(path.read_text())["records"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for entry in entries:
            if isinstance(entry, dict) and entry.get("job_id") == job_id and entry.get("sig"):
                return str(entry["sig"])
    return None


def _resolve(record: JobRecord, root: Path, cache: dict[str, list[dict[str, tp.Any]] | None]
             ) -> None:
    # Fill an intent's job id from its submission's file, if the submission finished.
    token = record.token
    if token not in cache:
        try:
            data = json.loads(submission_path(root, token).read_text())
            cache[token] = data["records"] if data.get("token") == token else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            cache[token] = None
    entries = cache[token]
    index = record.array_index
    if entries is None or index is None or not 0 <= index < len(entries):
        return
    entry = entries[index]
    if not isinstance(entry, dict) or not entry.get("job_id"):
        return
    for name in _FROM_SUBMISSION:
        if name in entry:
            setattr(record, name, entry[name])


def load_records(folders: tp.Sequence[Path]) -> list[JobRecord | None]:
    """The job record of each XP folder (None where there is none or it is unreadable).

    Intents of finished submissions get their job ids from the submission's
    file. Call from a worker thread: this does file I/O (spread over threads).
    """
    from .files import map_threads

    records = map_threads(_read_record, folders, where=folders[0] if folders else None)
    cache: dict[str, list[dict[str, tp.Any]] | None] = {}
    for folder, record in zip(folders, records):
        if record is not None and record.job_id is None:
            _resolve(record, folder.parent.parent, cache)
    return records


def load_record(folder: Path) -> JobRecord | None:
    """The job record in XP folder ``folder``, or None if it has none (or it is unreadable)."""
    return load_records([folder])[0]


def write_json_atomic(path: Path, value: tp.Any) -> None:
    """Write ``value`` as JSON to ``path`` through a temporary file and a rename.

    Readers see the old content or the new one, never a half-written file.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def save_record(folder: Path, record: JobRecord) -> None:
    """Atomically write ``record`` into XP folder ``folder`` (created if needed)."""
    path = record_path(folder)
    data = record.to_json()
    try:
        write_json_atomic(path, data)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, data)


def clear_record(folder: Path) -> None:
    try:
        record_path(folder).unlink()
    except FileNotFoundError:
        pass


def job_name_for(token: str) -> str:
    """The job name of a submission: lets an interrupted submission be found again."""
    return f"adora_{token}"
