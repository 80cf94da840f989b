"""Crash consistency of submitting over SSH (ALICE-style, OSDI '14), on the real test beds.

`adora grid --cluster test` (the SSH backend: a real sshd, started by the test for
itself, in front of the real Slurm test cluster) is killed just before its k-th event,
for every k of a clean run, with SIGKILL (and with SIGTERM for a spread of k); then a
second `adora grid` runs (the recovery). Events are the local file-system writes and
external commands (`adora.testing.crash`), plus the remote submission: one command
over an SSH channel, which the audit hook sees only through the ``adora.remote``
events adora raises just before and just after it. Once every job has ended each XP
must have run exactly once, with its own job: the job id its record names is the one
that started it (the training main writes ``SLURM_ARRAY_JOB_ID_SLURM_ARRAY_TASK_ID``
into its XP folder on the cluster), no XP is shown COMPLETED without a start, no two
XPs share a job, and no temporary file is left.

A second test kills `adora grid` while its remote submission is in flight: an sshd
of the test's own puts slow ``tar`` and ``sbatch`` first on its sessions' PATH, so
the kill lands before sbatch (the remote command, orphaned, goes on after the
recovery), while sbatch runs, or after it ran but before its job id came back; the
recovery must end with one job per XP, whatever the remote side did.

Every k has its own copy of the project and its own work directory on the cluster;
all crash runs go first, then all recovery runs, then one wait for every job. The
shared controller is restarted by other test sessions now and then: a run whose
sbatch could not reach it is run again, as adora's message asks.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import typing as tp
from pathlib import Path

import pytest

from adora.testing.crash import clean_env, crash_command, run_batch, write_package

# The same grid and training as on Slurm, over SSH.
from tests.test_crash_slurm import GRID, TRAIN, write_script
from tests.test_crash_slurm import final_rows as slurm_final_rows

pytestmark = [pytest.mark.ssh, pytest.mark.slurm]

N_XPS = 3

def make_project(root: Path, n: int) -> Path:
    return write_package(root, "crashssh", TRAIN, {"g": GRID.format(n=n)})


def copy_project(base: Path, root: Path, server: tp.Any, workdir: Path) -> Path:
    """A copy of ``base`` whose cluster ``test`` (in its pyproject.toml) is ``server``,
    with a work directory of its own on the cluster (XP folders are found there)."""
    shutil.copytree(base, root)
    fields = {"host": server.host, "port": server.port, "user": server.username,
              "identity_file": str(server.client_key), "known_hosts": str(server.known_hosts),
              "workdir": str(workdir), "python": sys.executable}
    if server.proxy_command:
        fields["proxy_command"] = list(server.proxy_command)
    lines = ["[tool.adora.clusters.test]"] + [f"{k} = {json.dumps(v)}" for k, v in fields.items()]
    (root / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return root


def laptop_env(tmp_path: Path) -> dict[str, str]:
    """The laptop side: no Slurm command on PATH, the cluster reached only over SSH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("git", "sh", "bash", "env"):
        found = shutil.which(tool)
        if found and not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(found)
    path = f"{Path(sys.executable).parent}:{bin_dir}"
    assert shutil.which("sbatch", path=path) is None
    environ = clean_env(PATH=path, ADORA_CACHE_DIR=str(tmp_path / "cache"),
                        ADORA_CLUSTERS_FILE=str(tmp_path / "no-clusters.toml"))
    environ.pop("SLURM_CONF", None)
    return environ


GRID_ARGS = ["grid", "g", "--cluster", "test"]


def crash_cmd(root: Path, at: int, sig: str = "KILL", log: Path | None = None) -> list[str]:
    return crash_command(root, at, GRID_ARGS, sig=sig, log=log)


def grid_cmd(*extra: str) -> list[str]:
    return [sys.executable, "-m", "adora", *GRID_ARGS, *extra]


def jobs_under(folder: Path, cluster: tp.Any) -> list[str]:
    """Ids of the queued or running jobs whose working directory is under ``folder``."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %Z"], env=clean_env(**cluster.env),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    prefix = str(folder)
    return [line.split()[0] for line in out.stdout.splitlines()
            if len(line.split()) > 1 and line.split(None, 1)[1].startswith(prefix)]


def wait_for_jobs(folder: Path, cluster: tp.Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = jobs_under(folder, cluster)
        if not left:
            return
        assert time.monotonic() < deadline, f"jobs still queued after {timeout} s: {left}"
        time.sleep(1)


def cancel_jobs_under(folder: Path, cluster: tp.Any) -> None:
    left = jobs_under(folder, cluster)
    if left:
        subprocess.run(["scancel", *left], env=clean_env(**cluster.env), capture_output=True,
                       timeout=60)


def check_each_xp_ran_once(root: Path, workdir: Path, rows: list[dict[str, tp.Any]],
                           n: int) -> None:
    """Every XP of grid g ran exactly once on the cluster, with the job its record names."""
    assert len(rows) == n, rows
    job_ids = [row["job_id"] for row in rows]
    assert len(set(job_ids)) == n, f"{root}: jobs shared between XPs: {rows}"
    for row in rows:
        starts_file = workdir / "outputs" / "xps" / row["sig"] / "starts"
        starts = starts_file.read_text().split() if starts_file.exists() else []
        assert starts == [row["job_id"]], (
            f"{root}: XP {row['sig']} is {row['state']} with job {row['job_id']} but "
            f"was started by jobs {starts}")
        assert row["state"] == "COMPLETED", (root, row)
    leftovers = [*(root / "outputs").rglob("*.tmp"), *workdir.rglob("*.tmp"),
                 *workdir.glob("codes/.tmp-*")]  # code snapshots are unpacked aside
    assert not leftovers, leftovers


def final_rows(roots: list[Path], environ: dict[str, str]) -> list[list[dict[str, tp.Any]]]:
    return slurm_final_rows(roots, environ, 90, command=grid_cmd("--json"))


#: What sbatch says while the shared test cluster's controller restarts (other test
#: sessions stop it): nothing was submitted, and adora asks for the same command again.
CONTROLLER_DOWN = "Unable to contact slurm controller"


def recover(roots: list[Path], environ: dict[str, str]) -> None:
    """The recovery run in each root, run again (as adora asks) where sbatch could not
    reach the controller."""
    todo = list(roots)
    for attempt in range(4):
        results = run_batch([(grid_cmd(), root) for root in todo], environ)
        again = []
        for result, root in zip(results, todo):
            assert "Traceback" not in result.stderr, (root, result.stderr)
            if result.returncode != 0 and CONTROLLER_DOWN in result.stderr and attempt < 3:
                again.append(root)
            else:
                assert result.returncode == 0, (root, result.stderr)
        if not again:
            return
        todo = again
        time.sleep(5)


def recover_and_check(roots: list[Path], workdirs: list[Path], environ: dict[str, str],
                      cluster: tp.Any, folder: Path) -> dict[str, float]:
    """Recovery runs, one wait for every job under ``folder``, then the checks."""
    began = time.monotonic()
    recover(roots, environ)
    recovered_at = time.monotonic()
    wait_for_jobs(folder, cluster, timeout=300)
    jobs_done_at = time.monotonic()
    for root, workdir, rows in zip(roots, workdirs, final_rows(roots, environ)):
        check_each_xp_ran_once(root, workdir, rows, N_XPS)
    return {"recoveries": recovered_at - began, "jobs": jobs_done_at - recovered_at,
            "checks": time.monotonic() - jobs_done_at}


def start_own_sshd(cluster: tp.Any, state: Path, force_command: str | None = None) -> tp.Any:
    """An sshd of the test's own in front of the test cluster: other test sessions kill
    and restart the shared one (test_connection_loss_marks_stale_then_reconnects)."""
    from adora.testing import sshd

    reason = sshd.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    return sshd.start(state, slurm_conf=cluster.conf, force_command=force_command)


@pytest.fixture
def own_sshd(slurm_cluster: tp.Any, tmp_path: Path) -> tp.Iterator[tp.Any]:
    from adora.testing import sshd

    server = start_own_sshd(slurm_cluster, tmp_path / "sshd")
    try:
        yield server
    finally:
        sshd.stop(tmp_path / "sshd")


def test_every_crash_point_of_an_ssh_submission(slurm_cluster: tp.Any, own_sshd: tp.Any,
                                                tmp_path: Path) -> None:
    began = time.monotonic()
    environ = laptop_env(tmp_path)
    base = make_project(tmp_path / "base", N_XPS)
    remote = tmp_path / "remote"
    clean = copy_project(base, tmp_path / "clean", own_sshd, remote / "clean")
    log = tmp_path / "events.txt"
    try:
        first = run_batch([(crash_cmd(clean, 0, log=log), clean)], environ)[0]
        assert first.returncode == 0, first.stderr
        events = log.read_text().splitlines()
        total = len(events)
        print(f"{total} events in a clean run:\n" + "\n".join(events))
        submit = [i for i, line in enumerate(events, 1)
                  if line.split()[1:] == ["adora.remote", "submit"]]
        assert len(submit) == 1, events
        assert events[submit[0]].split()[1:] == ["adora.remote", "submitted"], events
        assert not any("Popen sbatch" in line for line in events), events  # over SSH only
        # `adora grid` has no SIGTERM handler, so TERM ends it as KILL does: a spread of k
        # (and those around the remote submission) is enough to notice if one appears.
        term = sorted((set(range(1, total + 1, 8)) | {submit[0], submit[0] + 1, total})
                      & set(range(1, total + 1)))
        cases = [("KILL", k) for k in range(1, total + 1)] + [("TERM", k) for k in term]
        names = [f"{sig}-{k}" for sig, k in cases]
        roots = [copy_project(base, tmp_path / name, own_sshd, remote / name)
                 for name in names]
        todo = list(range(len(cases)))
        for attempt in range(4):
            crashed = run_batch([(crash_cmd(roots[i], cases[i][1], cases[i][0]), roots[i])
                                 for i in todo], environ)
            again = []
            for i, result in zip(todo, crashed):
                sig, k = cases[i]
                expected = (-signal.SIGKILL,) if sig == "KILL" else (-signal.SIGTERM, 143, 130)
                if (result.returncode == 1 and CONTROLLER_DOWN in result.stderr
                        and attempt < 3):
                    again.append(i)  # sbatch failed before the crash point: once more
                else:
                    assert result.returncode in expected, (sig, k, result.returncode,
                                                           result.stderr)
            for i in again:
                shutil.rmtree(roots[i])
                shutil.rmtree(remote / names[i], ignore_errors=True)
                copy_project(base, roots[i], own_sshd, remote / names[i])
            if not again:
                break
            todo = again
            time.sleep(5)
        crashed_at = time.monotonic()
        times = recover_and_check([clean, *roots], [remote / "clean"] + [
            remote / name for name in names], environ, slurm_cluster, remote)
        print(f"{len(cases)} crash runs {crashed_at - began:.1f} s, "
              + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    finally:
        cancel_jobs_under(remote, slurm_cluster)


# The remote side, made slow where a variant's work directory says so (the commands see
# it in their arguments), so that the local adora is killed while its submission is in
# flight: `gate` holds the submission in its first `tar` (before the lock and sbatch)
# until the test releases it; `sbatch-before` sleeps before the real sbatch, and
# `sbatch-after` after it, before its answer goes back.
TAR = """#!/bin/sh
case "$*" in */gate-*) while [ ! -e {release} ]; do sleep 0.2; done;; esac
exec {tar} "$@"
"""

SBATCH = """#!/bin/sh
printf '%s\\n' "$*" >> {calls}
case "$*" in */sbatch-before-*) sleep {sleep};; esac
out=$({sbatch} "$@") || exit $?
case "$*" in */sbatch-after-*) sleep {sleep};; esac
printf '%s\\n' "$out"
"""

#: Every session of the test's own sshd: its wrappers first on PATH, then what was asked
#: (SFTP too); each command is logged with its exit status.
FORCE_COMMAND = """#!/bin/sh
PATH={wrappers}:$PATH; export PATH
case "$SSH_ORIGINAL_COMMAND" in
  internal-sftp) exec /usr/lib/openssh/sftp-server ;;
esac
/bin/sh -c "$SSH_ORIGINAL_COMMAND"
status=$?
printf '%s %s\\n' "$status" "$SSH_ORIGINAL_COMMAND" >> {sessions}
exit $status
"""


@pytest.fixture
def slow_sshd(slurm_cluster: tp.Any, tmp_path: Path) -> tp.Iterator[tuple[tp.Any, Path]]:
    """An sshd of this test's own whose sessions find the scripts in ``wrappers`` first
    on PATH (the shared test sshd is left as it is); the test writes the scripts."""
    from adora.testing import sshd

    if not Path("/usr/lib/openssh/sftp-server").exists():
        pytest.skip("needs OpenSSH's sftp-server for a server with a ForceCommand")
    state = tmp_path / "sshd"
    wrappers = tmp_path / "wrappers"
    wrappers.mkdir()
    force = tmp_path / "force-command"
    write_script(force, FORCE_COMMAND.format(wrappers=wrappers,
                                             sessions=tmp_path / "sessions.log"))
    server = start_own_sshd(slurm_cluster, state, str(force))
    try:
        yield server, wrappers
    finally:
        sshd.stop(state)  # with its sessions: an orphaned command left waiting, if any


def test_kill_while_the_remote_submission_is_in_flight(
        slurm_cluster: tp.Any, slow_sshd: tuple[tp.Any, Path], tmp_path: Path) -> None:
    began = time.monotonic()
    server, wrappers = slow_sshd
    real = {tool: shutil.which(tool) for tool in ("tar", "sbatch")}
    assert all(real.values()), real
    release, calls, sessions = (tmp_path / n for n in ("release", "sbatch.calls",
                                                        "sessions.log"))
    write_script(wrappers / "tar", TAR.format(tar=real["tar"], release=release))
    write_script(wrappers / "sbatch", SBATCH.format(sbatch=real["sbatch"], calls=calls,
                                                    sleep=4))
    environ = laptop_env(tmp_path)
    base = make_project(tmp_path / "base", N_XPS)
    remote = tmp_path / "remote"
    cases = [(variant, sig) for variant in ("gate", "sbatch-before", "sbatch-after")
             for sig in ("KILL", "TERM")]
    names = [f"{variant}-{sig}" for variant, sig in cases]
    roots = [copy_project(base, tmp_path / name, server, remote / name) for name in names]
    try:
        # Killed 2 s into the remote submission (the first `adora.remote` event).
        crashed = run_batch([(crash_command(root, 1, GRID_ARGS, sig=sig, event="adora.remote",
                                            delay=2.0), root)
                             for root, (_, sig) in zip(roots, cases)], environ)
        for result, (variant, sig) in zip(crashed, cases):
            expected = (-signal.SIGKILL,) if sig == "KILL" else (-signal.SIGTERM, 143, 130)
            assert result.returncode in expected, (variant, sig, result.returncode,
                                                   result.stderr)
            assert "Submitted" not in result.stderr, result.stderr  # killed in flight
        crashed_at = time.monotonic()
        # The recoveries' own submissions are not slowed down; the commands still
        # running keep the scripts they started with.
        write_script(wrappers / "tar", f'#!/bin/sh\nexec {real["tar"]} "$@"\n')
        write_script(wrappers / "sbatch", SBATCH.format(sbatch=real["sbatch"], calls=calls,
                                                        sleep=0))
        recover(roots, environ)
        recovered_at = time.monotonic()
        release.touch()  # the held submissions go on, as a slow cluster would let them
        abandoned = {name: sorted(p.parent for p in (remote / name).glob(
            "outputs/arrays/*/.abandoned")) for name in names}
        for name in names:
            if name.startswith("gate-"):  # fenced before sbatch: submitted again
                assert len(abandoned[name]) == 1, abandoned
                folder = str(abandoned[name][0])

                def ended(folder: str = folder) -> list[str]:
                    return [line for line in sessions.read_text().splitlines()
                            if "adora-submit" in line and folder in line]

                deadline = time.monotonic() + 60
                while not ended():
                    assert time.monotonic() < deadline, sessions.read_text()
                    time.sleep(0.5)
                # 4: abandoned; 141: SIGPIPE, saying so to the adora that is gone.
                assert [line.split()[0] for line in ended()] in (["4"], ["141"]), ended()
                assert folder not in calls.read_text(), calls.read_text()
            else:  # sbatch ran: the recovery waited for it and adopted its job
                folders = list((remote / name / "outputs" / "arrays").iterdir())
                assert folders == abandoned[name], (folders, abandoned[name])
        wait_for_jobs(remote, slurm_cluster, timeout=300)
        jobs_done_at = time.monotonic()
        for root, name, rows in zip(roots, names, final_rows(roots, environ)):
            check_each_xp_ran_once(root, remote / name, rows, N_XPS)
        print(f"{len(cases)} crash runs {crashed_at - began:.1f} s, recoveries "
              f"{recovered_at - crashed_at:.1f} s, jobs {jobs_done_at - recovered_at:.1f} s, "
              f"checks {time.monotonic() - jobs_done_at:.1f} s")
    finally:
        release.touch()
        cancel_jobs_under(remote, slurm_cluster)
