"""Durable records of the jobs of each XP, kept in its folder.

A job record holds an XP's current job: the backend, the job id, where its log
goes, and once known its final state. A submission (a job array of up to
thousands of XPs) is recorded in one file, ``<dir>/.adora/submissions/<token>.json``,
written twice:

1. with *intents* (records without job ids, naming the submission by a fresh
   ``token``, also in the job name) before the backend is asked to submit;
2. with the job ids, once the backend answered.

An interrupted submission thus leaves intents, never an unknown job: the next
run asks the backend for jobs named after the token and adopts what it finds,
or submits anew. Two writes per submission, not two per XP, are most of what
makes submitting 1,000 XPs fast.

Once something about a job changes (its final state), the record is written in
the XP's own folder, ``xps/<sig>/adora_job.json``, which then supersedes the
submission's entry; a submission file moves to ``submissions/done/`` when none of
its XPs needs it any more (`prune_submission`). `load_records` reads both and keeps the current
one. Files are replaced atomically (write, then rename).
"""

from __future__ import annotations

import json
import os
import time
import typing as tp
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .files import read_small
from .states import JobState

__all__ = ["JOB_FILE", "JobRecord", "clear_record", "job_name_for", "load_own_record",
           "load_record", "load_records", "new_token", "pid_alive", "prune_submission",
           "remove_temporaries",
           "save_record", "save_submission", "settle_submission", "sig_of_job",
           "write_json_atomic", "write_json_new"]

JOB_FILE = "adora_job.json"
#: Under the output directory: one file per submission, with its job ids.
SUBMISSIONS = Path(".adora") / "submissions"
#: Under SUBMISSIONS: files of submissions whose jobs all ended.
DONE = "done"


def new_token() -> str:
    """A short random token naming one submission."""
    return uuid.uuid4().hex[:12]


@dataclass(slots=True)
class JobRecord:
    """The current job of one XP."""

    # (Slots: a re-run of a 100,000-XP grid makes 100,000 records; twice as fast to make.)
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
    #: With ``SlurmConfig.dependents``: the later links of the chain (``job_id`` is the
    #: first), in order, each waiting for the one before to end unsuccessfully.
    dependents: list[str] = field(default_factory=list)
    slurm: dict[str, tp.Any] | None = None
    extra: dict[str, tp.Any] = field(default_factory=dict)

    @property
    def submitting(self) -> bool:
        """True for an intent whose submission was never confirmed."""
        return self.job_id is None

    @property
    def final(self) -> JobState | None:
        return JobState(self.final_state) if self.final_state else None

    @property
    def links(self) -> list[str]:
        """Every job of this record: ``job_id``, then the chain's later links."""
        return ([self.job_id] if self.job_id else []) + list(self.dependents)

    def log_of(self, job_id: str | None) -> str | None:
        """The log of ``job_id``, one of `links`: each link logs next to the first, with
        its own id in the file name in place of the first's."""
        if not self.log or not job_id or not self.job_id or job_id == self.job_id:
            return self.log
        folder, name = os.path.split(self.log)
        return os.path.join(folder, name.replace(self.job_id, job_id, 1))

    def to_json(self) -> dict[str, tp.Any]:
        # Shallow (asdict deep-copies, a third of the cost of writing a record): the
        # result is for serialising, not for keeping.
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: dict[str, tp.Any]) -> JobRecord:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


def record_path(folder: Path) -> Path:
    return folder / JOB_FILE


class _Unreadable(tp.NamedTuple):
    path: Path
    error: str


def _load_own(folder: Path) -> JobRecord | _Unreadable | None:
    path = f"{folder}/{JOB_FILE}"  # a string: this runs for every XP folder
    try:
        raw = read_small(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        text = raw.decode()
        data = json.loads(text)
        record = JobRecord.from_json(data)
        if record.final_state is not None:
            JobState(record.final_state)
        if not isinstance(record.token, str) or not isinstance(record.backend, str):
            raise TypeError("backend and token must be strings")
        return record
    except (ValueError, TypeError, AttributeError) as exc:
        return _Unreadable(Path(path), f"{type(exc).__name__}: {exc}")


def load_own_record(folder: Path) -> JobRecord | None:
    """The record in the XP folder's own ``adora_job.json`` (not its submission's);
    None if there is none or it is unreadable."""
    record = _load_own(folder)
    return record if isinstance(record, JobRecord) else None


def submission_path(root: Path, token: str) -> Path:
    """The file recording submission ``token`` under output dir ``root``."""
    return root / SUBMISSIONS / f"{token}.json"


#: Fields shared by every job of a submission, stored once in its file.
_COMMON = ("backend", "token", "job_name", "slurm")


def save_submission(root: Path, token: str, records: tp.Sequence[JobRecord],
                    sigs: tp.Sequence[str]) -> None:
    """Record submission ``token``: ``records[i]`` is the job of XP ``sigs[i]``.

    Written once with intents (no job ids) before the backend is asked, once
    more with the job ids it answered: two atomic writes for the whole
    submission, where one per XP would be thousands. `load_records` reads the
    XPs' records from here; `sig_of_job` finds the XP of a job id.
    """
    if not records:
        return
    path = submission_path(root, token)
    first = records[0]
    data: dict[str, tp.Any] = {name: getattr(first, name) for name in _COMMON}
    # Fields at their default (None, empty: a chain's links, previous ids) are left out
    # and read back as defaults: a third of the size of a 100,000-entry file.
    data["records"] = [
        {"sig": sig, **{name: value for name, value in r.to_json().items()
                        if name not in _COMMON and value is not None
                        and (value or type(value) not in (list, dict))}}
        for sig, r in zip(sigs, records)]
    write_json_atomic(path, data, make_parents=True, durable=True)


def _read_submission(path: Path, wanted: tp.Container[str] | None = None
                     ) -> list[tuple[str, JobRecord]]:
    # Records of the XPs in ``wanted`` only (all if None): a folder's other grids'
    # submissions hold thousands of entries this run does not need.
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return []
    try:
        data = json.loads(text)
        common = {name: data[name] for name in _COMMON}
        known = JobRecord.__dataclass_fields__
        # An entry holding only fields of a record (and its sig) is used as it is.
        plain = {*known, "sig"}
        out = []
        # One dict per entry, not three: a submission of a 100,000-XP grid lists them all.
        for entry in data["records"]:
            sig = entry.pop("sig")
            if wanted is not None and sig not in wanted:
                continue
            if not entry.keys() <= plain:
                entry = {k: v for k, v in entry.items() if k in known}
            entry.update(common)
            out.append((str(sig), JobRecord(**entry)))
        return out
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # Its jobs may exist: going on would submit their XPs again.
        from .errors import RecordError

        raise RecordError(
            f"The submission record {path} is unreadable ({type(exc).__name__}: {exc}). "
            f"It lists jobs adora submitted: cancel them if they exist (their job name is "
            f"adora_{path.stem}), then delete the file.") from exc


def _submissions(root: Path, *, done: bool = False) -> list[Path]:
    folder = root / SUBMISSIONS / DONE if done else root / SUBMISSIONS
    try:
        return [folder / name for name in os.listdir(folder) if name.endswith(".json")]
    except (FileNotFoundError, NotADirectoryError):
        return []


def sig_of_job(root: Path, job_id: str) -> str | None:
    """The signature of the XP that job ``job_id`` ran, from the submission files
    (current ones, then those of ended submissions), or None."""
    for path in _submissions(root) + _submissions(root, done=True):
        for sig, record in _read_submission(path):
            if record.job_id == job_id or job_id in record.dependents:
                return sig
    return None


def _newest(own: JobRecord | None, listed: JobRecord | None) -> JobRecord | None:
    # The XP folder's own record against its entry in a submission file: the same
    # submission -> the one that knows the job id (the folder's, once written there);
    # different ones -> the later submission.
    if own is None or listed is None:
        return own or listed
    if own.token == listed.token:
        return own if own.job_id is not None else listed
    return own if own.submitted_at >= listed.submitted_at else listed


def load_records(folders: tp.Sequence[Path], present: tp.Container[str] | None = None
                 ) -> list[JobRecord | None]:
    """The job record of each XP folder (None where there is none): the folder's own
    ``adora_job.json`` or its entry in a submission file, whichever is current.
    Call from a worker thread (file I/O).

    A folder's record that cannot be read (garbage, a foreign format) is taken from
    the submission files, those of ended submissions included, without its final
    state, so the backend is asked again what became of the job: an unreadable
    record never makes an XP look new (it would run again). With no submission
    listing the XP, `RecordError` says which file and what to do.

    ``present``: the names of the XP folders that exist (one listing of their parent),
    if known; the others have no file of their own to read.
    """
    from .files import map_threads

    own: list[JobRecord | _Unreadable | None]
    if present is None:
        own = map_threads(_load_own, folders, where=folders[0] if folders else None)
    else:
        own = [None] * len(folders)
        indexes = [i for i, folder in enumerate(folders) if folder.name in present]
        got = map_threads(_load_own, [folders[i] for i in indexes],
                          where=folders[0] if folders else None)
        for i, record in zip(indexes, got):
            own[i] = record
    wanted = {folder.name for folder in folders}
    # Output dirs by XP parent folder (as strings: Path.parent per XP is costly).
    roots: dict[str, tuple[Path, dict[str, JobRecord]]] = {}
    out: list[JobRecord | None] = []
    for folder, record in zip(folders, own):
        parent = os.path.dirname(str(folder))
        known = roots.get(parent)
        if known is None:
            root = folder.parent.parent
            known = roots[parent] = (root, _index_submissions(_submissions(root), wanted))
        root, listed = known
        name = folder.name
        if isinstance(record, _Unreadable):
            out.append(_rebuild(root, name, record, listed.get(name)))
        elif record is None:
            out.append(listed.get(name))
        else:
            out.append(_newest(record, listed.get(name)))
    return out


def _index_submissions(paths: tp.Iterable[Path], wanted: tp.Container[str]
                       ) -> dict[str, JobRecord]:
    index: dict[str, JobRecord] = {}
    for path in paths:
        for sig, entry in _read_submission(path, wanted):
            index[sig] = _newest(index.get(sig), entry) or entry
    return index


def _rebuild(root: Path, sig: str, bad: _Unreadable, listed: JobRecord | None) -> JobRecord:
    if listed is None:
        listed = _index_submissions(_submissions(root, done=True), {sig}).get(sig)
        if listed is not None:
            listed.final_state, listed.exit_code = None, None
    if listed is not None:
        return listed
    from .errors import RecordError

    raise RecordError(
        f"The job record {bad.path} is unreadable ({bad.error}), and no submission file "
        f"under {root / SUBMISSIONS} lists XP {sig}: adora cannot tell whether it ran or "
        f"runs. Nothing was submitted or cancelled. Look at the XP's folder (its history "
        f"and logs). If it has no job running, delete {bad.path} and run again: the XP "
        f"is then submitted anew (or resumed from its checkpoint).")


def settle_submission(root: Path, token: str, job_ids: tp.Mapping[str, str | None],
                      dependents: tp.Mapping[str, tp.Sequence[str]] | None = None) -> None:
    """After recovering an interrupted submission: give its XPs the job ids found
    (``sig -> id``, and ``sig -> later links`` for chains), and drop those whose job
    never existed (``sig -> None``)."""
    path = submission_path(root, token)
    entries = _read_submission(path)
    kept, sigs = [], []
    for sig, record in entries:
        if sig in job_ids:
            if job_ids[sig] is None:
                continue
            record.job_id = job_ids[sig]
            if dependents and sig in dependents:
                record.dependents = list(dependents[sig])
        kept.append(record)
        sigs.append(sig)
    if kept:
        save_submission(root, token, kept, sigs)
    elif entries:
        path.unlink(missing_ok=True)


def prune_submission(root: Path, token: str, xps: Path) -> bool:
    """Retire the file of submission ``token`` once no XP needs it any more: each has,
    in its own folder (``xps/<sig>``), the final state of this job or a later job.
    Stops at the first XP that still needs it. Returns whether the file was retired:
    moved to ``submissions/done/``, which `load_records` no longer reads and
    `sig_of_job` still does (``adora info -j`` of an old job).
    """
    path = submission_path(root, token)
    entries = _read_submission(path)
    if not entries:
        return False
    for sig, entry in entries:
        own = load_own_record(xps / sig)
        if own is None:
            return False
        if own.token == token and own.final_state is None:
            return False
        if own.token != token and own.submitted_at < entry.submitted_at:
            return False
    (path.parent / DONE).mkdir(exist_ok=True)
    # The XPs' own records (written without fsync, thousands at a time) must reach the
    # disk before the file that could rebuild them retires: one sync for all of them.
    os.sync()
    try:
        os.replace(path, path.parent / DONE / path.name)
    except FileNotFoundError:
        return False
    return True


def load_record(folder: Path) -> JobRecord | None:
    """The job record in XP folder ``folder``, or None if it has none (or it is unreadable)."""
    return load_records([folder])[0]


def write_json_atomic(path: Path, value: tp.Any, *, make_parents: bool = False,
                      durable: bool = False) -> None:
    """Write ``value`` as JSON to ``path`` through a temporary file and a rename.

    Readers see the old content or the new one, never a half-written file, even
    if the process is killed in between (a leftover temporary file is removed by
    `remove_temporaries`). ``durable``: also survive a power loss or a crash of
    the machine (fsync of the file before the rename, and of its folder after):
    for records that cannot be rebuilt from elsewhere, such as a submission's
    job ids. ``make_parents``: create the folder if it is missing (only then: no
    extra system call when it exists).
    """
    # Strings, not Paths: this runs for every XP of a grid.
    text = os.fspath(path)
    parent, name = os.path.split(text)
    tmp = os.path.join(parent, f".{name}.{os.getpid()}.tmp")
    data = json.dumps(value).encode()
    try:
        try:
            _write_file(tmp, data, durable)
        except FileNotFoundError:
            if not make_parents:
                raise
            Path(parent or ".").mkdir(parents=True, exist_ok=True)
            _write_file(tmp, data, durable)
        os.replace(tmp, text)
    except BaseException as exc:  # e.g. a full disk: leave no temporary file
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            from .files import with_filename

            raise with_filename(exc, path) from None  # name the file, not the temporary
        raise
    if durable:
        fd = os.open(parent or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json_new(path: str | Path, value: tp.Any) -> None:
    """Write ``value`` as JSON to ``path``, a file that does not exist yet (in a folder
    this process just created): no temporary file and rename, which cost a third of
    submitting a big grid. A process killed mid-write leaves a short file, which the
    next `write_json_atomic` of the same path replaces (readers must expect it, as they
    expect a file written by Dora, which writes in place). Falls back to
    `write_json_atomic` if the file exists."""
    data = json.dumps(value).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except FileExistsError:
        write_json_atomic(Path(path), value)
        return
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_file(path: str, data: bytes, durable: bool) -> None:
    # os.open, not open(): a buffered file object adds an fstat, an ioctl and a seek.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        _write_all(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_temporaries(folder: Path) -> int:
    """Remove the temporary files `write_json_atomic` left in ``folder`` when its
    process was killed (their writer's pid is in their name, and it is gone).
    Returns how many were removed."""
    removed = 0
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for name in names:
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        pid = name[:-4].rsplit(".", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            try:
                os.unlink(folder / name)
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def save_record(folder: Path, record: JobRecord) -> None:
    """Atomically write ``record`` into XP folder ``folder`` (created if needed)."""
    write_json_atomic(record_path(folder), record.to_json(), make_parents=True)


def clear_record(folder: Path) -> None:
    try:
        record_path(folder).unlink()
    except FileNotFoundError:
        pass


def job_name_for(token: str) -> str:
    """The job name of a submission: lets an interrupted submission be found again."""
    return f"adora_{token}"
