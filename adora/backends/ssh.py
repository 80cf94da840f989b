"""The SSH backend: a remote Slurm cluster driven from a laptop over one SSH connection.

The grid is evaluated locally. The code is shipped as a content-addressed
snapshot (uploaded once per distinct content, so running jobs keep their code
while you edit); jobs are submitted with sbatch scripts adora writes (the
arguments travel in a JSON file, never through a shell); states come from the
same batched, rate-limited Slurm client as the local Slurm backend, run over
SSH; metrics and logs are tailed over SFTP, reading only new bytes.

Round trips are what a remote submission costs (each command over SSH is a
few of them, plus the remote shell's start-up), so a submission is one remote
command (`submission_command`): its files, and the code snapshot when the
cluster lacks it, travel as a tar on its stdin; it runs sbatch, then reports
the metric files of the submitted XPs, which the table shown right after
reads without another lookup. Before it, `SSHBackend.prepare` connects and
asks, side by side, the array size limit and (one SFTP stat) whether the
cluster has the code.

Layout on the cluster, under the configured ``workdir``::

    codes/<hash>/             code snapshots (the jobs' working directories)
    <dir>/xps/<sig>/          XP folders, <dir> being the project's output dir
    <dir>/arrays/<job name>/  sbatch script, argv.json and logs of one submission

Locally, XP folders keep adora's records (``adora_job.json``) and membership.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import posixpath
import shlex
import sys
import tarfile
import time
import typing as tp
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from ..clusters import ClusterConfig
from ..conf import SlurmConfig
from ..engine.clock import Clock, SystemClock
from ..engine.tail import ReadRequest, ReadResult
from ..errors import AdoraError, BackendError, ConfigError
from ..jobs import JobRecord
from ..link import JSONL_SUFFIX, jsonl_path
from ..slurm.client import SlurmClient
from ..slurm.commands import parse_sbatch
from ..slurm.script import RemoteJob, sbatch_script
from ..slurm.transport import RateLimited, TokenBucket
from ..ssh import STAT_ARGV, SSHConnection, parse_stat
from .base import Backend, FileStamp, JobStatus, SubmitRequest

__all__ = ["FENCE_WAIT", "SSHBackend", "fence_command", "submission_archive",
           "submission_command"]

#: How long a file's stamp learnt in passing (by a submission, or with another file's
#: lookup) answers the next read of that file instead of a remote lookup.
KNOWN_FOR = 5.0

_UNKNOWN = object()

#: The one remote command of a submission, run by ``sh -c`` with the submission folder
#: and the code folder as ``$1`` and ``$2``; the submission files come as a tar on stdin.
#: ``@INSTALL@`` is `install_command` (the code snapshot is unpacked aside, then renamed),
#: ``@STAT@`` is `STAT_ARGV`. One line: csh and tcsh, login shells on some clusters,
#: refuse newlines inside quotes.
#:
#: sbatch runs under a lock on ``$f/.lock`` (flock, where the cluster has it) and only
#: if ``$f/.abandoned`` is absent: a command whose adora was killed goes on running on
#: the cluster, and the run that recovers the submission fences it (`_FENCE_SCRIPT`)
#: before looking for its job, so that sbatch either ran before or never runs.
_SUBMIT_SCRIPT = (
    'set -e; f=$1; code=$2; mkdir -p -- "$f"; '
    'trap \'rm -f -- "$f/code.tar.gz" "$f/metrics.lst" "$f/.lock"\' EXIT; '
    'tar -xf - -C "$f"; '
    'if [ -f "$f/code.tar.gz" ]; then (@INSTALL@) < "$f/code.tar.gz"; fi; '
    'if [ ! -d "$code" ]; then '
    'echo "adora: the code snapshot $code is missing on the cluster" >&2; exit 3; fi; '
    'if command -v flock >/dev/null 2>&1; then exec 9>>"$f/.lock"; flock 9; fi; '
    'if [ -e "$f/.abandoned" ]; then echo "adora: this submission was abandoned by '
    'the run that recovered it" >&2; exit 4; fi; '
    'job=$(sbatch --parsable -- "$f/submit.sh"); printf \'job %s\\n\' "$job"; '
    'deps="afternotok:${job%%;*}"; n=1; while [ -f "$f/link$n.sh" ]; do '
    'job=$(sbatch --parsable --dependency="$deps" -- "$f/link$n.sh"); '
    'printf \'job %s\\n\' "$job"; deps="$deps:${job%%;*}"; n=$((n+1)); done; '
    'if [ -f "$f/metrics.lst" ]; then xargs -0 @STAT@ < "$f/metrics.lst" 2>/dev/null || true; fi'
)


#: Fences interrupted submissions (their folders as arguments) before their jobs are
#: looked for: once it returns, each one's sbatch has returned or will never run. It
#: marks the folder abandoned under the submission's lock, so it waits for an sbatch
#: in progress (up to ``FENCE_WAIT`` seconds, then fails: nothing can be decided).
#: Without flock on the cluster the mark alone stops submissions that had not reached
#: sbatch yet.
_FENCE_SCRIPT = (
    'for f; do mkdir -p -- "$f"; '
    'if command -v flock >/dev/null 2>&1; then '
    'flock -w @WAIT@ "$f/.lock" touch "$f/.abandoned" || { echo "adora: the submission '
    'in $f is still running on the cluster" >&2; exit 5; }; '
    'else touch "$f/.abandoned"; fi; done'
)

#: How long a recovery waits for an interrupted submission still running its sbatch.
FENCE_WAIT = 100


def fence_command(folders: tp.Sequence[str]) -> list[str]:
    """The argument vector fencing the submissions in ``folders`` (see `_FENCE_SCRIPT`).
    Pure."""
    return ["sh", "-c", _FENCE_SCRIPT.replace("@WAIT@", str(FENCE_WAIT)), "adora-fence",
            *folders]


def submission_command(folder: str, code_dir: str) -> list[str]:
    """The argument vector of a submission's one remote command. Pure.

    With the tar of `submission_archive` on stdin, it unpacks the files into
    ``folder`` (created if missing), installs the code snapshot if the archive
    carries one (as ``<codes>/<hash>`` = ``code_dir``), checks that the code is
    there, submits ``folder/submit.sh``, prints ``job <sbatch --parsable output>``,
    does the same for ``link1.sh``, ``link2.sh``... if present, each to run once every
    job before it ended unsuccessfully (a chain of dependent jobs, see
    `adora.slurm.script.sbatch_script`), then stats the files
    listed in ``metrics.lst`` (``size mtime path`` lines for those that exist).
    Paths travel as arguments; nothing is interpolated.
    """
    from ..snapshot import install_command

    codes, code_hash = posixpath.split(code_dir.rstrip("/"))
    script = (_SUBMIT_SCRIPT.replace("@INSTALL@", install_command(code_hash, codes))
              .replace("@STAT@", shlex.join(STAT_ARGV)))
    return ["sh", "-c", script, "adora-submit", folder, code_dir]


def submission_archive(files: tp.Mapping[str, bytes], *, mtime: float | None = None) -> bytes:
    """An uncompressed tar of ``files`` (name -> bytes), for `submission_command`. Pure
    but for the default modification time (now)."""
    out = io.BytesIO()
    stamp = int(time.time() if mtime is None else mtime)
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, stamp
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@dataclass(frozen=True)
class _Code:
    # The project's code as the cluster needs it: its snapshot folder there, and the
    # snapshot as .tar.gz when the cluster did not have it.
    hash: str
    target: str
    archive: bytes | None


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
        self._local_prefix = str(self.local_root).rstrip("/") + "/"
        self._remote_prefix = self.remote_root.rstrip("/") + "/"
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
        self.clock = clock or SystemClock()
        #: Code snapshots known to be on the cluster (by hash).
        self._shipped: set[str] = set()
        self._code: _Code | None = None
        self._upload_lock = anyio.Lock()
        #: Stamps learnt in passing: remote path -> (when, stamp or None if absent).
        self._known: dict[str, tuple[float, FileStamp | None]] = {}
        #: Code snapshots uploaded by this backend.
        self.uploads = 0

    def describe(self) -> str:
        return f"cluster {self.cluster.name} ({self.cluster.host}) over SSH"

    def remote_path(self, local: str | Path) -> str:
        """The cluster-side path of a local path under the output directory."""
        text = os.fspath(local)
        if not text.startswith("/"):
            return text
        # A plain string prefix first: this runs for every metric file of every XP on
        # every refresh; Path operations cost ~35 µs a path, resolve() walks the disk.
        if text.startswith(self._local_prefix):
            return self._remote_prefix + text[len(self._local_prefix):]
        for candidate in (Path(text), Path(text).resolve()):
            try:
                relative = candidate.relative_to(self.local_root)
            except ValueError:
                continue
            return posixpath.join(self.remote_root, *relative.parts)
        return text  # already remote (logs are recorded with remote paths)

    async def _user(self) -> str:
        if not self.client.user:
            result = (await self.runner.run(["id", "-un"])).check()
            self.client.user = result.stdout.strip()
        return self.client.user

    async def warm_up(self) -> None:
        """Open the connection while the grid is evaluated (errors show in the first
        real call, which tries again)."""
        try:
            await self.ssh.connection()
        except AdoraError:
            pass

    def check_config(self, slurm: SlurmConfig) -> None:
        from ..slurm.params import check_supported

        check_supported(slurm)

    async def prepare(self) -> None:
        """Connect, then learn the array size limit and whether the cluster has the
        project's code, side by side (the snapshot is hashed while connecting)."""
        async def limits() -> None:
            if self.max_group_size is None:
                self.max_group_size = await self.client.max_array_size()

        async def code() -> None:
            self._code = await self._check_code()

        await concurrently(self._user, limits, code)

    # -- code -----------------------------------------------------------------------------
    async def _check_code(self) -> _Code:
        """Snapshot the project; one SFTP stat tells whether the cluster has that code."""
        from ..snapshot import snapshot, tar_bytes

        snap = await anyio.to_thread.run_sync(
            lambda: snapshot(self.project_root, exclude=[self.local_root]))
        target = posixpath.join(self.workdir, "codes", snap.hash)
        if snap.hash not in self._shipped and await self.ssh.stat(target) is not None:
            self._shipped.add(snap.hash)
        archive = None
        if snap.hash not in self._shipped:
            archive = await anyio.to_thread.run_sync(tar_bytes, snap)
        return _Code(snap.hash, target, archive)

    # -- jobs ---------------------------------------------------------------------------------
    async def submit(self, request: SubmitRequest) -> list[JobRecord]:
        """One remote command per submission: files in, code installed if new, sbatch.

        The same command reports the metric files of the submitted XPs (absent for new
        XPs), so the table shown right after needs no other round trip.
        """
        if self._code is None or self.max_group_size is None:
            await self.prepare()
        code = self._code
        assert code is not None
        if code.hash in self._shipped:
            return await self._submit(request, code.target, None)
        # The first submission of new code carries it; the others wait for it.
        async with self._upload_lock:
            archive = None if code.hash in self._shipped else code.archive
            records = await self._submit(request, code.target, archive)
            if archive is not None:
                self._shipped.add(code.hash)
                self.uploads += 1
        return records

    async def _submit(self, request: SubmitRequest, code_dir: str, archive: bytes | None
                      ) -> list[JobRecord]:
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
        metrics = [self.remote_path(path) for xp in request.xps
                   for path in (jsonl_path(xp.history), xp.history)]
        files = {"argv.json": json.dumps([xp.argv for xp in request.xps]).encode(),
                 "submit.sh": sbatch_script(job, request.slurm).encode(),
                 "metrics.lst": b"".join(p.encode() + b"\0" for p in metrics)}
        if request.slurm.dependents:
            # A chain of dependent jobs: one script per later link, submitted by the
            # same remote command, each to run once all before it failed (see
            # submission_command).
            assert not request.array, "chains are single jobs"
            for link in range(1, request.slurm.dependents + 1):
                files[f"link{link}.sh"] = sbatch_script(job, request.slurm, link=link).encode()
        if archive is not None:
            files["code.tar.gz"] = archive
        await self.bucket.acquire()  # a Slurm command: the rate limit applies
        # The remote side effect is an SSH channel, out of sight of the audit hooks that
        # see local writes and subprocesses: these events mark it for crash tests
        # (`adora.testing.crash`), just before and just after. Cheap without a hook
        # (as are those around the fence in `recover`).
        sys.audit("adora.remote", "submit", folder)
        result = await self.ssh.run(submission_command(folder, code_dir),
                                    input=submission_archive(files),
                                    timeout=300 if archive is not None else 120)
        sys.audit("adora.remote", "submitted", folder)
        self.client.invalidate()
        lines = result.stdout.split("\n")
        heads = list(itertools.takewhile(lambda line: line.startswith("job "), lines))
        if result.exit_status != 0 or not heads:
            said = (result.stderr or result.stdout).strip() or \
                f"exit status {result.exit_status}, no output"
            raise BackendError(f"Submission to {self.cluster.name} failed (sbatch or the "
                               f"files before it): {said}")
        job_ids = [parse_sbatch(line[4:]) for line in heads]
        job_id = job_ids[0]
        self._learn(parse_stat("\n".join(lines[len(heads):])), metrics)
        records = []
        for index, _xp in enumerate(request.xps):
            task = f"{job_id}_{index}" if request.array else job_id
            log = posixpath.join(folder, f"{job_id}_{index}.log" if request.array
                                 else f"{job_id}.log")
            records.append(JobRecord(backend=self.name, token=request.token, job_id=task,
                                     job_name=request.job_name, array_index=index,
                                     array_id=job_id if request.array else None, log=log,
                                     dependents=job_ids[1:], extra={"code": code_dir}))
        return records

    # -- stamps learnt in passing ---------------------------------------------------------------
    def _learn(self, stamps: tp.Mapping[str, FileStamp], paths: tp.Iterable[str]) -> None:
        """Remember the stamps of ``paths`` (those missing from ``stamps`` are absent)."""
        now = self.clock.now()
        self._known = {p: v for p, v in self._known.items() if now - v[0] <= KNOWN_FOR}
        for path in paths:
            self._known[path] = (now, stamps.get(path))

    def _take(self, path: str) -> tp.Any:
        """A stamp learnt less than `KNOWN_FOR` ago (used once), else `_UNKNOWN`."""
        got = self._known.pop(path, None)
        if got is None or self.clock.now() - got[0] > KNOWN_FOR:
            return _UNKNOWN
        return got[1]

    def set_poll_period(self, seconds: float) -> None:
        # Another process's squeue up to half a period old is as good as a new one:
        # watchers refreshing at independent times then share most of their queries.
        if self.client.cache is not None:
            self.client.cache.max_age = max(self.poll_max_age, seconds / 2)

    async def cancel(self, records: tp.Sequence[JobRecord]) -> None:
        await self._user()
        await self.client.cancel_records(records)

    async def query(self, records: tp.Sequence[JobRecord]) -> dict[str, JobStatus]:
        await self._user()
        return await self.client.states(records)

    async def recover(self, intents: tp.Sequence[tuple[str, JobRecord]],
                      folders: tp.Mapping[str, Path] | None = None) -> list[str | None]:
        """Fence the interrupted submissions, then find their jobs by name.

        The remote command of a submission outlives the adora that sent it: without
        the fence, an sbatch still to come would submit the XPs a second time after
        this run found nothing and submitted them again.
        """
        await self._user()
        remote = sorted({posixpath.join(self.remote_root, "arrays", r.job_name)
                         for _, r in intents if r.job_name})
        if remote:
            sys.audit("adora.remote", "fence", remote[0])
            result = await self.ssh.run(fence_command(remote), timeout=FENCE_WAIT + 60)
            sys.audit("adora.remote", "fenced", remote[0])
            if result.exit_status != 0:
                raise BackendError(
                    f"Could not recover an interrupted submission on {self.cluster.name}: "
                    f"{(result.stderr or result.stdout).strip()}. Run again later.")
        return await self.client.find(intents)

    async def read_file(self, path: str, offset: int, *, known: FileStamp | None = None
                        ) -> tuple[bytes, FileStamp] | None:
        return await self.ssh.read_file(self.remote_path(path), offset, known=known)

    async def list_folder(self, path: str) -> set[str] | None:
        # XP folders live on the cluster, and the local ones tell nothing about them (an
        # XP submitted from another machine): read_many's one batched stat decides.
        return None

    async def read_many(self, requests: tp.Sequence[ReadRequest]) -> list[ReadResult]:
        """One remote ``stat`` for every file, then SFTP reads of the ones that grew.

        A grid of 1,000 XPs costs one round trip when nothing changed, instead of
        one per file. The same ``stat`` looks for Dora's ``history.json`` beside
        each ``history.jsonl``: the tailer asks for it next when the jsonl is
        missing, and gets it without another round trip. Files whose stamp was
        just learnt (by the submission of their XP) are not looked for again.
        """
        results: list[ReadResult] = [None] * len(requests)
        remote = [self.remote_path(r.path) for r in requests]
        stamps: dict[int, FileStamp | None] = {}
        ask: list[int] = []
        for index, path in enumerate(remote):
            known = self._take(path)
            if known is _UNKNOWN:
                ask.append(index)
            else:
                stamps[index] = known
        if ask:
            paths = [remote[i] for i in ask]
            legacy = [p[:-len(JSONL_SUFFIX)] + ".json" for p in paths
                      if p.endswith(JSONL_SUFFIX)]
            try:
                found = await self.ssh.stat_many(paths + legacy)
            except BackendError as exc:
                for index in ask:
                    results[index] = exc
            else:
                stamps.update((i, found.get(remote[i])) for i in ask)
                self._learn(found, legacy)

        async def one(index: int, request: ReadRequest, stamp: FileStamp) -> None:
            try:
                results[index] = await self.ssh.read_file(remote[index], request.offset,
                                                          known=request.known, stamp=stamp)
            except BackendError as exc:
                results[index] = exc

        async with anyio.create_task_group() as tg:
            for index, stamp in stamps.items():
                request = requests[index]
                if stamp is None:
                    results[index] = None
                elif stamp == request.known or stamp.size <= request.offset:
                    results[index] = (b"", stamp)
                else:
                    tg.start_soon(one, index, request, stamp)
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
