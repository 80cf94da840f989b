"""The grid pipeline behind `adora grid` and `await adora.run_grid(...)`.

evaluate (user code, in a worker thread) -> lock -> load job records ->
recover interrupted submissions -> query states (one batched call) -> plan
(pure) -> confirm -> act (cancel in one call, submit groups concurrently,
each job recorded before the lock is released) -> membership.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
import os
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread

from ..backends.base import Backend, JobStatus, LaunchSpec, SubmitRequest, list_local_folder
from ..conf import SlurmConfig, SubmitRules
from ..errors import AdoraError, BackendError, ConfigError, SignatureCollisionError
from ..explore import Explorer, Herd, Sheep, evaluate
from ..files import clear_folder, map_threads
from ..jobs import (
    SUBMISSIONS,
    JobRecord,
    clear_record,
    job_name_for,
    load_own_record,
    load_records,
    new_token,
    prune_submission,
    remove_temporaries,
    save_record,
    save_submission,
    settle_submission,
)
from ..link import jsonl_path
from ..main import DecoratedMain
from ..states import JobState
from . import grids as grids_mod
from .clock import Clock, SystemClock
from .lock import DirLock
from .plan import Plan, XPFacts, plan
from .prescan import Prescan, Scan

if tp.TYPE_CHECKING:
    from ..xp import XP

__all__ = ["GridResult", "RunGridArgs", "launch", "resolve_backend", "run_grid", "schedule"]

logger = logging.getLogger(__name__)

Confirm = tp.Callable[[str], bool | tp.Awaitable[bool]]
Log = tp.Callable[[str], None]
#: Told what a grid run does now: ``evaluating``, ``lock``, ``query``, ``cancel``,
#: ``submit`` (the CLI says, on Ctrl-C, what was interrupted).
Phase = tp.Callable[[str], None]


def _no_phase(phase: str) -> None:
    return None


@dataclass
class RunGridArgs:
    """Options of a grid run, with Dora's names where Dora has them.

    ``patterns``: keep XPs whose name contains every pattern (``!pat`` excludes,
    an integer selects by index). ``dry_run``: decide and show, change nothing.
    ``cancel``: cancel the selected XPs' jobs. ``clear``: cancel, delete their
    folders, start again. ``init``: write ``.argv.json`` for every XP.
    ``yes``: confirm cancellations and ``clear`` without asking.
    ``read_only``: only show (``-f/-l/-t``), never submit or cancel.
    """

    patterns: list[str] = field(default_factory=list)
    dry_run: bool = False
    cancel: bool = False
    clear: bool = False
    init: bool = False
    yes: bool = False
    read_only: bool = False
    trim: int | None = None
    trim_last: bool = False
    silent: bool = False


@dataclass
class GridResult:
    """The outcome of one grid run."""

    name: str
    sheeps: list[Sheep]
    names: list[str]
    base_name: str
    plan: Plan
    backend: Backend
    explorer: Explorer
    submitted: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    #: Removed XPs whose jobs were left running (cancellation not confirmed).
    kept_removed: list[str] = field(default_factory=list)
    #: XPs whose folder this run created: they cannot have metrics yet.
    fresh: set[str] = field(default_factory=set)
    #: XPs whose local folder had no metrics history when the run began (`prescan`).
    no_history: set[str] = field(default_factory=set)
    #: Why the backend could not be asked for job states (unreachable cluster, controller
    #: down...): the states shown are then the last known ones, marked stale.
    query_error: str | None = None
    removed_records: dict[str, JobRecord] = field(default_factory=dict)

    def by_sig(self) -> dict[str, Sheep]:
        return {s.xp.sig: s for s in self.sheeps}


def _match(name: str, patterns: tp.Sequence[str]) -> bool:
    for pattern in patterns:
        negate = pattern.startswith("!")
        hit = fnmatch.fnmatch(name, f"*{pattern.lstrip('!')}*")
        if hit == negate:
            return False
    return True


def select(sheeps: list[Sheep], names: list[str], patterns: tp.Sequence[str]
           ) -> tuple[list[Sheep], list[str]]:
    """Filter by name patterns; integer patterns then pick by index (as Dora)."""
    indexes = [int(p) for p in patterns if p.lstrip("-").isdigit()]
    words = [p for p in patterns if not p.lstrip("-").isdigit()]
    pairs = [(s, n) for s, n in zip(sheeps, names) if _match(n, words)]
    if indexes:
        try:
            pairs = [pairs[i] for i in indexes]
        except IndexError:
            raise ConfigError(f"Index out of range: the grid selects {len(pairs)} XPs "
                              f"(indexes {min(indexes)}..{max(indexes)} asked).") from None
    return [p[0] for p in pairs], [p[1] for p in pairs]


async def _maybe_await(value: bool | tp.Awaitable[bool]) -> bool:
    if isinstance(value, bool):
        return value
    return await value


def slurm_key(slurm: SlurmConfig) -> str:
    return json.dumps(dataclasses.asdict(slurm), sort_keys=True, default=str)


def submit_requests(xps: tp.Sequence[XP], configs: tp.Mapping[str, SlurmConfig],
                    launch: LaunchSpec, max_group: int | None) -> list[SubmitRequest]:
    """Group XPs sharing a Slurm config into arrays, chunked to ``max_group``. Pure.

    XPs with ``dependents`` go alone: each is a chain of single jobs, as in Dora (an
    array's ``afternotok`` would wait on all its tasks and rerun the completed ones).
    """
    groups: dict[str, list[XP]] = {}
    keys: dict[int, str] = {}  # XPs launched alike share one config object: key it once
    for xp in xps:
        config = configs[xp.sig]
        key = keys.get(id(config))
        if key is None:
            key = keys[id(config)] = slurm_key(config)
        groups.setdefault(key, []).append(xp)
    requests = []
    for members in groups.values():
        size = max_group or len(members)
        if configs[members[0].sig].dependents:
            size = 1
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            token = new_token()
            requests.append(SubmitRequest(xps=chunk, slurm=configs[chunk[0].sig], token=token,
                                          job_name=job_name_for(token), launch=launch,
                                          array=len(chunk) > 1))
    return requests


class _Acting:
    # The I/O side of a grid run; everything blocking goes through worker threads.
    def __init__(self, main: DecoratedMain, backend: Backend, log: Log) -> None:
        self.main = main
        self.backend = backend
        self.log = log
        #: Sigs of the XPs whose folders this run created.
        self.fresh: set[str] = set()
        # Concurrent submissions (Slurm arrays of 10,000) create their XP folders one
        # submission at a time: on ext4, 4 threads making folders in one directory took
        # 2.3x the system time of one thread. Their sbatch calls still overlap.
        self._folders = anyio.Lock()
        self.query_error: str | None = None

    async def load_records(self, folders: list[Path], xps_dir: Path) -> list[JobRecord | None]:
        def _load() -> list[JobRecord | None]:
            # Job records are files in the (local) XP folders: one listing says which
            # exist, instead of trying to open a record in each (a new grid has none).
            return load_records(folders, list_local_folder(str(xps_dir)))
        return await anyio.to_thread.run_sync(_load)

    async def recover(self, records: dict[str, JobRecord], folders: dict[str, Path]) -> None:
        """Adopt or drop intents left by interrupted submissions (in place)."""
        intents = [(sig, r) for sig, r in records.items() if r.submitting]
        if not intents:
            return
        by_backend: dict[str, list[tuple[str, JobRecord]]] = {}
        for sig, record in intents:
            by_backend.setdefault(record.backend, []).append((sig, record))
        found: dict[str, dict[str, str | None]] = {}  # token -> sig -> job id (None: none)
        chains: dict[str, dict[str, list[str]]] = {}  # token -> sig -> later links
        for backend_name, items in by_backend.items():
            if backend_name != self.backend.name:
                self.log(f"{len(items)} XPs have an unfinished submission on the "
                         f"{backend_name} backend; use that backend to recover them.")
                continue
            ids = await self.backend.recover(items, folders)
            for (sig, record), job_id in zip(items, ids):
                found.setdefault(record.token, {})[sig] = job_id
                if job_id is None:
                    del records[sig]
                else:
                    record.job_id = job_id
                    if record.dependents:
                        chains.setdefault(record.token, {})[sig] = record.dependents
                    wanted = int((record.slurm or {}).get("dependents") or 0)
                    if len(record.dependents) < wanted:
                        self.log(f"XP {sig}: its submission was cut between two sbatch; "
                                 f"its chain has {len(record.dependents) + 1} of "
                                 f"{wanted + 1} jobs (adopted as is).")
            adopted = sum(1 for job_id in ids if job_id is not None)
            self.log(f"Recovered an interrupted submission: {adopted} job(s) adopted, "
                     f"{len(ids) - adopted} never submitted.")

        def _settle() -> None:
            root = self.main.dora.dir
            for token, job_ids in found.items():
                settle_submission(root, token, job_ids, chains.get(token))
                # Intents of older adora versions live in the XP folders.
                for sig in job_ids:
                    own = load_own_record(folders[sig])
                    if own is not None and own.token == token and own.job_id is None:
                        clear_record(folders[sig])
        if found:
            await anyio.to_thread.run_sync(_settle)

    async def query(self, records: dict[str, JobRecord], folders: dict[str, Path]
                    ) -> dict[str, JobStatus]:
        """Current status of each XP's job; final states are persisted in the records."""
        out: dict[str, JobStatus] = {}
        to_ask = []
        for sig, record in records.items():
            if record.final is not None:
                out[sig] = JobStatus.of_final(record)
            elif record.backend == self.backend.name and record.job_id is not None:
                to_ask.append((sig, record))
            else:
                out[sig] = JobStatus(JobState.UNKNOWN, reason=f"job of the {record.backend} "
                                     "backend", stale=True)
        if not to_ask:
            return out
        try:
            got = await self.backend.query([r for _, r in to_ask])
        except AdoraError as exc:
            self.query_error = f"Could not get job states from {self.backend.describe()}: {exc}"
            self.log(f"{self.query_error}. The states shown are the last known ones (?).")
            for sig, _ in to_ask:
                out[sig] = JobStatus(JobState.UNKNOWN, reason=str(exc), stale=True)
            return out
        finals = []
        for sig, record in to_ask:
            assert record.job_id is not None
            status = got.get(record.job_id)
            if status is None:  # (not a default argument: made for every XP)
                status = JobStatus(JobState.UNKNOWN, stale=True)
            out[sig] = status
            if status.state.is_final and not status.stale:
                status.persist(record)
                finals.append((sig, record))
        if finals:
            def _save() -> None:
                # Final states go to the XP folders; a submission whose jobs all ended
                # there has served its purpose.
                root = self.main.dora.dir
                map_threads(lambda item: save_record(folders[item[0]], item[1]), finals,
                            where=root)
                for token in {record.token for _, record in finals}:
                    prune_submission(root, token, root / self.main.dora.xps)
            await anyio.to_thread.run_sync(_save)
        return out

    async def submit(self, request: SubmitRequest, previous: dict[str, JobRecord]
                     ) -> list[JobRecord]:
        """Submit one group: intents first, then the backend, then the records (shielded)."""
        main = self.main

        slurm = dataclasses.asdict(request.slurm)
        sigs = [xp.sig for xp in request.xps]

        def _intents() -> None:
            if type(main).init_xp is DecoratedMain.init_xp:
                # Temporaries of an earlier run that was killed go first.
                created = map_threads(
                    lambda xp: main.init_xp_folder(xp, on_existing=remove_temporaries),
                    request.xps, where=main.dora.dir)
                self.fresh.update(xp.sig for xp, new in zip(request.xps, created) if new)
            else:  # a main that initialises XPs its own way
                for xp in request.xps:
                    if os.path.lexists(xp.folder):
                        remove_temporaries(xp.folder)
                    else:
                        self.fresh.add(xp.sig)
                map_threads(main.init_xp, request.xps, where=main.dora.dir)
            save_submission(main.dora.dir, request.token, [JobRecord(
                backend=self.backend.name, token=request.token, job_name=request.job_name,
                array_index=index, previous=_previous_ids(previous.get(xp.sig)),
                slurm=slurm) for index, xp in enumerate(request.xps)], sigs)
        async with self._folders:
            await anyio.to_thread.run_sync(_intents)
        # From here on the backend may create jobs: never let a cancellation
        # (Ctrl-C) separate a submission from its records.
        with anyio.CancelScope(shield=True):
            # If this raises, the intents stay and the next run asks the
            # backend whether the jobs exist.
            records = await self.backend.submit(request)

            for xp, record in zip(request.xps, records):
                record.previous = _previous_ids(previous.get(xp.sig))
                record.slurm = slurm

            # One write records every job of the submission (`adora info -j` finds XPs by
            # job id in it too).
            await anyio.to_thread.run_sync(save_submission, main.dora.dir, request.token,
                                           records, sigs)
        return records


def _check_collisions(main: DecoratedMain, herd: Herd, sheeps: list[Sheep],
                      prescan: Scan | None = None) -> None:
    # ``prescan``: the .argv.json bytes read during evaluation (see `prescan`); the XPs
    # it did not see are read here.
    seen = prescan or {}

    def _one(sheep: Sheep) -> None:
        try:
            argv_json = seen.get(sheep.xp.sig, (None, False))[0]
            if argv_json is None:  # not seen, or no .argv.json then: read it now
                main.check_collision(sheep.xp)
            else:
                main.check_argv_json(sheep.xp, argv_json)
        except SignatureCollisionError as exc:
            where = herd.where.get(sheep.xp.sig, (None, None))
            if where[0] is not None:
                raise SignatureCollisionError(
                    sheep.xp.sig, sheep.xp.delta, exc.other_delta,
                    where=f"{where[0]}:{where[1]}, folder {sheep.xp.folder}") from None
            raise
    map_threads(_one, sheeps, where=main.dora.dir)


def _previous_ids(old: JobRecord | None) -> list[str]:
    if old is None:
        return []
    return list(old.previous) + old.links


async def schedule(main: DecoratedMain, herd: Herd, grid_name: str | None, backend: Backend, *,
                   explorer: Explorer, rules: SubmitRules | None = None,
                   args: RunGridArgs | None = None, launch: LaunchSpec | None = None,
                   confirm: Confirm | None = None, log: Log | None = None,
                   clock: Clock | None = None, phase: Phase | None = None,
                   prescan: Scan | None = None) -> GridResult:
    """Make the backend match an evaluated grid; return the XPs with their states.

    ``grid_name=None`` handles the XPs of ``herd`` alone, outside any grid
    (``adora launch``): no membership, nothing removed. The returned sheeps show
    the states the actions produced (CANCELLED, PENDING once submitted).
    ``prescan``: what a look at the XP folders during evaluation found (`prescan`).
    """
    phase = phase or _no_phase
    args = args or RunGridArgs()
    rules = rules or SubmitRules()
    clock = clock or SystemClock()
    log = log or (lambda message: logger.info(message))
    acting = _Acting(main, backend, log)
    all_sheeps = list(herd.sheeps.values())
    if not all_sheeps:
        return GridResult(grid_name or "", [], [], "", Plan(), backend, explorer)
    names, base_name = main.get_names([s.xp for s in all_sheeps])
    sheeps, sel_names = select(all_sheeps, names, args.patterns)
    if args.clear and args.dry_run:
        raise ConfigError("--clear and --dry-run cannot be used together.")

    changes_allowed = not (args.dry_run or args.read_only)
    # --init writes every XP's .argv.json, under --dry-run too (as Dora does: that is how
    # XPs never launched get `run -f SIG`, `info -f` and `export`).
    init_only = args.init and args.dry_run and not args.read_only
    lock: tp.AsyncContextManager[tp.Any]
    if changes_allowed or init_only:
        lock = DirLock(main.dora.dir, clock=clock, on_wait=log)
        phase("lock")
    else:
        lock = _nullcontext()
    async with lock:
        phase("query")
        members = [] if grid_name is None else \
            await anyio.to_thread.run_sync(grids_mod.grid_members, main, grid_name)
        removed_sigs = [sig for sig in members if sig not in herd.sheeps]
        xps_dir = main.dora.xps_dir()
        folders = {s.xp.sig: s.xp.folder for s in all_sheeps}
        folders.update({sig: xps_dir / sig for sig in removed_sigs})
        order = list(folders)
        # An XP whose folder holds another XP's argv (a 32-bit signature collision)
        # would show that XP's job and metrics as its own: refused wherever shown.
        await anyio.to_thread.run_sync(_check_collisions, main, herd, all_sheeps, prescan)
        loaded = await acting.load_records([folders[sig] for sig in order], xps_dir)
        records = {sig: rec for sig, rec in zip(order, loaded) if rec is not None}
        if changes_allowed:
            await anyio.to_thread.run_sync(
                remove_temporaries, main.dora.dir / SUBMISSIONS)
            await acting.recover(records, folders)
        statuses = await acting.query(records, folders)
        for sheep in all_sheeps:
            sheep.job = records.get(sheep.xp.sig)
            sheep.status = statuses.get(sheep.xp.sig)

        if args.clear and changes_allowed:
            await _clear(acting, sheeps, records, confirm, args, log)
            for sheep in sheeps:
                records.pop(sheep.xp.sig, None)
                statuses.pop(sheep.xp.sig, None)
                sheep.job, sheep.status = None, None

        def facts(sig: str) -> XPFacts:
            if sig not in records:
                return XPFacts(sig, None)
            status = statuses.get(sig)
            return XPFacts(sig, JobState.UNKNOWN if status is None else status.state)

        claimed = set() if grid_name is None else await anyio.to_thread.run_sync(
            grids_mod.claimed_by_other_grids, main, grid_name, removed_sigs)
        the_plan = plan([facts(s.xp.sig) for s in sheeps], [facts(sig) for sig in removed_sigs],
                        rules=rules, cancel=args.cancel, claimed_elsewhere=claimed)
        result = GridResult(grid_name or "", sheeps, sel_names, base_name, the_plan, backend,
                            explorer, removed_records={sig: records[sig] for sig in removed_sigs
                                             if sig in records},
                            query_error=acting.query_error,
                            no_history={sig for sig, (_, history) in (prescan or {}).items()
                                        if not history})
        if not changes_allowed:
            if init_only:
                await anyio.to_thread.run_sync(lambda: map_threads(
                    main.init_xp, [s.xp for s in sheeps], where=main.dora.dir))
                log(f"Initialised {len(sheeps)} XP folder(s) (.argv.json); nothing submitted.")
            return result

        cancel_removed = list(the_plan.cancel_removed)
        if cancel_removed:
            ok = args.yes
            if not ok and confirm is not None:
                ok = await _maybe_await(confirm(
                    f"{len(cancel_removed)} XP(s) were removed from grid {grid_name} and "
                    f"still have running or pending jobs: "
                    f"{', '.join(cancel_removed[:10])}{'...' if len(cancel_removed) > 10 else ''}"
                    f". Cancel them?"))
            if not ok:
                result.kept_removed = cancel_removed
                log(f"Not cancelling {len(cancel_removed)} job(s) of XPs removed from the grid "
                    f"(pass --yes to cancel them): {', '.join(cancel_removed[:10])}")
                cancel_removed = []

        # Membership first: an XP is a member before its job exists. As in Dora, only the
        # XPs the patterns select: `grids/<name>/` lists what was scheduled (evaluation
        # grids list it to find trained XPs); the rest joins on an unfiltered run.
        kept = set(result.kept_removed)
        if grid_name is not None:
            await anyio.to_thread.run_sync(
                grids_mod.set_membership, main, grid_name, [s.xp.sig for s in sheeps], [])

        to_cancel = [records[sig] for sig in the_plan.cancel + cancel_removed if sig in records]
        if to_cancel:
            phase("cancel")
            await backend.cancel(to_cancel)
            result.cancelled = [sig for sig in the_plan.cancel + cancel_removed if sig in records]
            await _mark_cancelled(result, records, folders)
            log(f"Cancelled {len(to_cancel)} job(s).")

        if the_plan.submit:
            phase("submit")
            by_sig = herd.sheeps
            xps = [by_sig[sig].xp for sig in the_plan.submit]
            for config in {id(c): c for c in (herd.slurm_configs[x.sig] for x in xps)}.values():
                backend.check_config(config)  # before anything is written or submitted
            await backend.prepare()
            if launch is None:
                # From the current folder, or (git_save) from a snapshot of the code, made
                # only when something is submitted; links each XP's `code` to it.
                from ..git_save import launch_spec

                launch = await anyio.to_thread.run_sync(launch_spec, main, xps)
            requests = submit_requests(xps, herd.slurm_configs, launch, backend.max_group_size)
            submitted: list[tuple[str, JobRecord]] = []
            limiter = anyio.CapacityLimiter(4)

            failures: list[AdoraError] = []

            async def _one(request: SubmitRequest) -> None:
                # A failed submission must not stop the independent others.
                try:
                    async with limiter:
                        recs = await acting.submit(request, records)
                except AdoraError as exc:
                    failures.append(exc)
                    return
                submitted.extend(zip([xp.sig for xp in request.xps], recs))

            async with anyio.create_task_group() as tg:
                for request in requests:
                    tg.start_soon(_one, request)
            if failures:
                if not submitted and not any(isinstance(f, BackendError) for f in failures):
                    raise failures[0]  # e.g. an XP folder in the way: the backend was not asked
                raise BackendError(
                    f"{len(failures)} of {len(requests)} submission(s) failed "
                    f"({len(submitted)} XP(s) submitted and recorded): {failures[0]}. "
                    "Run the same command again to submit what is missing.") from failures[0]
            for sig, record in submitted:
                by_sig[sig].job = record
                by_sig[sig].status = JobStatus(JobState.PENDING)
                records[sig] = record
            done = {sig for sig, _ in submitted}
            result.submitted = [sig for sig in the_plan.submit if sig in done]
            result.fresh = acting.fresh & set(result.submitted)
            log(f"Submitted {len(submitted)} XP(s) in {len(requests)} submission(s) "
                f"to {backend.describe()}.")

        unlink = [sig for sig in the_plan.unlink + cancel_removed if sig not in kept]
        if grid_name is not None:
            await anyio.to_thread.run_sync(grids_mod.set_membership, main, grid_name, [],
                                           unlink)
        if args.init:
            await anyio.to_thread.run_sync(lambda: map_threads(
                main.init_xp, [s.xp for s in sheeps], where=main.dora.dir))
    return result


async def _mark_cancelled(result: GridResult, records: dict[str, JobRecord],
                          folders: dict[str, Path]) -> None:
    # The table and the returned sheeps show what the cancellation did, without waiting
    # for the backend to notice (a cancelled Slurm job may still be COMPLETING): the
    # state is not persisted as final, so the next query still learns the real one. The
    # records remember that adora cancelled the job: not a failure for the exit status.
    by_sig = result.by_sig()
    for sig in result.cancelled:
        records[sig].extra["cancelled_by"] = "adora"
        if sig in by_sig:
            by_sig[sig].status = JobStatus(JobState.CANCELLED, reason="cancelled by adora")

    def _save() -> None:
        map_threads(lambda sig: save_record(folders[sig], records[sig]), result.cancelled,
                    where=folders[result.cancelled[0]])
    await anyio.to_thread.run_sync(_save)


async def _clear(acting: _Acting, sheeps: list[Sheep], records: dict[str, JobRecord],
                 confirm: Confirm | None, args: RunGridArgs, log: Log) -> None:
    if not args.yes:
        ok = False
        if confirm is not None:
            ok = await _maybe_await(confirm(
                f"Restart {len(sheeps)} XP(s) from scratch: cancel their jobs and DELETE their "
                "folders (checkpoints, metrics, logs)? This cannot be undone."))
        if not ok:
            raise ConfigError("--clear needs a confirmation: answer y at the prompt, or pass "
                              "--yes.")
    active = [records[s.xp.sig] for s in sheeps
              if s.xp.sig in records and not s.is_done()]
    if active:
        await acting.backend.cancel(active)

    def _rm() -> int:
        # A folder that is a link (e.g. to another disk) is emptied where it points; an
        # error stops here, before anything claims the XPs were cleared.
        return sum(clear_folder(sheep.xp.folder) for sheep in sheeps)
    cleared = await anyio.to_thread.run_sync(_rm)
    log(f"Cleared {cleared} XP folder(s).")


class _nullcontext:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def resolve_backend(main: DecoratedMain, backend: Backend | str | None,
                    max_parallel: int | None = None, cluster: str | None = None) -> Backend:
    """A backend instance: as given, from a name (``local``, ``slurm``, ``auto``/None),
    or for a remote ``cluster`` (``ssh``, configured in TOML)."""
    if backend is not None and not isinstance(backend, str):
        return backend
    if cluster is not None:
        if backend not in (None, "auto", "ssh"):
            raise ConfigError(f"--cluster runs over SSH: it cannot be used with --backend "
                              f"{backend}.")
        from ..backends.ssh import SSHBackend
        from ..clusters import load_cluster

        return SSHBackend(main.dora.dir, load_cluster(cluster), project_root=Path.cwd())
    if backend == "ssh":
        raise ConfigError("--backend ssh needs --cluster NAME.")
    from ..backends import get_backend

    options = {"max_parallel": max_parallel} if max_parallel is not None else {}
    return get_backend(backend, root=main.dora.dir, **options)


async def _evaluate_warming_up(backend: Backend, main: DecoratedMain, explorer: Explorer,
                               slurm: SlurmConfig, grid_file: str | None, grid_name: str
                               ) -> tuple[Herd, Scan | None]:
    # Evaluate the grid while the backend warms up (e.g. opens its SSH connection) and
    # a child process looks at the XP folders of the grid's last run (`prescan`).
    # Errors of the grid are raised as they are, not inside an exception group.
    error: Exception | None = None
    herd = Herd()
    scanning = await Prescan.start(str(main.dora.xps_dir()),
                                   str(grids_mod.grids_dir(main) / grid_name),
                                   _history_names(main))
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(backend.warm_up)
            try:
                herd = await anyio.to_thread.run_sync(evaluate, main, explorer, slurm,
                                                      grid_file)
            except Exception as exc:
                error = exc
                tg.cancel_scope.cancel()
        if error is not None:
            raise error
        return herd, None if scanning is None else await scanning.result()
    finally:
        if scanning is not None:
            with anyio.CancelScope(shield=True):
                await scanning.aclose()


def _history_names(main: DecoratedMain) -> list[str]:
    # The files the metrics tailer looks for in an XP folder (jsonl first, Dora's JSON).
    name = main.dora.history
    if "/" in name or name in ("", ".", ".."):
        return []  # a history outside the folder: no scan of histories (every XP is read)
    return [jsonl_path(Path(name)).name, name]


async def run_grid(main: DecoratedMain, explorer: Explorer, grid_name: str,
                   rules: SubmitRules | None = None, slurm: SlurmConfig | None = None,
                   args: RunGridArgs | None = None, *, backend: Backend | str | None = None,
                   grid_file: str | None = None, confirm: Confirm | None = None,
                   log: Log | None = None, clock: Clock | None = None,
                   max_parallel: int | None = None, phase: Phase | None = None) -> GridResult:
    """Evaluate ``explorer`` and make ``backend`` match it: submit what is missing,
    cancel what was removed (if confirmed), following ``rules``.

    This is the pipeline behind ``adora grid``; call it from any coroutine
    (asyncio or trio)::

        result = await adora.run_grid(main, explorer, "sweep", backend="local")
        for sheep in result.sheeps:
            print(sheep.xp.sig, sheep.state())
    """
    if slurm is None:
        slurm = main.get_slurm_config()
    backend_obj = resolve_backend(main, backend, max_parallel)
    try:
        # As Dora: the grid's folder exists while its explorer runs (explorers that list
        # it, e.g. to read other XPs, must not fail on a first run or a dry run).
        (grids_mod.grids_dir(main) / grid_name).mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # the output folder is unusable: the steps below say how
    if phase is not None:
        phase("evaluating")
    herd, scanned = await _evaluate_warming_up(backend_obj, main, explorer, slurm, grid_file,
                                               grid_name)
    return await schedule(main, herd, grid_name, backend_obj, explorer=explorer, rules=rules,
                          args=args, confirm=confirm, log=log, clock=clock, phase=phase,
                          prescan=scanned)


async def launch(main: DecoratedMain, argv: tp.Sequence[str], *,
                 rules: SubmitRules | None = None, slurm: SlurmConfig | None = None,
                 args: RunGridArgs | None = None, backend: Backend | str | None = None,
                 log: Log | None = None, clock: Clock | None = None,
                 max_parallel: int | None = None) -> GridResult:
    """Submit the one XP given by ``argv``, outside any grid (``adora launch``).

    An XP that already has a job keeps it, unless ``rules`` say otherwise.
    """
    if slurm is None:
        slurm = main.get_slurm_config()
    backend_obj = resolve_backend(main, backend, max_parallel)
    herd = Herd()
    xp = await anyio.to_thread.run_sync(main.get_xp, list(argv))
    herd.add(xp, slurm)
    return await schedule(main, herd, None, backend_obj, explorer=Explorer(lambda _: None),
                          rules=rules, args=args, log=log, clock=clock)
