"""The test beds themselves: a real Slurm cluster, a real sshd, a login node.

These tests check the facts other tests rely on (jobs complete and reach sacct,
fake GPUs, arrays, both partitions, the controller can be stopped and comes back,
key-only SSH with host key checking, SFTP, the login node's relays). They skip
with a clear reason on machines that cannot run the test beds.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import re
import signal
import subprocess
import sys
import time
import typing as tp
from pathlib import Path

import pytest

from adora.testing import slurm_cluster as slurm
from adora.testing import sshd
from adora.testing.slurm_cluster import ClusterInfo
from adora.testing.sshd import SshdInfo

pytest_plugins = ["adora.testing.pytest_fixtures"]

_FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
          "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


def _window() -> tuple[str, str]:
    # sacct with a relative -S silently returns nothing: pass absolute times.
    now = datetime.datetime.now()
    fmt = "%Y-%m-%dT%H:%M:%S"
    return ((now - datetime.timedelta(hours=6)).strftime(fmt),
            (now + datetime.timedelta(hours=6)).strftime(fmt))


def run(*argv: str, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def sbatch(cluster: ClusterInfo, *args: str) -> str:
    out = run("sbatch", "--parsable", *args, env=cluster.env).stdout.strip()
    return out.split(";")[0]


def sacct_states(cluster: ClusterInfo, job_id: str) -> dict[str, str]:
    """JobID -> State for the job (array tasks each get their own line)."""
    start, end = _window()
    out = run("sacct", "-n", "-X", "-P", "-j", job_id, "-S", start, "-E", end,
              "-o", "JobID,State,Partition", env=cluster.env).stdout
    states = {}
    for line in out.splitlines():
        jid, state, _ = line.split("|")
        states[jid] = state.split()[0]
    return states


def wait_final(cluster: ClusterInfo, job_id: str, *, count: int = 1,
               timeout: float = 60) -> dict[str, str]:
    """Wait until sacct shows ``count`` lines for the job, all in a final state."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = sacct_states(cluster, job_id)
        if len(states) >= count and all(s in _FINAL for s in states.values()):
            return states
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} not finished after {timeout} s: {states}")


# --------------------------------------------------------------------------- Slurm


@pytest.mark.slurm
def test_unavailable_reason_is_none_or_text() -> None:
    reason = slurm.unavailable_reason()
    assert reason is None or "needs" in reason or "disabled" in reason


@pytest.mark.slurm
def test_start_again_is_a_quick_no_op(slurm_cluster: ClusterInfo) -> None:
    began = time.monotonic()
    again = slurm.start(slurm_cluster.state_dir)
    assert again.already_running
    assert time.monotonic() - began < 2
    assert slurm.is_running(slurm_cluster.state_dir)
    assert Path("/etc/slurm/slurm.conf").resolve() == slurm_cluster.conf.resolve()


@pytest.mark.slurm
def test_sbatch_wrap_completes_in_sacct(slurm_cluster: ClusterInfo, tmp_path: Path) -> None:
    out = tmp_path / "hello.out"
    job = sbatch(slurm_cluster, "-o", str(out), "--wrap", "echo hello from $SLURM_JOB_ID")
    states = wait_final(slurm_cluster, job)
    assert states == {job: "COMPLETED"}
    assert out.read_text().strip() == f"hello from {job}"


@pytest.mark.slurm
def test_gpus_are_visible_as_cuda_devices(slurm_cluster: ClusterInfo, tmp_path: Path) -> None:
    out = tmp_path / "gpus.out"
    job = sbatch(slurm_cluster, "--gres=gpu:2", "-o", str(out),
                 "--wrap", "echo $CUDA_VISIBLE_DEVICES")
    assert wait_final(slurm_cluster, job) == {job: "COMPLETED"}
    assert out.read_text().strip() == "0,1"


@pytest.mark.slurm
def test_array_respects_its_throttle(slurm_cluster: ClusterInfo, tmp_path: Path) -> None:
    job = sbatch(slurm_cluster, "--array=0-9%5", "-o", str(tmp_path / "%a.out"),
                 "--wrap", "sleep 1; echo $SLURM_ARRAY_TASK_ID")
    most_running = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        proc = run("squeue", "-h", "-r", "-j", job, "-t", "R", "-o", "%i",
                   env=slurm_cluster.env, check=False)
        most_running = max(most_running, len(proc.stdout.split()))
        left = run("squeue", "-h", "-r", "-j", job, "-o", "%i", env=slurm_cluster.env,
                   check=False).stdout.split()
        if not left:
            break
        time.sleep(0.1)
    assert 1 <= most_running <= 5
    states = wait_final(slurm_cluster, job, count=10)
    assert sorted(states) == sorted(f"{job}_{i}" for i in range(10))
    assert set(states.values()) == {"COMPLETED"}
    assert sorted(int((tmp_path / f"{i}.out").read_text()) for i in range(10)) == list(range(10))


@pytest.mark.slurm
def test_max_array_size(slurm_cluster: ClusterInfo) -> None:
    top = slurm_cluster.max_array_size - 1
    job = sbatch(slurm_cluster, f"--array={top}", "--hold", "--wrap", "true")
    run("scancel", job, env=slurm_cluster.env)
    too_big = run("sbatch", f"--array={top + 1}", "--hold", "--wrap", "true",
                  env=slurm_cluster.env, check=False)
    assert too_big.returncode != 0


@pytest.mark.slurm
def test_second_partition(slurm_cluster: ClusterInfo) -> None:
    assert slurm_cluster.partitions == ("debug", "learnfair")
    job = sbatch(slurm_cluster, "-p", "learnfair", "--wrap", "true")
    wait_final(slurm_cluster, job)
    start, end = _window()
    # sacct may show COMPLETED with an empty Partition for a few seconds: wait for it.
    deadline = time.monotonic() + 30
    while True:
        out = run("sacct", "-n", "-X", "-P", "-j", job, "-S", start, "-E", end,
                  "-o", "Partition,State", env=slurm_cluster.env).stdout.split()
        if out != ["|COMPLETED"] or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert out == ["learnfair|COMPLETED"]


def _wait_state(cluster: ClusterInfo, job: str, state: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while run("squeue", "-h", "-j", job, "-o", "%T", env=cluster.env).stdout.strip() != state:
        assert time.monotonic() < deadline, f"job {job} not {state} after {timeout} s"
        time.sleep(0.1)


@pytest.mark.slurm
def test_step_launch_survives_a_slurmd_slower_than_the_requeue_hold(
        slurm_cluster: ClusterInfo, tmp_path: Path) -> None:
    # A loaded machine: slurmd gets the launch of a step 13 s after slurmctld signed its
    # credential, longer than slurmctld's cred_expire (the requeue hold). With one
    # cred_expire for both daemons srun failed: "Job credential expired".
    out = tmp_path / "step.out"
    job = sbatch(slurm_cluster, "-o", str(out), "--wrap", "sleep 2; srun echo step ran")
    _wait_state(slurm_cluster, job, "RUNNING")
    slurmd = slurm.daemon_pids(slurm_cluster.state_dir)["slurmd"]
    assert slurmd is not None
    os.kill(slurmd, signal.SIGSTOP)
    try:
        time.sleep(slurm.CTLD_CRED_EXPIRE + 3)
    finally:
        os.kill(slurmd, signal.SIGCONT)
    assert wait_final(slurm_cluster, job) == {job: "COMPLETED"}, out.read_text()
    assert out.read_text().strip() == "step ran"


@pytest.mark.slurm
def test_requeued_job_is_held_for_the_short_cred_expire(slurm_cluster: ClusterInfo) -> None:
    job = sbatch(slurm_cluster, "--requeue", "-o", "/dev/null", "--wrap", "sleep 300")
    try:
        _wait_state(slurm_cluster, job, "RUNNING")
        requeued = time.time()
        run("scontrol", "requeue", job, env=slurm_cluster.env)
        # The hold is set once the job has left the node (COMPLETING, then PENDING).
        _wait_state(slurm_cluster, job, "PENDING")
        shown = run("scontrol", "-o", "show", "job", job, env=slurm_cluster.env).stdout
        eligible = re.search(r"EligibleTime=(\S+)", shown)
        assert eligible, shown
        hold = datetime.datetime.fromisoformat(eligible.group(1)).timestamp() - requeued
        # slurmctld: begin_time = now + cred_expire + 1 (its own cred_expire, not slurmd's).
        assert slurm.CTLD_CRED_EXPIRE - 1 <= hold <= slurm.CTLD_CRED_EXPIRE + 3, shown
    finally:
        run("scancel", job, env=slurm_cluster.env, check=False)


@pytest.mark.slurm
def test_start_restarts_a_slurmd_started_with_an_older_config(
        slurm_cluster: ClusterInfo) -> None:
    # An older test bed ran slurmd on slurm.conf itself: start() must notice and restart
    # slurmd alone (the other daemons, and jobs of other test sessions, keep running).
    state = slurm_cluster.state_dir
    before = slurm.daemon_pids(state)
    assert slurm.stop_daemon("slurmd", state)
    run(slurm.which("slurmd") or "slurmd", "-N", slurm_cluster.node_name,
        "-f", str(slurm_cluster.conf), env=slurm_cluster.env)
    again = slurm.start(state)
    assert not again.already_running
    after = slurm.daemon_pids(state)
    assert {d: after[d] for d in slurm.DAEMONS if d != "slurmd"} == {
        d: before[d] for d in slurm.DAEMONS if d != "slurmd"}
    cmdline = Path(f"/proc/{after['slurmd']}/cmdline").read_bytes().split(b"\0")
    assert str(state / "etc" / "slurmd.conf").encode() in cmdline
    assert slurm.start(state).already_running


@pytest.mark.slurm
def test_controller_stop_and_start(slurm_cluster: ClusterInfo, tmp_path: Path) -> None:
    # Clients retry a dead controller for MessageTimeout (30 s): give up after 3 s instead.
    impatient = {"SLURM_CONF": str(slurm.client_conf(tmp_path / "slurm.conf", message_timeout=3,
                                                     state_dir=slurm_cluster.state_dir))}
    done = sbatch(slurm_cluster, "--wrap", "true")
    wait_final(slurm_cluster, done)
    held = sbatch(slurm_cluster, "--hold", "--wrap", "true")
    try:
        began = time.monotonic()
        with slurm_cluster.controller_stopped():
            stop_seconds = time.monotonic() - began
            asked = time.monotonic()
            down = run("squeue", "-h", env=impatient, check=False, timeout=90)
            assert time.monotonic() - asked < 15
            assert down.returncode != 0
            assert "Unable to contact slurm controller" in down.stderr
            # Accounting lives on without the controller (a held job is not in it: Slurm
            # records pending jobs once they are eligible).
            assert sacct_states(slurm_cluster, done) == {done: "COMPLETED"}
            restart_began = time.monotonic()
        restart_seconds = time.monotonic() - restart_began
        print(f"controller stop {stop_seconds:.1f} s, restart {restart_seconds:.1f} s")
        listed = run("squeue", "-h", "-j", held, "-o", "%i %T", env=slurm_cluster.env)
        assert listed.stdout.split() == [held, "PENDING"]
        fresh = sbatch(slurm_cluster, "--wrap", "true")
        assert wait_final(slurm_cluster, fresh) == {fresh: "COMPLETED"}
    finally:
        run("scancel", held, env=slurm_cluster.env, check=False)


@pytest.mark.slurm
def test_full_restart_cancels_jobs_it_killed(slurm_cluster: ClusterInfo) -> None:
    running = sbatch(slurm_cluster, "--gres=gpu:8", "--wrap", "sleep 300")
    pending = sbatch(slurm_cluster, "--hold", "--wrap", "true")
    deadline = time.monotonic() + 30
    while run("squeue", "-h", "-j", running, "-o", "%T", env=slurm_cluster.env
              ).stdout.strip() != "RUNNING":
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.1)
    began = time.monotonic()
    assert "slurmd" in slurm.stop(slurm_cluster.state_dir)
    stopped = time.monotonic()
    again = slurm.start(slurm_cluster.state_dir)
    print(f"full stop {stopped - began:.1f} s, warm start {time.monotonic() - stopped:.1f} s")
    assert not again.already_running
    states = run("squeue", "-h", "-t", "all", "-j", f"{running},{pending}", "-o", "%i %T",
                 env=slurm_cluster.env).stdout.split("\n")
    # The killed job no longer holds the GPUs; the pending one is still queued.
    assert sorted(line for line in states if line) == sorted(
        [f"{running} CANCELLED", f"{pending} PENDING"])
    assert pending in slurm_cluster.cancel_all_jobs()
    job = sbatch(slurm_cluster, "--gres=gpu:8", "--wrap", "true")
    assert wait_final(slurm_cluster, job) == {job: "COMPLETED"}


@pytest.mark.slurm
def test_cli_status_and_env(slurm_cluster: ClusterInfo) -> None:
    status = run(sys.executable, "-m", "adora.testing.slurm_cluster", "status",
                 "--state-dir", str(slurm_cluster.state_dir))
    for daemon in slurm.DAEMONS:
        assert f"{daemon}" in status.stdout
    assert "stopped" not in status.stdout
    assert "learnfair" in status.stdout
    env = run(sys.executable, "-m", "adora.testing.slurm_cluster", "env",
              "--state-dir", str(slurm_cluster.state_dir))
    assert env.stdout.strip() == f"export SLURM_CONF={slurm_cluster.conf}"


# --------------------------------------------------------------------------- SSH


async def _remote(conn: tp.Any, command: str) -> str:
    result = await conn.run(command, check=True)
    return str(result.stdout)


async def _remote_job_completes(conn: tp.Any) -> str:
    job = (await _remote(conn, "sbatch --parsable --wrap 'echo remote'")).strip()
    start, end = _window()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = await _remote(conn, f"sacct -n -X -P -j {job} -S {start} -E {end} -o State")
        if state.strip() == "COMPLETED":
            return job
        await asyncio.sleep(0.3)
    raise AssertionError(f"remote job {job} did not complete")


@pytest.mark.ssh
@pytest.mark.slurm
def test_asyncssh_runs_slurm_commands(sshd_server: SshdInfo) -> None:
    asyncssh = pytest.importorskip("asyncssh")

    async def go() -> None:
        async with asyncssh.connect(**sshd_server.connect_kwargs()) as conn:
            assert (await _remote(conn, "echo $SLURM_CONF")).strip() == str(
                sshd_server.slurm_conf)
            assert "JOBID" in await _remote(conn, "squeue")
            await _remote_job_completes(conn)

    asyncio.run(go())


@pytest.mark.ssh
@pytest.mark.slurm
def test_sftp_put_and_get(sshd_server: SshdInfo, tmp_path: Path) -> None:
    asyncssh = pytest.importorskip("asyncssh")
    local = tmp_path / "local.bin"
    local.write_bytes(os.urandom(100_000))
    remote_dir = tmp_path / "remote"
    back = tmp_path / "back.bin"

    async def go() -> None:
        async with asyncssh.connect(**sshd_server.connect_kwargs()) as conn:
            async with conn.start_sftp_client() as sftp:
                await sftp.makedirs(str(remote_dir), exist_ok=True)
                await sftp.put(str(local), str(remote_dir / "file.bin"))
                await sftp.get(str(remote_dir / "file.bin"), str(back))

    asyncio.run(go())
    assert back.read_bytes() == local.read_bytes()


@pytest.mark.ssh
@pytest.mark.slurm
def test_unknown_host_key_is_refused(sshd_server: SshdInfo, tmp_path: Path) -> None:
    asyncssh = pytest.importorskip("asyncssh")
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[{sshd_server.host}]:{sshd_server.port} {other[0]} {other[1]}\n")
    kwargs = {**sshd_server.connect_kwargs(), "known_hosts": str(wrong)}

    async def go() -> None:
        async with asyncssh.connect(**kwargs):
            pass

    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        asyncio.run(go())
    # The OpenSSH client refuses it too.
    argv = sshd_server.ssh_command("true")
    argv[argv.index(f"UserKnownHostsFile={sshd_server.known_hosts}")] = (
        f"UserKnownHostsFile={wrong}")
    refused = run(*argv, check=False)
    assert refused.returncode == 255
    assert "Host key verification failed" in refused.stderr


@pytest.mark.ssh
@pytest.mark.slurm
def test_sshd_kill_and_restart(sshd_server: SshdInfo) -> None:
    asyncssh = pytest.importorskip("asyncssh")

    async def go() -> None:
        async with asyncssh.connect(**sshd_server.connect_kwargs()) as conn:
            assert (await _remote(conn, "echo up")).strip() == "up"
            sshd_server.kill_sshd()
            assert not sshd_server.is_sshd_running()
            with pytest.raises((asyncssh.Error, OSError)):
                await asyncio.wait_for(conn.run("echo still", check=True), 10)
        with pytest.raises(OSError):
            await asyncssh.connect(**sshd_server.connect_kwargs())
        sshd_server.start_sshd()
        async with asyncssh.connect(**sshd_server.connect_kwargs()) as conn:
            assert (await _remote(conn, "echo back")).strip() == "back"

    try:
        asyncio.run(go())
    finally:
        sshd_server.start_sshd()


@pytest.mark.ssh
def test_sshd_unavailable_reason_login_node() -> None:
    reason = sshd.unavailable_reason(login_node=True)
    assert reason is None or isinstance(reason, str)


@pytest.mark.ssh
@pytest.mark.slurm
def test_login_node_runs_slurm_commands(login_node: SshdInfo) -> None:
    asyncssh = pytest.importorskip("asyncssh")
    assert login_node.proxy_command is not None
    assert login_node.network is not None

    async def go() -> None:
        async with asyncssh.connect(**login_node.connect_kwargs()) as conn:
            addresses = await _remote(conn, "ip -4 -o addr show")
            assert login_node.network is not None
            assert f"inet {login_node.network.login_ip}/" in addresses
            assert "JOBID" in await _remote(conn, "squeue")
            await _remote_job_completes(conn)

    asyncio.run(go())
