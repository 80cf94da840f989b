"""The SSH backend against a real sshd in front of the real Slurm test cluster.

The "laptop" is the adora command run with a PATH that has no Slurm command;
the "cluster" is reached only through SSH (on loopback, or on a login node in
a network namespace).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import typing as tp
from pathlib import Path

import anyio
import pytest

from adora.backends.ssh import (
    KNOWN_FOR,
    SSHBackend,
    fence_command,
    submission_archive,
    submission_command,
)
from adora.clusters import ClusterConfig, load_cluster
from adora.conf import SubmitRules
from adora.engine.clock import FakeClock
from adora.engine.grids import load_explorer
from adora.engine.run import GridResult, run_grid
from adora.engine.tail import MetricsTailer, ReadRequest
from adora.engine.watch import GridWatch
from adora.link import jsonl_path
from adora.package import load_main
from adora.snapshot import snapshot, tar_bytes
from adora.ssh import SSHConnectionError, parse_stat
from adora.states import JobState
from tests.conftest import adora_cli


def beds(test: tp.Callable[..., tp.Any]) -> tp.Callable[..., tp.Any]:
    """Marks a test that needs the real sshd and Slurm test cluster."""
    return pytest.mark.ssh(pytest.mark.slurm(test))


CPU = "launcher.slurm_(gpus=0, mem_per_gpu=None, cpus_per_gpu=1, time=10)"


def cluster_toml(path: Path, server: tp.Any, workdir: Path, **extra: tp.Any) -> None:
    fields = {"host": server.host, "port": server.port, "user": server.username,
              "identity_file": str(server.client_key), "known_hosts": str(server.known_hosts),
              "workdir": str(workdir), "python": sys.executable, **extra}
    if server.proxy_command:
        fields["proxy_command"] = list(server.proxy_command)
    lines = ["[clusters.test]"] + [f"{k} = {json.dumps(v)}" for k, v in fields.items()]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def laptop(toy_project: Path, tmp_path: Path, sshd_server: tp.Any,
           monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment of the laptop side: no Slurm on PATH, the test cluster configured."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "sh", "bash", "env"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    env = {
        "PATH": f"{Path(sys.executable).parent}:{bin_dir}",
        "ADORA_CLUSTERS_FILE": str(tmp_path / "clusters.toml"),
        "ADORA_CACHE_DIR": str(tmp_path / "cache"),
        "ADORA_BACKEND": "auto",
    }
    cluster_toml(tmp_path / "clusters.toml", sshd_server, tmp_path / "remote")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SLURM_CONF", raising=False)
    assert shutil.which("sbatch", path=env["PATH"]) is None
    return env


def write_grid(root: Path, name: str, body: str) -> None:
    (root / "toy" / "grids" / f"{name}.py").write_text(
        "from adora import Explorer\nimport treetable as tt\n\n" + textwrap.dedent(body))


def grid_json(root: Path, env: dict[str, str], name: str, *args: str) -> list[dict]:
    out = adora_cli("grid", name, "--cluster", "test", "--json", *args, cwd=root, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[name]


def wait_rows(root: Path, env: dict[str, str], name: str, predicate: tp.Callable[[list], bool],
              timeout: float = 300) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = grid_json(root, env, name)
        if predicate(rows):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(2)


@beds
def test_200_xps_from_a_laptop_through_a_login_node(toy_project: Path, tmp_path: Path,
                                                      laptop: dict[str, str],
                                                      login_node: tp.Any) -> None:
    cluster_toml(Path(laptop["ADORA_CLUSTERS_FILE"]), login_node, tmp_path / "remote")
    write_grid(toy_project, "big", f"""
        class E(Explorer):
            def get_grid_metrics(self):
                return [tt.group("valid", [tt.leaf("loss", ".3f")])]

        @E
        def explorer(launcher):
            {CPU}
            for seed in range(200):
                launcher(seed=seed, epochs=1, hidden=2)
    """)
    first = adora_cli("grid", "big", "--cluster", "test", cwd=toy_project, env=laptop)
    assert first.returncode == 0, first.stderr
    assert "Submitted 200 XP(s) in 1 submission(s)" in first.stderr
    rows = wait_rows(toy_project, laptop, "big",
                     lambda rows: all(r["state"] in ("COMPLETED", "FAILED") for r in rows))
    assert {r["state"] for r in rows} == {"COMPLETED"}
    missing = [r for r in rows if "valid" not in r["metrics"]]
    assert not missing, (len(missing), missing[:2])
    assert all(r["metrics"]["valid"]["loss"] > 0 for r in rows)  # read over SFTP
    again = adora_cli("grid", "big", "--cluster", "test", cwd=toy_project, env=laptop)
    assert again.returncode == 0 and "Submitted" not in again.stderr
    assert "| valid" in again.stdout and "loss" in again.stdout  # group header, leaf below


@beds
def test_removed_xps_are_cancelled_remotely(toy_project: Path, laptop: dict[str, str]
                                            ) -> None:
    write_grid(toy_project, "g", f"""
        @Explorer
        def explorer(launcher):
            {CPU}
            for seed in (1, 2, 3):
                launcher(seed=seed, epochs=500, epoch_time=0.2)
    """)
    assert adora_cli("grid", "g", "--cluster", "test", cwd=toy_project,
                     env=laptop).returncode == 0
    wait_rows(toy_project, laptop, "g", lambda rows: all(r["state"] == "RUNNING" for r in rows))
    write_grid(toy_project, "g", f"""
        @Explorer
        def explorer(launcher):
            {CPU}
            for seed in (1, 3):
                launcher(seed=seed, epochs=500, epoch_time=0.2)
    """)
    out = adora_cli("grid", "g", "--cluster", "test", "--yes", cwd=toy_project, env=laptop)
    assert "Cancelled 1 job(s)" in out.stderr
    cancelled = adora_cli("info", "--", "--seed", "2", "--epochs", "500",
                          "--epoch_time", "0.2", cwd=toy_project, env=laptop)
    assert "CANCELLED" in cancelled.stdout, cancelled.stdout + cancelled.stderr
    rows = grid_json(toy_project, laptop, "g")
    assert [r["state"] for r in rows] == ["RUNNING", "RUNNING"]
    assert adora_cli("grid", "g", "--cluster", "test", "-C", cwd=toy_project,
                     env=laptop).returncode == 0
    wait_rows(toy_project, laptop, "g", lambda rows: all(r["state"] == "CANCELLED"
                                                          for r in rows))


@beds
def test_running_jobs_keep_their_code(toy_project: Path, laptop: dict[str, str],
                                      tmp_path: Path) -> None:
    # The training module reports the version file of the code it runs from, every epoch.
    train = toy_project / "toy" / "train.py"
    push = "        xp.link.push_metrics({"
    text = train.read_text().replace("import time\n", "import time\nfrom pathlib import Path\n")
    text = text.replace(push, '        version = (Path(__file__).parent / "version.txt")'
                              '.read_text().strip()\n' + push + '"version": version, ')
    assert text.count('"version": version') == 1
    train.write_text(text)
    (toy_project / "toy" / "version.txt").write_text("v1\n")
    write_grid(toy_project, "code", f"""
        class E(Explorer):
            def get_grid_metrics(self):
                return [tt.leaf("version")]

        @E
        def explorer(launcher):
            {CPU}
            launcher(seed=1, epochs=25, epoch_time=0.4)
    """)
    assert adora_cli("grid", "code", "--cluster", "test", cwd=toy_project,
                     env=laptop).returncode == 0
    wait_rows(toy_project, laptop, "code", lambda rows: rows[0]["metrics"]["epoch"] >= 2)
    (toy_project / "toy" / "version.txt").write_text("v2\n")  # edit while it runs
    write_grid(toy_project, "code", f"""
        class E(Explorer):
            def get_grid_metrics(self):
                return [tt.leaf("version")]

        @E
        def explorer(launcher):
            {CPU}
            launcher(seed=1, epochs=25, epoch_time=0.4)
            launcher(seed=2, epochs=2)
            launcher(seed=3, epochs=2)
    """)
    out = adora_cli("grid", "code", "--cluster", "test", cwd=toy_project, env=laptop)
    assert "Submitted 2 XP(s)" in out.stderr
    rows = wait_rows(toy_project, laptop, "code",
                     lambda rows: all(r["state"] == "COMPLETED" for r in rows), timeout=180)
    assert rows[0]["metrics"]["version"] == "v1"  # the first job kept its code
    assert rows[1]["metrics"]["version"] == rows[2]["metrics"]["version"] == "v2"
    codes = sorted(p.name for p in (tmp_path / "remote" / "codes").iterdir()
                   if not p.name.startswith("."))
    assert len(codes) == 2  # one snapshot per distinct content
    folder = tmp_path / "remote" / "codes"
    assert {(folder / c / "toy" / "version.txt").read_text() for c in codes} == {"v1\n", "v2\n"}


@beds
def test_hostile_argument_reaches_the_script_verbatim(toy_project: Path, laptop: dict[str, str],
                                                     tmp_path: Path) -> None:
    marker = Path("/tmp/pwned")
    if marker.exists():
        marker.unlink()
    note = "x; touch /tmp/pwned $(id) `id` 'q' \"d\"\nnext line"
    out = adora_cli("launch", "--cluster", "test", "-g", "0", "--", "--note", note,
                    "--epochs", "1", cwd=toy_project, env=laptop, timeout=180)
    assert out.returncode == 0, out.stderr
    assert f"note: {note!r}" in out.stdout  # the remote log, followed over SFTP
    main = load_main("toy")
    sig = main.get_xp(["--note", note, "--epochs", "1"]).sig
    remote_argv = json.loads((tmp_path / "remote" / "outputs" / "xps" / sig /
                              ".argv.json").read_text())
    assert remote_argv == ["--note", note, "--epochs", "1"]
    assert not marker.exists()


@beds
def test_unknown_host_key_is_refused(toy_project: Path, laptop: dict[str, str],
                                     tmp_path: Path, sshd_server: tp.Any) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    cluster_toml(Path(laptop["ADORA_CLUSTERS_FILE"]), sshd_server, tmp_path / "remote",
                 known_hosts=str(empty))
    out = adora_cli("cluster", "check", "test", cwd=toy_project, env=laptop)
    assert out.returncode != 0
    assert "not trusted" in out.stdout and "SHA256:" in out.stdout
    assert "Traceback" not in out.stderr
    grid = adora_cli("grid", "sweep", "--cluster", "test", cwd=toy_project, env=laptop)
    assert grid.returncode != 0 and "not trusted" in grid.stderr
    assert "Traceback" not in grid.stderr


@beds
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_connection_loss_marks_stale_then_reconnects(
        toy_project: Path, laptop: dict[str, str], sshd_server: tp.Any, anyio_backend: str
        ) -> None:
    write_grid(toy_project, "g", f"""
        @Explorer
        def explorer(launcher):
            {CPU}
            launcher(seed=1, epochs=300, epoch_time=0.2)
    """)
    main = load_main("toy")
    cluster = load_cluster("test")
    backend = SSHBackend(main.dora.dir, cluster, project_root=toy_project, share_polls=False)
    explorer, path = load_explorer(main, "g")
    result: GridResult = await run_grid(main, explorer, "g", backend=backend, grid_file=path)
    watch = GridWatch(main, [result])
    sheep = result.sheeps[0]
    with anyio.fail_after(120):
        while sheep.job_state is not JobState.RUNNING:
            await watch.refresh()
            await anyio.sleep(1)
    assert backend.ssh.connects == 1
    in_flight: list[tp.Any] = []

    async def remote_sleep() -> None:
        try:
            in_flight.append(await backend.ssh.run(["sleep", "30"]))
        except SSHConnectionError as exc:
            in_flight.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(remote_sleep)
        await anyio.sleep(1)
        sshd_server.kill_sshd()  # every connection drops, one command in flight
    try:
        # The command cut off says so (a submission failing this way names the cause).
        got = in_flight[0]
        assert isinstance(got, SSHConnectionError) or (
            got.exit_status != 0 and "gave no exit status" in got.stderr), got
        await watch.refresh()
        assert sheep.stale and sheep.job_state is JobState.RUNNING  # never FAILED
        assert not watch.all_done()
    finally:
        sshd_server.start_sshd()
    with anyio.fail_after(60):
        while sheep.stale:
            await anyio.sleep(1)
            await watch.refresh()
    assert backend.ssh.connects == 2 and sheep.job_state is JobState.RUNNING
    again = await run_grid(main, explorer, "g", backend=backend, grid_file=path)
    assert again.submitted == []  # nothing submitted twice
    await backend.cancel([sheep.job])  # type: ignore[list-item]
    await backend.aclose()


@beds
def test_cluster_config_errors(toy_project: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "clusters.toml"
    monkeypatch.setenv("ADORA_CLUSTERS_FILE", str(config))
    config.write_text('[clusters.a]\nhost = "h"\nworkdir = "/w"\nhots = 1\n')
    with pytest.raises(Exception, match="unknown field"):
        load_cluster("a")
    with pytest.raises(Exception, match="Unknown cluster 'b'"):
        load_cluster("b")
    (toy_project / "pyproject.toml").write_text(
        '[tool.adora.clusters.p]\nhost = "h2"\nworkdir = "/w2"\nactivate = "source x"\n')
    got = load_cluster("p", toy_project)
    assert isinstance(got, ClusterConfig) and got.activate == ["source x"]
    assert os.fspath(got.workdir) == "/w2"


# -- one remote command per submission -------------------------------------------------------
def _as_sshd_runs_it(argv: list[str], stdin: bytes, bin_dir: Path, cwd: Path
                     ) -> subprocess.CompletedProcess[bytes]:
    # sshd hands the command line to the user's shell: the quoted argument vector.
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", shlex.join(argv)], input=stdin, capture_output=True,
                          env=env, cwd=cwd, timeout=60)


@pytest.mark.skipif(any(shutil.which(t) is None for t in ("tar", "xargs", "stat", "mktemp")),
                    reason="needs tar, xargs, stat and mktemp")
def test_submission_command_unpacks_installs_submits_and_reports(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch-calls"
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" >> {shlex.quote(str(calls))}\n'
                      'test -z "$SBATCH_FAIL" || { echo "sbatch: error: no" >&2; exit 1; }\n'
                      'echo 4242\n')
    sbatch.chmod(0o755)
    hostile = "a dir 'q' \"d\" $(touch pwned) `touch pwned2`; x\nline"
    remote = tmp_path / "remote" / hostile
    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    (project / "pkg" / "train.py").write_text("print(1)\n")
    snap = snapshot(project)
    code_dir = str(remote / "codes" / snap.hash)
    seen = remote / "xps" / "a" / "history.jsonl"
    seen.parent.mkdir(parents=True)
    seen.write_text('{"loss": 1}\n')
    new = remote / "xps" / "b" / "history.jsonl"
    argv_json = json.dumps([["--note", hostile]]).encode()
    files = {"argv.json": argv_json, "submit.sh": b"#!/bin/bash\n",
             "metrics.lst": f"{seen}\0{new}\0".encode(), "code.tar.gz": tar_bytes(snap)}
    folder = remote / "arrays" / "adora_1"
    # One line: csh, a login shell on some clusters, refuses newlines inside quotes.
    assert "\n" not in submission_command("/f", "/codes/h")[2]

    out = _as_sshd_runs_it(submission_command(str(folder), code_dir),
                           submission_archive(files), bin_dir, tmp_path)
    assert out.returncode == 0, out.stderr
    head, _, stats = out.stdout.decode().partition("\n")
    assert head == "job 4242"
    st = seen.stat()
    assert parse_stat(stats) == {str(seen): (st.st_size, int(st.st_mtime) * 10**9, 0)}
    assert (folder / "argv.json").read_bytes() == argv_json
    assert sorted(p.name for p in folder.iterdir()) == ["argv.json", "submit.sh"]
    assert (Path(code_dir) / "pkg" / "train.py").read_text() == "print(1)\n"
    assert calls.read_text().split("\0") == ["--parsable", "--", str(folder / "submit.sh"), ""]
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()

    # The code is there now: a submission without it finds it.
    plain = {"argv.json": b"[[]]", "submit.sh": b"#!/bin/bash\n"}
    again = _as_sshd_runs_it(submission_command(str(remote / "arrays" / "adora_2"), code_dir),
                             submission_archive(plain), bin_dir, tmp_path)
    assert again.returncode == 0 and again.stdout.decode() == "job 4242\n", again.stderr
    # Code that is not on the cluster: nothing submitted.
    calls.unlink()
    absent = str(remote / "codes" / ("0" * 64))
    missing = _as_sshd_runs_it(submission_command(str(remote / "arrays" / "adora_3"), absent),
                               submission_archive(plain), bin_dir, tmp_path)
    assert missing.returncode == 3 and b"missing on the cluster" in missing.stderr
    assert not calls.exists() and b"job" not in missing.stdout
    # A code archive that does not unpack: nothing submitted, no archive left behind.
    broken = _as_sshd_runs_it(
        submission_command(str(remote / "arrays" / "adora_5"), str(remote / "codes" / "1")),
        submission_archive({**plain, "code.tar.gz": b"not a tar", "metrics.lst": b"/x\0"}),
        bin_dir, tmp_path)
    assert broken.returncode != 0 and not calls.exists()
    assert sorted(p.name for p in (remote / "arrays" / "adora_5").iterdir()) == [
        "argv.json", "submit.sh"]
    assert not (remote / "codes" / "1").exists()
    # sbatch refuses: its error, and no job line.
    failed = subprocess.run(
        ["sh", "-c", shlex.join(submission_command(str(remote / "arrays" / "adora_4"),
                                                   code_dir))],
        input=submission_archive(plain), capture_output=True, cwd=tmp_path, timeout=60,
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "SBATCH_FAIL": "1"})
    assert failed.returncode == 1 and b"sbatch: error: no" in failed.stderr
    assert b"job" not in failed.stdout
    # Fenced by the run that recovers it (its adora was killed): sbatch never runs.
    fenced = str(remote / "arrays" / "adora_6")
    assert _as_sshd_runs_it(fence_command([fenced]), b"", bin_dir, tmp_path).returncode == 0
    calls.unlink(missing_ok=True)
    late = _as_sshd_runs_it(submission_command(fenced, code_dir), submission_archive(plain),
                            bin_dir, tmp_path)
    assert late.returncode == 4 and b"abandoned" in late.stderr, late.stderr
    assert not calls.exists() and b"job" not in late.stdout


@beds
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_submission_is_one_command_and_the_table_needs_no_lookup(
        toy_project: Path, laptop: dict[str, str], tmp_path: Path, anyio_backend: str) -> None:
    write_grid(toy_project, "one", f"""
        @Explorer
        def explorer(launcher):
            {CPU}
            for seed in (1, 2):
                launcher(seed=seed, epochs=1)
            launcher.slurm_(time=11)
            launcher(seed=3, epochs=1)  # another Slurm config: a job of its own
    """)
    write_grid(toy_project, "two", f"""
        @Explorer
        def explorer(launcher):
            {CPU}
            launcher(seed=4, epochs=1)
    """)
    main = load_main("toy")
    explorer, path = load_explorer(main, "one")
    backend = SSHBackend(main.dora.dir, load_cluster("test"), project_root=toy_project,
                         share_polls=False)
    jobs = []
    try:
        result = await run_grid(main, explorer, "one", backend=backend, grid_file=path)
        jobs += [s.job for s in result.sheeps if s.job is not None]
        assert len(result.submitted) == 3 and len(jobs) == 3
        assert jobs[0].array_id is not None and jobs[2].array_id is None
        # The array size limit, then one command per submission: files, sbatch, and
        # the code snapshot in the first one (the other waited for it).
        assert backend.ssh.count == {"scontrol": 1, "sh": 2}
        assert backend.uploads == 1
        folder = tmp_path / "remote" / "outputs" / "arrays" / str(jobs[0].job_name)
        assert json.loads((folder / "argv.json").read_text()) == [
            s.xp.argv for s in result.sheeps[:2]]
        assert sorted(p.name for p in folder.iterdir()
                      if not p.name.endswith(".log")) == ["argv.json", "submit.sh"]
        watch = GridWatch(main, [result])
        await watch.refresh_metrics()  # what `adora grid` shows right after submitting
        assert backend.ssh.count == {"scontrol": 1, "sh": 2}  # the submissions told
        assert all(watch.history(s) == [] for s in result.sheeps)
        await watch.refresh_metrics()  # later refreshes look again
        assert backend.ssh.count == {"scontrol": 1, "sh": 2, "xargs": 1}  # xargs stat
    finally:
        if jobs:
            await backend.cancel(jobs)
        await backend.aclose()

    # Another process, same code: found on the cluster, not uploaded again.
    explorer, path = load_explorer(main, "two")
    other = SSHBackend(main.dora.dir, load_cluster("test"), project_root=toy_project,
                       share_polls=False)
    try:
        result = await run_grid(main, explorer, "two", backend=other, grid_file=path)
        assert result.submitted and other.uploads == 0
        assert other.ssh.count == {"scontrol": 1, "sh": 1}
    finally:
        await other.cancel([s.job for s in result.sheeps if s.job is not None])
        await other.aclose()


@beds
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_resubmitted_xp_shows_its_history_right_after(
        toy_project: Path, laptop: dict[str, str], anyio_backend: str) -> None:
    write_grid(toy_project, "re", f"""
        @Explorer
        def explorer(launcher):
            {CPU}
            launcher(seed=7, epochs=1)
    """)
    main = load_main("toy")
    explorer, path = load_explorer(main, "re")
    backend = SSHBackend(main.dora.dir, load_cluster("test"), project_root=toy_project,
                         share_polls=False)
    try:
        result = await run_grid(main, explorer, "re", backend=backend, grid_file=path)
        watch = GridWatch(main, [result])
        sheep = result.sheeps[0]
        with anyio.fail_after(180):
            while not (sheep.job_state is JobState.COMPLETED and watch.history(sheep)):
                await anyio.sleep(1)
                await watch.refresh()
    finally:
        await backend.aclose()
    again = SSHBackend(main.dora.dir, load_cluster("test"), project_root=toy_project,
                       share_polls=False)
    try:
        result = await run_grid(main, explorer, "re", SubmitRules(replace_done=True),
                                backend=again, grid_file=path)
        assert result.submitted == [sheep.xp.sig]
        watch = GridWatch(main, [result])
        await watch.refresh_metrics()
        assert "xargs" not in again.ssh.count  # no stat: the submission reported the file
        history = watch.history(result.sheeps[0])  # read over SFTP
        assert len(history) == 1 and "valid" in history[0]
    finally:
        await again.cancel([s.job for s in result.sheeps if s.job is not None])
        await again.aclose()


@beds
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_dora_history_is_looked_for_with_the_jsonl(
        toy_project: Path, laptop: dict[str, str], tmp_path: Path, anyio_backend: str) -> None:
    main = load_main("toy")
    clock = FakeClock()
    backend = SSHBackend(main.dora.dir, load_cluster("test"), project_root=toy_project,
                         share_polls=False, clock=clock)
    dora_xp, new_xp, empty_xp = (main.get_xp(["--seed", str(i)]) for i in (1, 2, 3))
    remote_xps = tmp_path / "remote" / "outputs" / "xps"
    (remote_xps / dora_xp.folder.name).mkdir(parents=True)
    (remote_xps / dora_xp.folder.name / dora_xp.history.name).write_text(json.dumps([{"loss": 3}]))
    (remote_xps / empty_xp.folder.name).mkdir(parents=True)
    try:
        tailer = MetricsTailer.for_backend(backend)
        await tailer.refresh([dora_xp.history, new_xp.history, empty_xp.history])
        # history.jsonl missing everywhere: history.json was looked for in the same
        # command (`xargs stat`).
        assert backend.ssh.count == {"xargs": 1}
        assert tailer.history(dora_xp.history) == [{"loss": 3}]
        assert tailer.history(new_xp.history) == tailer.history(empty_xp.history) == []
        # What is learnt in passing is used once, and only while fresh.
        await backend.read_many([ReadRequest(str(jsonl_path(new_xp.history)))])
        assert backend.ssh.count == {"xargs": 2}
        clock.advance(KNOWN_FOR + 1)
        assert await backend.read_many([ReadRequest(str(new_xp.history))]) == [None]
        assert backend.ssh.count == {"xargs": 3}
        await backend.read_many([ReadRequest(str(jsonl_path(new_xp.history)))])
        assert await backend.read_many([ReadRequest(str(new_xp.history))]) == [None]
        assert backend.ssh.count == {"xargs": 4}
        assert await backend.read_many([ReadRequest(str(new_xp.history))]) == [None]
        assert backend.ssh.count == {"xargs": 5}
        # Any file name, any number of files: one command, paths on its stdin.
        odd = tmp_path / "remote" / "a b\n'c' $(x) \\"
        odd.write_text("12345")
        many = [str(tmp_path / "remote" / f"absent-{i:05d}-{'x' * 80}") for i in range(3000)]
        stamps = await backend.ssh.stat_many([*many, str(odd)])
        assert list(stamps) == [str(odd)] and stamps[str(odd)].size == 5
        assert backend.ssh.count == {"xargs": 6}
        # A stamp just learnt: the bytes up to its size are read, nothing asked again.
        with odd.open("a") as f:
            f.write("678")
        got = await backend.ssh.read_file(str(odd), 1, stamp=stamps[str(odd)])
        assert got == (b"2345", stamps[str(odd)])
        assert await backend.ssh.read_file(str(odd), 5, stamp=stamps[str(odd)]) == \
            (b"", stamps[str(odd)])
        grown = await backend.ssh.read_file(str(odd), 5)
        assert grown is not None and grown[0] == b"678" and grown[1].size == 8
    finally:
        await backend.aclose()


def test_remote_paths(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "outputs").mkdir(parents=True)
    (tmp_path / "link").symlink_to(project)
    cluster = ClusterConfig(name="c", host="h", workdir="/scratch/me/")
    backend = SSHBackend(project / "outputs", cluster, project_root=project)
    assert backend.remote_root == "/scratch/me/outputs"
    assert backend.remote_path(project / "outputs" / "xps" / "a" / "history.jsonl") == \
        "/scratch/me/outputs/xps/a/history.jsonl"
    assert backend.remote_path(str(project / "outputs")) == "/scratch/me/outputs"
    # Through a symbolic link to the project: resolved.
    assert backend.remote_path(tmp_path / "link" / "outputs" / "x.log") == \
        "/scratch/me/outputs/x.log"
    # Remote already, or relative: unchanged.
    assert backend.remote_path("/scratch/me/outputs/arrays/j/1.log") == \
        "/scratch/me/outputs/arrays/j/1.log"
    assert backend.remote_path("xps/a") == "xps/a"
    # A sibling folder whose name starts like the output folder is not inside it.
    assert backend.remote_path(project / "outputs2" / "f") == str(project / "outputs2" / "f")


@beds
def test_dependent_jobs_on_a_remote_cluster(toy_project: Path, laptop: dict[str, str],
                                            slurm_env: tp.Any) -> None:
    """dependents=1 over SSH: a first job that fails hands over to the second, which
    resumes and completes; cancelling cancels both jobs of a chain."""
    from adora.jobs import load_record

    write_grid(toy_project, "chain", """
        @Explorer
        def explorer(launcher):
            launcher.slurm_(gpus=0, mem_per_gpu=None, cpus_per_gpu=1, time=10, dependents=1)
            launcher(seed=1, epochs=3, fail_once_at=1)
            launcher(seed=2, epochs=500, epoch_time=0.2)
    """)
    out = adora_cli("grid", "chain", "--cluster", "test", cwd=toy_project, env=laptop)
    assert out.returncode == 0, out.stderr
    assert "Submitted 2 XP(s) in 2 submission(s)" in out.stderr  # chains are not arrays
    seen: list[str] = []

    def done(rows: list[dict]) -> bool:
        seen.append(rows[0]["state"])
        return rows[0]["state"] == "COMPLETED" and rows[1]["state"] == "RUNNING"

    rows = wait_rows(toy_project, laptop, "chain", done, timeout=120)
    assert "FAILED" not in seen, seen
    flaky, long = (load_record(toy_project / "outputs" / "xps" / r["sig"]) for r in rows)
    assert flaky is not None and long is not None
    assert len(flaky.links) == 2 and len(long.links) == 2  # every job tracked

    def sacct(ids: list[str]) -> dict[str, str]:
        got = subprocess.run(["/usr/bin/sacct", "-n", "-P", "-X", "-o", "JobID,State,NodeList",
                              "-j", ",".join(ids)], capture_output=True, text=True, check=True,
                             env={**os.environ, **slurm_env.env})
        return {line.split("|")[0]: line.split("|", 1)[1] for line in got.stdout.splitlines()}

    states = sacct(flaky.links)
    assert states[flaky.links[0]].startswith("FAILED|")
    assert states[flaky.links[1]].startswith("COMPLETED|")
    assert rows[0]["job_id"] == flaky.links[1]  # the job that completed the XP
    assert rows[0]["metrics"]  # its history, read over SFTP, has the three epochs' metrics
    cancel = adora_cli("grid", "chain", "--cluster", "test", "-C", cwd=toy_project, env=laptop)
    assert cancel.returncode == 0, cancel.stderr
    deadline = time.monotonic() + 60
    while True:
        states = sacct(long.links)
        if [states.get(i, "?").split()[0] for i in long.links] == ["CANCELLED"] * 2:
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.5)
    assert states[long.links[1]].endswith("|None assigned")  # the second never ran
