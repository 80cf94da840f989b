"""The SSH backend against a real sshd in front of the real Slurm test cluster.

The "laptop" is the adora command run with a PATH that has no Slurm command;
the "cluster" is reached only through SSH (on loopback, or on a login node in
a network namespace).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import time
import typing as tp
from pathlib import Path

import anyio
import pytest

from adora.backends.ssh import SSHBackend
from adora.clusters import ClusterConfig, load_cluster
from adora.engine.grids import load_explorer
from adora.engine.run import GridResult, run_grid
from adora.engine.watch import GridWatch
from adora.package import load_main
from adora.states import JobState
from tests.conftest import adora_cli

pytestmark = [pytest.mark.ssh, pytest.mark.slurm]

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
    return json.loads(out.stdout)[f"Grid {name}"]


def wait_rows(root: Path, env: dict[str, str], name: str, predicate: tp.Callable[[list], bool],
              timeout: float = 300) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = grid_json(root, env, name)
        if predicate(rows):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(2)


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
    assert "valid.loss" in again.stdout


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
    sshd_server.kill_sshd()  # every connection drops
    try:
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
