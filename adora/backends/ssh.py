"""The SSH backend: a remote Slurm cluster driven from a laptop over one SSH connection.

The grid is evaluated locally. The code is shipped as a content-addressed
snapshot (uploaded once per distinct content, so running jobs keep their code
while you edit); jobs are submitted with sbatch scripts adora writes (the
arguments travel in a JSON file, never through a shell); states come from the
same batched, rate-limited Slurm client as the local Slurm backend, run over
SSH; metrics and logs are tailed over SFTP, reading only new bytes.

Layout on the cluster, under the configured ``workdir``::

    codes/<hash>/             code snapshots (the jobs' working directories)
    <dir>/xps/<sig>/          XP folders, <dir> being the project's output dir
    <dir>/arrays/<job name>/  sbatch script, argv.json and logs of one submission

Locally, XP folders keep adora's records (``adora_job.json``) and membership.
"""

from __future__ import annotations

import json
import posixpath
import shlex
import typing as tp
import uuid
from pathlib import Path

import anyio
import anyio.to_thread

from ..clusters import ClusterConfig
from ..engine.clock import Clock
from ..engine.tail import ReadRequest, ReadResult
from ..errors import AdoraError, BackendError, ConfigError
from ..jobs import JobRecord
from ..slurm.client import SlurmClient
from ..slurm.commands import parse_sbatch
from ..slurm.script import RemoteJob, sbatch_script
from ..slurm.transport import RateLimited, TokenBucket
from ..ssh import SSHConnection
from .base import Backend, FileStamp, JobStatus, SubmitRequest

__all__ = ["SSHBackend"]


async def concurrently(*funcs: tp.Callable[[], tp.Coroutine[tp.Any, tp.Any, tp.Any]]) -> None:
    """Run coroutine functions side by side; an adora error among them is raised as is."""
    try:
        async with anyio.create_task_group() as tg:
            for func in funcs:
                tg.start_soon(func)
    except Exception as exc:
        errors = getattr(exc, "exceptions", [exc])
        first = next((e for e in errors if isinstance(e, AdoraError)), None)
        if first is not None and first is not exc:
            raise first from exc
        raise


class SSHBackend(Backend):
    """Submit to the Slurm cluster ``cluster`` over SSH.

    ``root`` is the local output directory (``DoraConfig.dir``); it must lie
    inside ``project_root`` so that it maps to the same place under the
    cluster's ``workdir``.
    """

    def __init__(self, root: Path, cluster: ClusterConfig, *, project_root: Path | None = None,
                 clock: Clock | None = None, share_polls: bool = True,
                 poll_max_age: float = 2.0, connection: SSHConnection | None = None,
                 max_parallel: int | None = None) -> None:
        self.name = f"ssh:{cluster.name}"
        self.cluster = cluster
        self.local_root = Path(root).resolve()
        self.project_root = (project_root or Path.cwd()).resolve()
        try:
            relative = self.local_root.relative_to(self.project_root)
        except ValueError:
            raise ConfigError(
                f"The output directory {self.local_root} is outside the project "
                f"{self.project_root}: with a remote cluster it must be a relative `dir` "
                "(it is recreated under the cluster's workdir).") from None
        self.workdir = cluster.workdir.rstrip("/") or "/"
        self.remote_root = posixpath.join(self.workdir, *relative.parts)
        self.ssh = connection or SSHConnection(cluster)
        self.bucket = TokenBucket(cluster.rate, 20, clock=clock)
        self.runner = RateLimited(self.ssh, self.bucket)
        self.poll_max_age = poll_max_age
        self.client = SlurmClient(self.runner, cluster=f"ssh:{cluster.name}:{cluster.host}",
                                  share_polls=share_polls, poll_max_age=poll_max_age,
                                  clock=clock)
        # The remote user, learnt from the cluster unless configured (not the local one).
        self.client.user = cluster.user or ""
        self.max_group_size = None
        self._shipped: dict[str, str] = {}
        #: Code snapshots uploaded by this backend.
        self.uploads = 0

    def describe(self) -> str:
        return f"cluster {self.cluster.name} ({self.cluster.host}) over SSH"

    def remote_path(self, local: str | Path) -> str:
        """The cluster-side path of a local path under the output directory."""
        path = Path(local)
        if not path.is_absolute():
            return str(local)
        # A plain prefix test first: this runs for every XP on every refresh, and
        # resolve() walks the file system.
        for candidate in (path, path.resolve()):
            try:
                relative = candidate.relative_to(self.local_root)
            except ValueError:
                continue
            return posixpath.join(self.remote_root, *relative.parts)
        return str(local)  # already remote (logs are recorded with remote paths)

    async def _user(self) -> str:
        if not self.client.user:
            result = (await self.runner.run(["id", "-un"])).check()
            self.client.user = result.stdout.strip()
        return self.client.user

    async def prepare(self) -> None:
        async def limits() -> None:
            if self.max_group_size is None:
                self.max_group_size = await self.client.max_array_size()

        await concurrently(self._user, limits)

    # -- code -----------------------------------------------------------------------------
    async def ship_code(self) -> str:
        """Upload the project's snapshot unless the cluster has it; return its folder."""
        from ..snapshot import install_command, snapshot, tar_bytes

        snap = await anyio.to_thread.run_sync(
            lambda: snapshot(self.project_root, exclude=[self.local_root]))
        if snap.hash in self._shipped:
            return self._shipped[snap.hash]
        codes = posixpath.join(self.workdir, "codes")
        target = posixpath.join(codes, snap.hash)
        exists = await self.runner.run(["test", "-d", target])
        if exists.exit_status != 0:
            data = await anyio.to_thread.run_sync(tar_bytes, snap)
            archive = posixpath.join(codes, f".{snap.hash}.{uuid.uuid4().hex[:8]}.tar.gz")
            await self.ssh.write_file(archive, data)
            # Unpacked aside, then renamed: a half-unpacked snapshot is never used.
            install = (f"({install_command(snap.hash, codes)}) < {shlex.quote(archive)}; "
                       f"status=$?; rm -f {shlex.quote(archive)}; exit $status")
            (await self.runner.run(["sh", "-c", install], timeout=300)).check()
            self.uploads += 1
        self._shipped[snap.hash] = target
        return target

    # -- jobs ---------------------------------------------------------------------------------
    async def submit(self, request: SubmitRequest) -> list[JobRecord]:
        await self.prepare()
        code_dir = await self.ship_code()
        folder = posixpath.join(self.remote_root, "arrays", request.job_name)
        argv_file = posixpath.join(folder, "argv.json")
        log_pattern = posixpath.join(folder, "%A_%a.log" if request.array else "%j.log")
        job = RemoteJob(job_name=request.job_name, count=len(request.xps),
                        array=request.array, log_pattern=log_pattern, argv_file=argv_file,
                        code_dir=code_dir, original_dir=self.workdir,
                        package=request.launch.package,
                        main_module=request.launch.main_module,
                        python=request.slurm.python or self.cluster.python,
                        activate=tuple(self.cluster.activate) + tuple(self.cluster.setup))
        script = sbatch_script(job, request.slurm)
        payload = json.dumps([xp.argv for xp in request.xps]).encode()
        script_path = posixpath.join(folder, "submit.sh")
        await concurrently(  # two writes in the time of one
            lambda: self.ssh.write_file(argv_file, payload),
            lambda: self.ssh.write_file(script_path, script.encode()))
        result = await self.runner.run(["sbatch", "--parsable", script_path], timeout=120)
        self.client.invalidate()
        if result.exit_status != 0:
            raise BackendError(f"sbatch on {self.cluster.name} failed: "
                               f"{(result.stderr or result.stdout).strip()}")
        job_id = parse_sbatch(result.stdout)
        records = []
        for index, _xp in enumerate(request.xps):
            task = f"{job_id}_{index}" if request.array else job_id
            log = posixpath.join(folder, f"{job_id}_{index}.log" if request.array
                                 else f"{job_id}.log")
            records.append(JobRecord(backend=self.name, token=request.token, job_id=task,
                                     job_name=request.job_name, array_index=index,
                                     array_id=job_id if request.array else None, log=log,
                                     extra={"code": code_dir}))
        return records

    def set_poll_period(self, seconds: float) -> None:
        # Another process's squeue up to half a period old is as good as a new one:
        # watchers refreshing at independent times then share most of their queries.
        if self.client.cache is not None:
            self.client.cache.max_age = max(self.poll_max_age, seconds / 2)

    async def cancel(self, records: tp.Sequence[JobRecord]) -> None:
        await self._user()
        await self.client.cancel([r.job_id for r in records if r.job_id])

    async def query(self, records: tp.Sequence[JobRecord]) -> dict[str, JobStatus]:
        await self._user()
        return await self.client.states(records)

    async def recover(self, intents: tp.Sequence[tuple[str, JobRecord]]) -> list[str | None]:
        await self._user()
        return await self.client.find(intents)

    async def read_file(self, path: str, offset: int, *, known: FileStamp | None = None
                        ) -> tuple[bytes, FileStamp] | None:
        return await self.ssh.read_file(self.remote_path(path), offset, known=known)

    async def read_many(self, requests: tp.Sequence[ReadRequest]) -> list[ReadResult]:
        """One remote ``stat`` for every file, then SFTP reads of the ones that grew.

        A grid of 1,000 XPs costs one round trip when nothing changed, instead of
        one per file.
        """
        results: list[ReadResult] = [None] * len(requests)
        remote = [self.remote_path(r.path) for r in requests]
        try:
            stamps = await self.ssh.stat_many(remote)
        except BackendError as exc:
            return [exc] * len(requests)

        async def one(index: int, request: ReadRequest) -> None:
            try:
                results[index] = await self.ssh.read_file(remote[index], request.offset,
                                                          known=request.known)
            except BackendError as exc:
                results[index] = exc

        async with anyio.create_task_group() as tg:
            for index, request in enumerate(requests):
                stamp = stamps.get(remote[index])
                if stamp is None:
                    results[index] = None
                elif stamp == request.known or stamp.size <= request.offset:
                    results[index] = (b"", stamp)
                else:
                    tg.start_soon(one, index, request)
        return results

    async def aclose(self) -> None:
        await self.ssh.aclose()


async def check_cluster(cluster: ClusterConfig) -> list[tuple[str, bool, str]]:
    """Check that adora can work on ``cluster``: (what, ok, detail) for each check."""
    import shlex as _shlex

    checks: list[tuple[str, bool, str]] = []
    ssh = SSHConnection(cluster)
    try:
        try:
            await ssh.connection()
        except (ConfigError, BackendError) as exc:
            return [("SSH connection", False, str(exc))]
        checks.append(("SSH connection", True, f"{cluster.host} (host key verified)"))
        for tool in ("sbatch", "squeue", "sacct", "scancel", "scontrol"):
            result = await ssh.run([tool, "--version"])
            checks.append((f"Slurm: {tool}", result.exit_status == 0,
                           (result.stdout or result.stderr).strip().splitlines()[-1:][0]
                           if (result.stdout or result.stderr).strip() else "no output"))
        ping = await ssh.run(["scontrol", "ping"])
        checks.append(("Slurm controller", ping.exit_status == 0 and "UP" in ping.stdout,
                       ping.stdout.strip() or ping.stderr.strip()))
        probe = _shlex.join([cluster.python, "-c",
                             "import sys, adora; print(adora.__version__, sys.executable)"])
        python = await ssh.shell([*cluster.activate, probe])
        checks.append(("Remote Python with adora", python.exit_status == 0,
                       python.stdout.strip() or python.stderr.strip()[-300:]))
        workdir = await ssh.run(["sh", "-c", f"mkdir -p {_shlex.quote(cluster.workdir)} && "
                                 f"test -w {_shlex.quote(cluster.workdir)}"])
        checks.append(("Work directory writable", workdir.exit_status == 0, cluster.workdir))
    finally:
        await ssh.aclose()
    return checks
