"""The Slurm backend: submission through submitit, states through one batched client.

XPs that share a Slurm config go into one job array (``sbatch --array``),
chunked to the cluster's ``MaxArraySize``; submitit's blocking ``sbatch`` runs
in a worker thread. Logs and pickles follow Dora's layout: arrays in
``<dir>/arrays/<job name>/``, single jobs in ``xps/<sig>/submitit/``, and a
``latest`` link in each XP folder.

Nothing is written after ``sbatch``: the pickles are named after the job name, known
before ``sbatch`` (an array has one for all its tasks), and each job makes its own
submitit's ``<job id>_submitted.pkl`` when it starts (`slurm_job.take_pickle`,
`slurm_job.take_array_pickle`).
submitit itself renames the pickles after ``sbatch``: a submission killed in between
left jobs that waited 60 s for their pickle, failed, and were adopted by the next run
as the XPs' jobs (found by the crash-point test, tests/test_crash_slurm.py).
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import time
import typing as tp
from pathlib import Path

import anyio
import anyio.to_thread

from ..conf import SlurmConfig
from ..engine.clock import Clock
from ..errors import BackendError
from ..jobs import JobRecord
from ..slurm.client import SlurmClient
from ..slurm.commands import fence_files, fenced_command
from ..slurm.params import submitit_parameters
from ..slurm.transport import CommandRunner, LocalCommands, RateLimited, TokenBucket
from .base import Backend, JobStatus, SubmitRequest
from .slurm_job import ARRAY, ArraySubmission, SlurmTarget, chain_link, pickle_name

__all__ = ["FENCE_WAIT", "SlurmBackend", "fence"]

#: How long a recovery waits for the sbatch of an interrupted submission still running.
FENCE_WAIT = 100.0


class SlurmBackend(Backend):
    """Submit to the Slurm cluster this host belongs to.

    ``rate``/``burst``: the token bucket every Slurm command (sbatch included)
    goes through. ``share_polls``: share squeue results with the user's other
    adora processes for ``poll_max_age`` seconds.
    """

    name = "slurm"

    def __init__(self, root: Path, *, runner: CommandRunner | None = None, rate: float = 5.0,
                 burst: int = 20, clock: Clock | None = None, share_polls: bool = True,
                 poll_max_age: float = 2.0, max_parallel: int | None = None) -> None:
        self.root = Path(root)
        self.commands = runner or LocalCommands()
        self.bucket = TokenBucket(rate, burst, clock=clock)
        self.runner = RateLimited(self.commands, self.bucket)
        cluster = os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf"
        self.poll_max_age = poll_max_age
        self.client = SlurmClient(self.runner, cluster=cluster, share_polls=share_polls,
                                  poll_max_age=poll_max_age, clock=clock)
        self.max_group_size = None

    def describe(self) -> str:
        return "Slurm"

    def check_config(self, slurm: SlurmConfig) -> None:
        from ..slurm.params import check_supported

        check_supported(slurm)

    async def prepare(self) -> None:
        if self.max_group_size is None:
            self.max_group_size = await self.client.max_array_size()

    async def submit(self, request: SubmitRequest) -> list[JobRecord]:
        await self.bucket.acquire()  # sbatch is a Slurm command like the others
        try:
            return await anyio.to_thread.run_sync(self._submit_sync, request)
        finally:
            self.client.invalidate()

    def _folder(self, request: SubmitRequest) -> Path:
        if request.array:
            return self.root / "arrays" / request.job_name
        return request.xps[0].folder / "submitit"

    def _submit_sync(self, request: SubmitRequest) -> list[JobRecord]:
        folder = self._folder(request)
        slurm = request.slurm
        try:
            executor = _executor_class()(folder=folder,
                                              max_num_timeout=slurm.max_num_timeout,
                                              python=slurm.python)
            executor.update_parameters(**submitit_parameters(
                slurm, job_name=request.job_name, cwd=str(request.launch.cwd)))
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"Cannot prepare the Slurm submission: {exc}") from exc
        # The job points its XP's `latest` link here when it starts (see SlurmTarget).
        target = SlurmTarget(request.launch.package, request.launch.main_module,
                             str(request.launch.cwd), folder=str(folder))
        if slurm.dependents:
            return self._submit_chain(executor, target, request, folder)
        try:
            job_ids = executor.submit_all(target, [xp.argv for xp in request.xps],
                                          array=request.array, job_name=request.job_name)
        except Exception as exc:  # submitit raises plain exceptions for sbatch failures
            raise BackendError(f"sbatch failed: {exc}") from exc
        records = []
        for index, job_id in enumerate(job_ids):
            records.append(JobRecord(
                backend=self.name, token=request.token, job_id=job_id,
                job_name=request.job_name, array_index=index,
                array_id=job_id.split("_", 1)[0] if request.array else None,
                log=str(folder / f"{job_id}_0_log.out")))
        return records

    def _submit_chain(self, executor: tp.Any, target: SlurmTarget, request: SubmitRequest,
                      folder: Path) -> list[JobRecord]:
        # One XP, 1 + dependents jobs (see `Executor.submit_chain`).
        assert not request.array and len(request.xps) == 1, "chains are single jobs"
        xp = request.xps[0]
        count = request.slurm.dependents + 1
        targets = [SlurmTarget(target.package, target.main_module, target.cwd,
                               requeue=link == count - 1, folder=target.folder)
                   for link in range(count)]
        try:
            job_ids = executor.submit_chain(targets, xp.argv, job_name=request.job_name)
        except Exception as exc:  # submitit raises plain exceptions for sbatch failures
            raise BackendError(f"sbatch failed: {exc}") from exc
        return [JobRecord(backend=self.name, token=request.token, job_id=job_ids[0],
                          dependents=job_ids[1:], job_name=request.job_name, array_index=0,
                          log=str(folder / f"{job_ids[0]}_0_log.out"))]

    def set_poll_period(self, seconds: float) -> None:
        # Another process's squeue up to half a period old is as good as a new one:
        # watchers refreshing at independent times then share most of their queries.
        if self.client.cache is not None:
            self.client.cache.max_age = max(self.poll_max_age, seconds / 2)

    async def cancel(self, records: tp.Sequence[JobRecord]) -> None:
        await self.client.cancel_records(records)

    async def query(self, records: tp.Sequence[JobRecord]) -> dict[str, JobStatus]:
        return await self.client.states(records)

    async def recover(self, intents: tp.Sequence[tuple[str, JobRecord]],
                      folders: tp.Mapping[str, Path] | None = None) -> list[str | None]:
        """Fence the interrupted submissions, then find their jobs by name.

        The sbatch of an adora that was killed goes on running (as when slurmctld is busy
        and sbatch sleeps and retries): without the fence it could submit the XPs after
        this run found nothing and submitted them again.
        """
        places = {(self.root / "arrays" / r.job_name, r.job_name) for _, r in intents
                  if r.job_name}
        places |= {(folders[sig] / "submitit", r.job_name) for sig, r in intents
                   if r.job_name and folders is not None and sig in folders}

        def _fence_all() -> list[Path]:
            return [folder for folder, name in sorted(places) if not fence(folder, name)]
        busy = await anyio.to_thread.run_sync(_fence_all)
        if busy:
            raise BackendError(
                f"An interrupted submission is still running its sbatch (lock "
                f"{fence_files(str(busy[0]), '*')[0]} held for {FENCE_WAIT:.0f} s): adora "
                "cannot tell yet whether its jobs exist. Run the same command again later.")
        return await self.client.find(intents)


def fence(folder: Path, job_name: str, wait: float | None = None) -> bool:
    """Mark the submission ``job_name`` in ``folder`` abandoned, under its sbatch's lock.

    Once this returns True, that submission's sbatch has returned or will never submit
    (see `adora.slurm.commands.fenced_command`). False: the lock was still held after
    ``wait`` seconds (default `FENCE_WAIT`). A folder that does not exist had no sbatch
    started in it. Blocking.
    """
    if not folder.is_dir():
        return True
    lock, mark = fence_files(str(folder), job_name)
    deadline = time.monotonic() + (FENCE_WAIT if wait is None else wait)
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.1)
        with open(mark, "a"):
            pass
        return True
    finally:
        os.close(fd)  # releases the lock


_EXECUTOR: tp.Any = None


def _executor_class() -> tp.Any:
    """submitit's SlurmExecutor, writing every file before ``sbatch`` and none after.

    Defined on first use: submitit is imported only when something is submitted.
    """
    global _EXECUTOR
    if _EXECUTOR is not None:
        return _EXECUTOR
    import submitit
    from submitit.core.utils import JobPaths

    flock = shutil.which("flock")

    class Executor(submitit.SlurmExecutor):  # type: ignore[misc]
        def _make_submission_command(self, submission_file_path: Path) -> list[str]:
            # Fenced (see `fence`): the lock and mark sit next to the submission file.
            argv: list[str] = super()._make_submission_command(submission_file_path)
            if flock is None:
                return argv
            lock, mark = fence_files(str(Path(submission_file_path).parent),
                                     self.parameters["job_name"])
            return [flock, *fenced_command(argv, lock, mark)[1:]]

        def submit_all(self, target: tp.Any, argvs: list[list[str]], *, array: bool,
                       job_name: str) -> list[str]:
            """Pickle the submission, then one ``sbatch``; returns the job ids. An array
            (``array``) has one pickle for all its tasks, ``<job_name>_array.pkl`` (an
            `ArraySubmission`); a single job has ``<job_name>_0.pkl``."""
            folder = JobPaths.get_first_id_independent_folder(self.folder)
            folder.mkdir(parents=True, exist_ok=True)
            timeout = self.parameters.get("time", 5)
            command = [self.python, "-u -m adora.backends.slurm_job",
                       shlex.quote(str(self.folder)), shlex.quote(job_name)]
            executor = self
            if array:
                ArraySubmission(target, argvs, timeout, self.max_num_timeout).dump(
                    folder / pickle_name(job_name, ARRAY))
                command.append(ARRAY)
                # As submitit's own batch(): a copy whose script asks for an array.
                executor = type(self)(self.folder, self.max_num_timeout, python=self.python)
                executor.update_parameters(**self.parameters)
                executor.parameters["map_count"] = len(argvs)
            else:
                (argv,) = argvs
                submission = submitit.helpers.DelayedSubmission(target, argv)
                submission.set_timeout(timeout, self.max_num_timeout)
                submission.dump(folder / pickle_name(job_name, 0))
            job_id = str(executor._submit_command(" ".join(command)).job_id)
            return [f"{job_id}_{i}" for i in range(len(argvs))] if array else [job_id]

        def submit_chain(self, targets: list[tp.Any], argv: list[str], *, job_name: str
                         ) -> list[str]:
            """One job per target, each to run once every job before it ended
            unsuccessfully: Dora's ``dependents`` (see `adora.slurm.script.sbatch_script`
            for why every earlier link is named). Every pickle
            (``<job_name>_link<k>.pkl``) is written before the first ``sbatch``; returns
            the job ids, first link first."""
            folder = JobPaths.get_first_id_independent_folder(self.folder)
            folder.mkdir(parents=True, exist_ok=True)
            for link, target in enumerate(targets):
                submission = submitit.helpers.DelayedSubmission(target, argv)
                submission.set_timeout(self.parameters.get("time", 5), self.max_num_timeout)
                submission.dump(folder / pickle_name(job_name, chain_link(link)))
            job_ids: list[str] = []
            for link in range(len(targets)):
                executor = type(self)(self.folder, self.max_num_timeout, python=self.python)
                executor.update_parameters(**self.parameters)
                if job_ids:
                    extra = dict(executor.parameters.get("additional_parameters") or {})
                    extra.update(dependency="afternotok:" + ":".join(job_ids),
                                 kill_on_invalid_dep="yes")
                    executor.update_parameters(additional_parameters=extra)
                command = " ".join([self.python, "-u -m adora.backends.slurm_job",
                                    shlex.quote(str(self.folder)), shlex.quote(job_name),
                                    chain_link(link)])
                job_ids.append(str(executor._submit_command(command).job_id))
            return job_ids

    _EXECUTOR = Executor
    return Executor
