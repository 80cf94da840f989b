"""The on-disk queue of the local backend, shared by the CLI and the runner process.

The queue is one SQLite database in WAL mode, ``<dir>/.adora/local/queue.db``:
the local backend runs on this machine, so its queue lives on this machine's
disk, where SQLite's transactions are safe. Each change is one transaction, so
a process killed at any moment (kill -9, SIGTERM, a full disk) leaves the queue
as it was before the change or as it is after it, never in between: a
submission of 1,000 jobs is all queued or not at all, and a job id is never
handed out twice (``AUTOINCREMENT`` never reuses one, even after deletions).

Tables:

    submissions(name, cwd, env)   what a submission's jobs share (the environment
                                  is stored once, not once per job)
    jobs(id, name, sig, cmd, log, state, pid, exit_code, reason, cancel, ...)
                                  PENDING -> RUNNING -> COMPLETED | FAILED | CANCELLED
    config(key, value)            max_parallel

Beside it: ``jobs/<id>.exit`` (the exit code, written by the job's own shell when
it ends, so a runner that dies never loses it), ``runner.lock`` (flock, held by
the live runner) and ``runner.log``. These functions are synchronous; the
engine calls them from worker threads.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import subprocess
import sys
import time
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RecordError

__all__ = ["FINAL", "LocalQueue", "QueueError", "wrap_command"]

FINAL = ("COMPLETED", "FAILED", "CANCELLED")

# Runs the job, then records its exit code atomically; "$@" keeps every
# argument intact whatever characters it holds.
_WRAPPER = ('rc=0; "$@" || rc=$?; printf %s "$rc" > "$ADORA_EXIT_FILE.tmp" '
            '&& mv "$ADORA_EXIT_FILE.tmp" "$ADORA_EXIT_FILE"; exit "$rc"')

_SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    name TEXT PRIMARY KEY, cwd TEXT, env TEXT);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL, sig TEXT NOT NULL, cmd TEXT NOT NULL, log TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'PENDING', pid INTEGER, started_at REAL, ended_at REAL,
    exit_code INTEGER, reason TEXT NOT NULL DEFAULT '', cancel INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS jobs_active ON jobs(state) WHERE state IN ('PENDING', 'RUNNING');
CREATE INDEX IF NOT EXISTS jobs_cancel ON jobs(id) WHERE cancel;
CREATE INDEX IF NOT EXISTS jobs_name ON jobs(name);
CREATE TABLE IF NOT EXISTS config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

#: How long a writer waits for another one (the runner, a second CLI) to commit.
BUSY_TIMEOUT = 120.0


class QueueError(RecordError):
    """The local queue's database cannot be read or written."""


def wrap_command(cmd: tp.Sequence[str]) -> list[str]:
    return ["/bin/sh", "-c", _WRAPPER, "adora-job", *cmd]


def _audit_write(what: str, path: Path) -> None:
    # SQLite writes out of sight of Python's audit hooks: crash-consistency tests
    # (adora.testing.crash) count this event as a write, just before the commit.
    sys.audit("adora.write", what, str(path))


@dataclass
class LocalQueue:
    """The queue of local jobs under ``root`` (``<dir>/.adora/local``)."""

    root: Path
    _db: sqlite3.Connection | None = field(default=None, repr=False, compare=False)
    _pid: int = field(default=0, repr=False, compare=False)
    _inode: int = field(default=0, repr=False, compare=False)

    @property
    def jobs(self) -> Path:
        """Folder of the exit-code files."""
        return self.root / "jobs"

    @property
    def path(self) -> Path:
        return self.root / "queue.db"

    def ensure(self) -> None:
        self.jobs.mkdir(parents=True, exist_ok=True)

    def exists(self) -> bool:
        return self.path.exists()

    # -- the database ------------------------------------------------------------
    def _broken(self, exc: BaseException, doing: str) -> QueueError:
        return QueueError(
            f"The local job queue {self.path} could not be {doing} ({exc}). Nothing was "
            f"changed. If the disk is full or read-only, fix that and run the command again. "
            f"If the file is damaged: local jobs it started may still run (see `ps`); "
            f"move it aside (mv {self.path} {self.path}.broken) and run again. adora then "
            f"forgets the jobs it queued: XPs whose folder records a final state keep it, the "
            f"others show as MISSING (resubmit them with -r); none runs again by itself.")

    def db(self) -> sqlite3.Connection:
        """The connection (one per process: a forked child opens its own)."""
        if self._db is not None and self._pid == os.getpid():
            return self._db
        created = not self.path.exists()
        try:
            self.ensure()
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a crash of the process; only a
            # power loss can undo the last commits, never corrupt the database.
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise self._broken(exc, "opened") from exc
        except OSError as exc:
            raise self._broken(exc, "created") from exc
        self._db, self._pid = db, os.getpid()
        try:
            self._inode = self.path.stat().st_ino
        except OSError:
            self._inode = 0
        if created:
            self._import_files()
        return db

    def reopen_if_replaced(self) -> None:
        """Open the database again if its file was replaced or moved aside since it was
        opened (a long-lived process, the runner, would go on using the old one)."""
        if self._db is None:
            return
        try:
            inode = self.path.stat().st_ino
        except FileNotFoundError:
            inode = -1
        if inode != self._inode:
            self.close()

    def close(self) -> None:
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        self._db = None

    def _read(self, sql: str, params: tp.Sequence[tp.Any] = ()) -> list[tuple[tp.Any, ...]]:
        try:
            return self.db().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._broken(exc, "read") from exc

    def _write(self, what: str, statements: tp.Callable[[sqlite3.Connection], tp.Any]) -> tp.Any:
        """Run ``statements`` in one transaction (taken for writing at once)."""
        db = self.db()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                out = statements(db)
                _audit_write(what, self.path)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._broken(exc, "updated") from exc
        return out

    def _import_files(self) -> None:
        # Queues of adora versions before the database: one JSON file per job, a state
        # file beside it. Their jobs keep their ids; the files are left where they are.
        specs = []
        for path in self.jobs.glob("*.json"):
            stem = path.name[:-5]
            if not stem.isdigit():
                continue
            try:
                spec = json.loads(path.read_text())
                state = {}
                if (self.jobs / f"{stem}.state.json").exists():
                    state = json.loads((self.jobs / f"{stem}.state.json").read_text())
            except ValueError:
                continue
            specs.append((int(stem), spec, state))
        if not specs:
            return

        def _insert(db: sqlite3.Connection) -> None:
            for job_id, spec, state in sorted(specs, key=lambda item: item[0]):
                name = str(spec.get("name", ""))
                db.execute("INSERT OR IGNORE INTO submissions VALUES (?, ?, ?)",
                           (name, spec.get("cwd"), json.dumps(spec.get("env"))))
                db.execute(
                    "INSERT OR IGNORE INTO jobs (id, name, sig, cmd, log, submitted_at, state,"
                    " pid, started_at, ended_at, exit_code, reason) VALUES"
                    " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, name, str(spec.get("sig", "")), json.dumps(spec.get("cmd", [])),
                     str(spec.get("log", "")), spec.get("submitted_at") or time.time(),
                     state.get("state", "PENDING"), state.get("pid"), state.get("started_at"),
                     state.get("ended_at"), state.get("exit_code"), state.get("reason", "")))
        self._write("import", _insert)

    # -- submission ------------------------------------------------------------
    def add_jobs(self, specs: list[dict[str, tp.Any]]) -> list[str]:
        """Queue jobs (dicts with name, sig, cmd, cwd, env, log) in one transaction;
        return their ids. ``{id}`` in a spec's ``log`` is replaced by the job's id.

        The jobs of one call share one submission name, cwd and environment.
        """
        if not specs:
            return []
        first = specs[0]
        now = time.time()

        def _insert(db: sqlite3.Connection) -> list[str]:
            db.execute("INSERT OR REPLACE INTO submissions VALUES (?, ?, ?)",
                       (first["name"], str(first.get("cwd")), json.dumps(first.get("env"))))
            start = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
            last = start[0] if start else 0
            ids = [str(last + i + 1) for i in range(len(specs))]
            db.executemany(
                "INSERT INTO jobs (id, name, sig, cmd, log, submitted_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(int(job_id), spec["name"], spec.get("sig", ""), json.dumps(spec["cmd"]),
                  str(spec.get("log", "")).replace("{id}", job_id), now)
                 for job_id, spec in zip(ids, specs)])
            return ids
        return tp.cast("list[str]", self._write("submit", _insert))

    def set_max_parallel(self, max_parallel: int) -> None:
        if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) \
                or max_parallel < 1:
            from ..errors import ConfigError

            raise ConfigError(f"max_parallel must be a whole number >= 1, not {max_parallel!r}.")
        self._write("config", lambda db: db.execute(
            "INSERT OR REPLACE INTO config VALUES ('max_parallel', ?)", (str(max_parallel),)))

    def max_parallel(self) -> int:
        rows = self._read("SELECT value FROM config WHERE key = 'max_parallel'")
        try:
            return max(1, int(rows[0][0]))
        except (IndexError, ValueError):
            return os.cpu_count() or 1

    def has_max_parallel(self) -> bool:
        return bool(self._read("SELECT 1 FROM config WHERE key = 'max_parallel'"))

    def request_cancel(self, job_ids: tp.Iterable[str]) -> None:
        ids = [int(job_id) for job_id in job_ids]
        if ids:
            self._write("cancel", lambda db: db.execute(
                "UPDATE jobs SET cancel = 1 WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),)))

    # -- reading -----------------------------------------------------------------
    def spec(self, job_id: str) -> dict[str, tp.Any] | None:
        """What the runner needs to start a job: cmd, cwd, env, log, name, sig."""
        rows = self._read(
            "SELECT jobs.name, sig, cmd, log, cwd, env FROM jobs LEFT JOIN submissions "
            "ON submissions.name = jobs.name WHERE id = ?", (int(job_id),))
        if not rows:
            return None
        name, sig, cmd, log, cwd, env = rows[0]
        return {"id": job_id, "name": name, "sig": sig, "cmd": json.loads(cmd), "log": log,
                "cwd": cwd, "env": json.loads(env) if env else None}

    _STATE_COLUMNS = "id, state, pid, started_at, ended_at, exit_code, reason, cancel, name, sig"

    @staticmethod
    def _state_dict(row: tuple[tp.Any, ...]) -> dict[str, tp.Any]:
        keys = ("id", "state", "pid", "started_at", "ended_at", "exit_code", "reason",
                "cancel", "name", "sig")
        out = dict(zip(keys, row))
        out["id"] = str(out["id"])
        return out

    def states(self, job_ids: tp.Iterable[str] | None = None) -> dict[str, dict[str, tp.Any]]:
        """States of these jobs (all if None) by id, in one query: dicts with ``state``,
        ``exit_code``, ``reason``, ``pid``, ``started_at``, ``ended_at``, ``name``, ``sig``."""
        if job_ids is None:
            rows = self._read(f"SELECT {self._STATE_COLUMNS} FROM jobs")
        else:
            ids = [int(job_id) for job_id in job_ids if str(job_id).isdigit()]
            rows = self._read(f"SELECT {self._STATE_COLUMNS} FROM jobs WHERE id IN "
                              "(SELECT value FROM json_each(?))", (json.dumps(ids),))
        return {str(row[0]): self._state_dict(row) for row in rows}

    def state(self, job_id: str) -> dict[str, tp.Any] | None:
        """The state of a job: None if unknown id, else a dict with at least ``state``."""
        return self.states([job_id]).get(str(job_id))

    def active(self, pending_limit: int | None = None) -> list[dict[str, tp.Any]]:
        """PENDING and RUNNING jobs, in submission order (one indexed query).

        With ``pending_limit``: every RUNNING job, then every PENDING job with a cancel
        request, then only the first ``pending_limit`` other PENDING ones in submission
        order, which is all a runner can start. Read whole, a queue of 100,000 pending
        jobs cost 0.25 s of CPU, and the runner reads it 10 times a second; this reads a
        few rows (0.1 ms).
        """
        cols = self._STATE_COLUMNS
        if pending_limit is None:
            rows = self._read(f"SELECT {cols} FROM jobs "
                              "WHERE state IN ('PENDING', 'RUNNING') ORDER BY id")
        else:
            # Each part repeats the partial indexes' own conditions, so SQLite uses them.
            rows = self._read(
                f"SELECT {cols} FROM jobs WHERE state IN ('PENDING', 'RUNNING') "
                "AND state = 'RUNNING' "
                f"UNION ALL SELECT {cols} FROM jobs INDEXED BY jobs_cancel "
                "WHERE cancel AND state = 'PENDING' "
                f"UNION ALL SELECT * FROM (SELECT {cols} FROM jobs "
                "WHERE state IN ('PENDING', 'RUNNING') AND state = 'PENDING' AND NOT cancel "
                "ORDER BY id LIMIT ?)", (max(0, pending_limit),))
        return [self._state_dict(row) for row in rows]

    def write_state(self, job_id: str, state: str, **values: tp.Any) -> None:
        """Move a job to ``state``, with ``values`` among pid, started_at, ended_at,
        exit_code, reason."""
        columns = {"pid", "started_at", "ended_at", "exit_code", "reason"}
        unknown = set(values) - columns
        if unknown:
            raise TypeError(f"unknown job fields: {sorted(unknown)}")
        if values.get("reason") is None:
            values.pop("reason", None)
        sets = ", ".join(["state = ?"] + [f"{key} = ?" for key in values])
        self._write("state", lambda db: db.execute(
            f"UPDATE jobs SET {sets} WHERE id = ?", (state, *values.values(), int(job_id))))

    def exit_code(self, job_id: str) -> int | None:
        try:
            return int((self.jobs / f"{job_id}.exit").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def job_ids(self) -> list[str]:
        if not self.exists():
            return []
        return [str(row[0]) for row in self._read("SELECT id FROM jobs ORDER BY id")]

    def find_by_name(self, names: tp.Collection[str]) -> dict[str, list[tuple[str, str]]]:
        """``name -> [(job id, sig), ...]`` of the jobs of these submissions."""
        if not names or not self.exists():
            return {}
        rows = self._read("SELECT name, id, sig FROM jobs WHERE name IN "
                          "(SELECT value FROM json_each(?)) ORDER BY id",
                          (json.dumps(sorted(names)),))
        found: dict[str, list[tuple[str, str]]] = {}
        for name, job_id, sig in rows:
            found.setdefault(name, []).append((str(job_id), sig))
        return found

    # -- locks and the runner ------------------------------------------------------
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
