"""A Slurm client that is kind to the controller.

- one ``squeue`` for every job of the user per tick, whatever the number of
  grids and XPs watched; its output is shared through a small cache file with
  the user's other adora processes (five terminals watching five grids make
  one query, not five);
- ``sacct`` only for jobs that left the queue (final state, exit code), with
  explicit start times; none at all when accounting is off (squeue-only mode);
- ``scancel`` once for many jobs;
- every command through a rate-limited `CommandRunner`.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import time
import typing as tp
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import anyio.to_thread

from ..backends.base import JobStatus
from ..engine.clock import Clock, SystemClock
from ..errors import CommandError
from ..files import FileLock
from ..jobs import JobRecord, write_json_atomic
from ..states import JobState
from . import commands as cmds
from .transport import CommandRunner

__all__ = ["PollCache", "SlurmClient", "cancel_waves", "chain_status"]


def cache_dir() -> Path:
    """``$ADORA_CACHE_DIR``, else ``$XDG_CACHE_HOME/adora``, else ``~/.cache/adora``."""
    if os.environ.get("ADORA_CACHE_DIR"):
        return Path(os.environ["ADORA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "adora"


class PollCache:
    """A queue listing shared by the processes of one user on one cluster.

    `get` returns the cached text if it is younger than ``max_age`` seconds,
    else runs ``fetch`` (under a file lock, so concurrent processes fetch once)
    and stores the result.
    """

    def __init__(self, path: Path, *, max_age: float = 2.0, clock: Clock | None = None) -> None:
        self.path = path
        self.max_age = max_age
        self.clock = clock or SystemClock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(path) + ".lock")
        self.fetches = 0
        self.hits = 0

    def _read(self) -> tuple[float, str] | None:
        try:
            data = json.loads(self.path.read_text())
            return float(data["time"]), str(data["text"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write(self, text: str) -> None:
        write_json_atomic(self.path, {"time": time.time(), "text": text})

    def invalidate(self) -> None:
        """Forget the listing (after sbatch or scancel: it no longer tells the truth)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def get(self, fetch: tp.Callable[[], tp.Awaitable[str]]) -> str:
        while not self._lock.try_acquire():
            await self.clock.sleep(0.05)
        try:
            cached = await anyio.to_thread.run_sync(self._read)
            if cached is not None and 0 <= time.time() - cached[0] < self.max_age:
                self.hits += 1
                return cached[1]
            text = await fetch()
            self.fetches += 1
            await anyio.to_thread.run_sync(self._write, text)
            return text
        finally:
            self._lock.release()


class SlurmClient:
    """Batched, cached and rate-limited access to one Slurm cluster."""

    def __init__(self, runner: CommandRunner, *, cluster: str = "local", user: str | None = None,
                 share_polls: bool = True, poll_max_age: float = 2.0,
                 clock: Clock | None = None, timeout: float = 30.0) -> None:
        self.runner = runner
        self.user = user or getpass.getuser()
        self.clock = clock or SystemClock()
        self.timeout = timeout
        self._config: dict[str, str] | None = None
        # The format is part of the key: another adora version's listing, in another
        # format, is never read as ours.
        key = hashlib.sha1(f"{cluster}|{self.user}|{cmds.SQUEUE_FORMAT}".encode()
                           ).hexdigest()[:12]
        self.cache = PollCache(cache_dir() / f"squeue-{key}.json", max_age=poll_max_age,
                               clock=self.clock) if share_polls else None
        self._finals: dict[str, cmds.QueueEntry] = {}

    async def _run(self, argv: list[str]) -> str:
        return (await self.runner.run(argv, timeout=self.timeout)).check().stdout

    # -- configuration ---------------------------------------------------------------
    async def config(self) -> dict[str, str]:
        if self._config is None:
            self._config = cmds.parse_scontrol_config(
                await self._run(["scontrol", "show", "config"]))
        return self._config

    async def max_array_size(self) -> int:
        """Most tasks one array may hold (indexes go up to MaxArraySize - 1)."""
        value = (await self.config()).get("MaxArraySize", "1001")
        try:
            return max(1, int(value.split()[0]))
        except ValueError:
            return 1001

    async def accounting(self) -> bool:
        """False when the cluster keeps no accounting (sacct would know nothing)."""
        storage = (await self.config()).get("AccountingStorageType", "")
        return "none" not in storage.lower() and storage != ""

    # -- queries -------------------------------------------------------------------------
    async def queue(self, keys: tp.Container[str] | None = None, *, fresh: bool = False
                    ) -> dict[str, cmds.QueueEntry]:
        """The user's jobs in the controller's memory (one squeue, maybe shared): all
        of them, or those of ``keys``. ``fresh``: run squeue now, whatever is shared
        (the result is still shared with the others)."""
        async def fetch() -> str:
            return await self._run(cmds.squeue_command(self.user))
        if fresh:
            self.invalidate()
        text = await self.cache.get(fetch) if self.cache is not None else await fetch()
        return cmds.parse_squeue(text, keys)

    async def sacct(self, job_ids: tp.Sequence[str] = (), *, start: datetime,
                    names: tp.Sequence[str] = ()) -> dict[str, cmds.QueueEntry]:
        end = datetime.now() + timedelta(days=1)
        return cmds.parse_sacct(await self._run(
            cmds.sacct_command(job_ids, start, end, names=names)))

    async def states(self, records: tp.Sequence[JobRecord]) -> dict[str, JobStatus]:
        """States of these jobs: squeue first, sacct for those gone from the queue.

        A chain of dependent jobs (``record.dependents``) is one XP: its status, under
        its first job's id, is its links' combined by `chain_status`.
        """
        flat: list[JobRecord] = []
        chains: list[tuple[str, list[str]]] = []
        for record in records:
            if record.dependents and record.job_id:
                links = record.links
                flat += [replace(record, job_id=link, dependents=[]) for link in links]
                chains.append((record.job_id, links))
            else:
                flat.append(record)
        out = await self._states(flat)
        if not chains:
            return out
        for head, links in chains:
            out[head] = chain_status([(link, out[link]) for link in links])
        asked = {record.job_id for record in records}
        return {job_id: status for job_id, status in out.items() if job_id in asked}

    async def _states(self, records: tp.Sequence[JobRecord]) -> dict[str, JobStatus]:
        queue = await self.queue({r.job_id for r in records if r.job_id})
        out: dict[str, JobStatus] = {}
        ask: list[JobRecord] = []
        for record in records:
            assert record.job_id is not None
            known = self._finals.get(record.job_id)
            if known is not None:
                out[record.job_id] = _status(known, known.exit_code)
                continue
            entry = queue.get(record.job_id)
            if entry is None or (entry.state.is_failed and entry.state is not JobState.CANCELLED):
                ask.append(record)  # gone, or failed: sacct knows the exit code
            if entry is not None:
                code = 0 if entry.state is JobState.COMPLETED else None
                out[record.job_id] = _status(entry, code)
        if ask and await self.accounting():
            start = datetime.fromtimestamp(min(r.submitted_at for r in ask)) - timedelta(hours=1)
            acct = await self.sacct([r.job_id for r in ask if r.job_id], start=start)
            for record in ask:
                assert record.job_id is not None
                entry = acct.get(record.job_id)
                if entry is not None:
                    out[record.job_id] = _status(entry, entry.exit_code)
                    if entry.state.is_final:
                        self._finals[record.job_id] = entry
                elif record.job_id in out:
                    # Failed in squeue, not yet in sacct (it lags by a second or so): the
                    # exit code is still to come, so this is not the final word yet.
                    out[record.job_id] = replace(out[record.job_id], stale=True)
        for record in records:
            assert record.job_id is not None
            if record.job_id not in out:
                # Not in the queue, not (yet) in accounting: sacct lags squeue by a
                # second or so. Unknown for now, asked again next tick.
                out[record.job_id] = JobStatus(JobState.UNKNOWN, reason="not found in squeue "
                                               "nor sacct yet", stale=True)
        return out

    async def cancel_records(self, records: tp.Sequence[JobRecord]) -> None:
        """Cancel the jobs of these records, every link of their chains (`cancel_waves`)."""
        for wave in cancel_waves(records):
            await self.cancel(wave)

    async def cancel(self, job_ids: tp.Sequence[str]) -> None:
        """One scancel for all of them."""
        if not job_ids:
            return
        self.invalidate()
        result = await self.runner.run(cmds.scancel_command(job_ids), timeout=self.timeout)
        if result.exit_status != 0 and "Invalid job id" not in result.stderr:
            raise CommandError(result.argv[:1], result.exit_status, result.stdout,
                               result.stderr)

    def invalidate(self) -> None:
        """The queue changed (we submitted or cancelled): the next listing must be new."""
        if self.cache is not None:
            self.cache.invalidate()

    async def find(self, intents: tp.Sequence[tuple[str, JobRecord]]) -> list[str | None]:
        """Job ids of interrupted submissions, found by job name (queue, then accounting).

        A chain's links share its job name: the first (lowest id) is returned, the
        others are set as the intent's ``dependents``. A chain cut by a crash between
        two sbatch is adopted with the links that exist.
        """
        names = {r.job_name for _, r in intents if r.job_name}
        # A fresh listing: a shared one from before the interrupted sbatch (which never
        # got to invalidate it) would miss the job, sacct may not have it yet either,
        # and its XPs would be submitted a second time.
        entries = [e for e in (await self.queue(fresh=True)).values() if e.name in names]
        # A chain's first link may have left the queue while a later one waits in it.
        chained = any(_dependents_of(r) for _, r in intents)
        if (chained or len({e.name for e in entries}) < len(names)) \
                and await self.accounting():
            start = datetime.fromtimestamp(min(r.submitted_at for _, r in intents)) \
                - timedelta(hours=1)
            acct = await self.sacct(start=start, names=sorted(names))
            entries += list(acct.values())
        by_name: dict[str, set[str]] = {}
        for entry in entries:
            by_name.setdefault(entry.name, set()).add(entry.job_id)
        found: list[str | None] = []
        for _, record in intents:
            ids = sorted(by_name.get(record.job_name or "", ()), key=_numeric)
            arrays = sorted({cmds.base_job_id(i) for i in ids if "_" in i}, key=_numeric)
            if arrays:
                found.append(f"{arrays[-1]}_{record.array_index or 0}")
            elif ids and _dependents_of(record):
                found.append(ids[0])
                record.dependents = ids[1:]
            elif ids:
                found.append(ids[-1])
            else:
                found.append(None)
        return found


def _status(entry: cmds.QueueEntry, exit_code: int | None) -> JobStatus:
    # Run time from Slurm's durations: a running job started `used` seconds ago (by our
    # clock), an ended one ran for `used` seconds. Pending jobs have used nothing.
    status = JobStatus(entry.state, exit_code, entry.reason)
    if entry.used is None or entry.state is JobState.PENDING:
        return status
    if entry.state.is_final:
        return replace(status, elapsed=entry.used)
    return replace(status, started_at=time.time() - entry.used)


def _numeric(job_id: str) -> tuple[int, str]:
    return (len(cmds.base_job_id(job_id)), job_id)


def _dependents_of(record: JobRecord) -> int:
    # How many dependent jobs the submission asked for (its Slurm config is recorded).
    try:
        return int((record.slurm or {}).get("dependents") or 0)
    except (TypeError, ValueError):
        return 0


def chain_status(links: tp.Sequence[tuple[str, JobStatus]]) -> JobStatus:
    """The status of a chain of dependent jobs from its links' (first to last). Pure.

    Each link runs only if the one before ended unsuccessfully (``afternotok``), so
    the chain is what its first link that completed or has not ended says: RUNNING
    while a link runs, PENDING while the next one waits to take over a failed one,
    COMPLETED once one completes (the later links, which can then never run, are
    cancelled by Slurm: not a failure). Only when every link failed is the chain
    failed, as its last link. ``job_id`` names the link the status is of.
    """
    assert links
    for job_id, status in links:
        if status.state is JobState.COMPLETED or not status.state.is_final:
            return replace(status, job_id=job_id)
    job_id, status = links[-1]
    return replace(status, job_id=job_id)


def cancel_waves(records: tp.Sequence[JobRecord]) -> list[list[str]]:
    """The job ids to cancel for these records, in the order to cancel them. Pure.

    Cancelling a chain's link lets the next one start (``afternotok`` counts a
    cancellation as a failure): the last links of every chain go first, then the
    ones before them, and so on. Without chains this is one wave (one scancel).
    """
    chains = [r.links for r in records]
    depth = max((len(links) for links in chains), default=0)
    waves = [[links[len(links) - 1 - k] for links in chains if k < len(links)]
             for k in range(depth)]
    return [wave for wave in waves if wave]
