"""Crash consistency of submitting to Slurm (ALICE-style, OSDI '14), on the real cluster.

`adora grid --backend slurm` is killed just before its k-th file-system write (or
external command: ``sbatch`` is one), for every k of a clean run, with SIGKILL (and
with SIGTERM for a spread of k); then a second `adora grid` runs (the recovery).
Once every job has ended each XP must have run exactly once, with its own job: the
job id its record names is the one that started it (the training main writes
``SLURM_ARRAY_JOB_ID_SLURM_ARRAY_TASK_ID`` into the XP folder), no XP is shown
COMPLETED without a start, no two XPs share a job, and no temporary file is left.

Every k has its own copy of the project; all crash runs go first, then all recovery
runs, then one wait for every job: the cluster runs them side by side.
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

pytestmark = pytest.mark.slurm

N_XPS = 3

TRAIN = '''
import argparse, os
from adora import argparse_main, get_xp

parser = argparse.ArgumentParser()
parser.add_argument("--x", type=int, default=0)

@argparse_main(parser=parser, dir="./outputs")
def main():
    xp = get_xp()
    if "SLURM_ARRAY_JOB_ID" in os.environ:
        job = os.environ["SLURM_ARRAY_JOB_ID"] + "_" + os.environ["SLURM_ARRAY_TASK_ID"]
    else:
        job = os.environ.get("SLURM_JOB_ID", "?")
    with open(xp.folder / "starts", "a") as f:
        f.write(job + "\\n")
'''

GRID = '''
from adora import Explorer

@Explorer
def explorer(launcher):
    launcher.slurm_(gpus=0, mem_per_gpu=None, cpus_per_gpu=1, time=10)
    for x in range({n}):
        launcher(x=x)
'''


def make_project(root: Path, n: int) -> Path:
    return write_package(root, "crashslurm", TRAIN, {"g": GRID.format(n=n)})


def env(cluster: tp.Any, cache: Path) -> dict[str, str]:
    return clean_env(**cluster.env, ADORA_BACKEND="slurm", ADORA_CACHE_DIR=str(cache))


def crash_cmd(root: Path, at: int, sig: str = "KILL", log: Path | None = None) -> list[str]:
    return crash_command(root, at, ["grid", "g", "--backend", "slurm"], sig=sig, log=log)


def grid_cmd(*extra: str) -> list[str]:
    return [sys.executable, "-m", "adora", "grid", "g", "--backend", "slurm", *extra]


def run_all(commands: list[tuple[list[str], Path]], environ: dict[str, str]
            ) -> list[subprocess.CompletedProcess[str]]:
    return run_batch(commands, environ)


def jobs_under(folder: Path, environ: dict[str, str]) -> list[str]:
    """Ids of the queued or running jobs submitted from under ``folder``."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %Z"], env=environ,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    prefix = str(folder)
    return [line.split()[0] for line in out.stdout.splitlines()
            if len(line.split()) > 1 and line.split(None, 1)[1].startswith(prefix)]


def wait_for_jobs(folder: Path, environ: dict[str, str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = jobs_under(folder, environ)
        if not left:
            return
        assert time.monotonic() < deadline, f"jobs still queued after {timeout} s: {left}"
        time.sleep(1)


def check_each_xp_ran_once(root: Path, rows: list[dict[str, tp.Any]], n: int) -> None:
    """Every XP of grid g ran exactly once, with the job its record names."""
    assert len(rows) == n, rows
    xps = root / "outputs" / "xps"
    job_ids = [row["job_id"] for row in rows]
    assert len(set(job_ids)) == n, f"{root}: jobs shared between XPs: {rows}"
    for row in rows:
        starts_file = xps / row["sig"] / "starts"
        starts = starts_file.read_text().split() if starts_file.exists() else []
        assert starts == [row["job_id"]], (
            f"{root}: XP {row['sig']} is {row['state']} with job {row['job_id']} but "
            f"was started by jobs {starts}")
        assert row["state"] == "COMPLETED", (root, row)
    leftovers = list((root / "outputs" / ".adora").rglob("*.tmp"))
    assert not leftovers, leftovers


def final_rows(roots: list[Path], environ: dict[str, str], timeout: float = 60, *,
               command: list[str] | None = None) -> list[list[dict[str, tp.Any]]]:
    """The grid table of each root once every state is final (sacct lags squeue);
    ``command`` gives it as JSON (default: ``adora grid g --backend slurm --json``)."""
    command = command or grid_cmd("--json")
    rows: list[list[dict[str, tp.Any]] | None] = [None] * len(roots)
    deadline = time.monotonic() + timeout
    while True:
        todo = [i for i, r in enumerate(rows) if r is None]
        results = run_all([(command, roots[i]) for i in todo], environ)
        for i, result in zip(todo, results):
            assert result.returncode == 0, (roots[i], result.stderr)
            table = json.loads(result.stdout)["g"]
            if all(row["state"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")
                   and not row.get("stale") for row in table):
                rows[i] = table
        if all(r is not None for r in rows):
            return [r for r in rows if r is not None]
        assert time.monotonic() < deadline, [roots[i] for i, r in enumerate(rows) if r is None]
        time.sleep(1)


def sbatch_events(events: list[str]) -> list[int]:
    """The numbers of the events (from 1) that start an sbatch (under its ``flock``)."""
    return [i for i, line in enumerate(events, 1)
            if "subprocess.Popen" in line and line.endswith(("/flock", " sbatch"))]


def clean_run(base: Path, tmp_path: Path, environ: dict[str, str]) -> tuple[Path, list[str]]:
    """A copy of ``base`` submitted with no crash; its folder and the events it logged."""
    clean = tmp_path / "clean"
    shutil.copytree(base, clean)
    log = tmp_path / "events.txt"
    first = run_all([(crash_cmd(clean, 0, log=log), clean)], environ)[0]
    assert first.returncode == 0, first.stderr
    return clean, log.read_text().splitlines()


def test_every_crash_point_of_a_slurm_submission(slurm_env: tp.Any, tmp_path: Path) -> None:
    began = time.monotonic()
    environ = env(slurm_env, tmp_path / "cache")
    base = make_project(tmp_path / "base", N_XPS)
    clean, events = clean_run(base, tmp_path, environ)
    total = len(events)
    print(f"{total} events in a clean run:\n" + "\n".join(events))
    sbatch = sbatch_events(events)
    assert len(sbatch) == 1, events
    # `adora grid` has no SIGTERM handler, so TERM ends it as KILL does: a spread of k
    # (and those around sbatch) is enough to notice if a handler appears.
    term = sorted(set(range(1, total + 1, 4)) | {sbatch[0], sbatch[0] + 1} & set(
        range(1, total + 1)))
    cases = [("KILL", k) for k in range(1, total + 1)] + [("TERM", k) for k in term]
    roots = []
    try:
        for sig, k in cases:
            root = tmp_path / f"{sig}-{k}"
            shutil.copytree(base, root)
            roots.append(root)
        crashed = run_all([(crash_cmd(root, k, sig), root)
                           for root, (sig, k) in zip(roots, cases)], environ)
        for result, (sig, k) in zip(crashed, cases):
            expected = (-signal.SIGKILL,) if sig == "KILL" else (-signal.SIGTERM, 143, 130)
            assert result.returncode in expected, (sig, k, result.returncode, result.stderr)
        crashed_at = time.monotonic()
        recovery = run_all([(grid_cmd(), root) for root in roots], environ)
        for result, root in zip(recovery, roots):
            assert result.returncode == 0, (root, result.stderr)
            assert "Traceback" not in result.stderr, (root, result.stderr)
        recovered_at = time.monotonic()
        wait_for_jobs(tmp_path, environ, timeout=300)
        jobs_done_at = time.monotonic()
        all_rows = final_rows([clean, *roots], environ)
        for root, rows in zip([clean, *roots], all_rows):
            check_each_xp_ran_once(root, rows, N_XPS)
        print(f"{len(cases)} crash runs {crashed_at - began:.1f} s, recoveries "
              f"{recovered_at - crashed_at:.1f} s, jobs {jobs_done_at - recovered_at:.1f} s, "
              f"checks {time.monotonic() - jobs_done_at:.1f} s")
    finally:
        left = jobs_under(tmp_path, environ)
        if left:
            subprocess.run(["scancel", *left], env=environ, capture_output=True, timeout=60)


CHAIN_GRID = '''
from adora import Explorer

@Explorer
def explorer(launcher):
    launcher.slurm_(gpus=0, mem_per_gpu=None, cpus_per_gpu=1, time=10, dependents=1)
    launcher(x=0)
'''


def jobs_in_accounting(folder: Path, environ: dict[str, str], since: str) -> list[str]:
    """Ids of every job submitted from under ``folder`` since ``since``, ended or not."""
    from adora.slurm.commands import SACCT_STATES

    # Every state named: by time window alone, sacct omits jobs that never started.
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-S", since, "-E", "now",
                          "--state=" + ",".join(SACCT_STATES), "-o", "JobID,WorkDir"],
                         env=environ, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    prefix = str(folder) + "/"
    return [line.split("|")[0] for line in out.stdout.splitlines()
            if "|" in line and (line.split("|", 1)[1] + "/").startswith(prefix)]


def test_crash_between_the_sbatch_of_a_chain(slurm_env: tp.Any, tmp_path: Path) -> None:
    """A chain (dependents=1) is two sbatch: killed before, between or after them, the
    recovery never leaves a job untracked nor submits a second chain."""
    from adora.jobs import load_record

    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 60))
    environ = env(slurm_env, tmp_path / "cache")
    base = write_package(tmp_path / "base", "crashslurm", TRAIN, {"g": CHAIN_GRID})
    clean, events = clean_run(base, tmp_path, environ)
    sbatch = sbatch_events(events)
    assert len(sbatch) == 2, events
    ks = list(range(sbatch[0] - 1, min(sbatch[1] + 3, len(events) + 1)))
    roots = []
    try:
        for k in ks:
            root = tmp_path / f"KILL-{k}"
            shutil.copytree(base, root)
            roots.append(root)
        crashed = run_all([(crash_cmd(root, k), root) for root, k in zip(roots, ks)], environ)
        for result, k in zip(crashed, ks):
            assert result.returncode == -signal.SIGKILL, (k, result.returncode, result.stderr)
        recovery = run_all([(grid_cmd(), root) for root in roots], environ)
        for result, root in zip(recovery, roots):
            assert result.returncode == 0, (root, result.stderr)
            assert "Traceback" not in result.stderr, (root, result.stderr)
        between = recovery[ks.index(sbatch[1])]
        assert "its chain has 1 of 2 jobs" in between.stderr, between.stderr
        wait_for_jobs(tmp_path, environ, timeout=120)
        for root in [clean, *roots]:
            xps = list((root / "outputs" / "xps").iterdir())
            assert len(xps) == 1, xps
            record = load_record(xps[0])
            assert record is not None and record.job_id is not None, root
            # Every job submitted from this copy is a link of the XP's one chain. (sacct
            # lags squeue by up to a few seconds: asked again until it has them all.)
            deadline = time.monotonic() + 20
            submitted = jobs_in_accounting(root, environ, since)
            while not set(record.links) <= set(submitted) and time.monotonic() < deadline:
                time.sleep(1)
                submitted = jobs_in_accounting(root, environ, since)
            assert sorted(submitted) == sorted(record.links), (root, submitted, record)
            assert len(record.links) <= 2
            # The first link ran (and completed: the second never ran).
            assert (xps[0] / "starts").read_text().split() == [record.job_id], root
        rows = final_rows([clean, *roots], environ)
        assert all(r[0]["state"] == "COMPLETED" for r in rows), rows
    finally:
        left = jobs_under(tmp_path, environ)
        if left:
            subprocess.run(["scancel", *left], env=environ, capture_output=True, timeout=60)


def write_script(path: Path, text: str) -> None:
    # A new file renamed over the old one: a shell still running the old one keeps it.
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    new.chmod(0o755)
    new.replace(path)


#: A flock that waits for ``release`` before it takes the lock, then says how it ended.
GATED_FLOCK = """#!/bin/sh
while [ ! -e {release} ]; do sleep 0.2; done
{flock} "$@"
echo "$? $*" >> {ended}
"""
#: An sbatch that takes ``sleep`` seconds first (a busy slurmctld: "sleeping and retrying").
SLOW_SBATCH = """#!/bin/sh
sleep {sleep}
echo "$*" >> {calls}
exec {sbatch} "$@"
"""


def test_kill_while_sbatch_is_in_flight(slurm_env: tp.Any, tmp_path: Path) -> None:
    """`adora grid` killed while its sbatch runs: that sbatch outlives it, and the
    recovery fences it (`adora.backends.slurm.fence`): either the recovery waits for it
    and adopts its jobs, or it never submits. Each XP runs once."""
    real = {tool: shutil.which(tool) for tool in ("flock", "sbatch")}
    assert all(real.values()), real
    environ = env(slurm_env, tmp_path / "cache")
    release, ended, calls = (tmp_path / n for n in ("release", "flock.ended", "sbatch.calls"))
    wrappers = {"gate": tmp_path / "gate", "slow": tmp_path / "slow"}
    for folder in wrappers.values():
        folder.mkdir()
    write_script(wrappers["gate"] / "flock", GATED_FLOCK.format(
        release=release, flock=real["flock"], ended=ended))
    write_script(wrappers["slow"] / "sbatch", SLOW_SBATCH.format(
        sleep=4, calls=calls, sbatch=real["sbatch"]))
    # gate: an array of 3 XPs, killed before its sbatch took the lock; slow: one XP (a
    # single job: its submission folder is the XP's), killed while sbatch runs.
    sizes = {"gate": N_XPS, "slow": 1}
    _, events = clean_run(make_project(tmp_path / "base", 1), tmp_path, environ)
    popens = [line for line in events if "subprocess.Popen" in line]
    k = next(i for i, line in enumerate(popens, 1) if line.endswith("/flock"))
    roots = {name: make_project(tmp_path / name, n) for name, n in sizes.items()}
    try:
        for name, root in roots.items():
            path = f"{wrappers[name]}:{environ['PATH']}"
            crashed = run_all([(crash_command(root, k, ["grid", "g", "--backend", "slurm"],
                                              event="subprocess.Popen", delay=2.0), root)],
                              {**environ, "PATH": path})[0]
            assert crashed.returncode == -signal.SIGKILL, (name, crashed.stderr)
            assert "Submitted" not in crashed.stderr, crashed.stderr
        recovery = run_all([(grid_cmd(), root) for root in roots.values()], environ)
        for result, name in zip(recovery, roots):
            assert result.returncode == 0, (name, result.stderr)
        gate, slow = recovery
        # The recovery found nothing (sbatch had not run) and submitted again...
        assert "0 job(s) adopted, 3 never submitted" in gate.stderr, gate.stderr
        # ...or waited for the sbatch in flight, and adopted its job.
        assert "1 job(s) adopted, 0 never submitted" in slow.stderr, slow.stderr
        assert len(calls.read_text().splitlines()) == 1, calls.read_text()
        release.touch()  # the gated sbatch goes on, as a slow machine would let it
        deadline = time.monotonic() + 30
        while not ended.exists():
            assert time.monotonic() < deadline, "the gated flock never ended"
            time.sleep(0.2)
        # 4: abandoned; 141: SIGPIPE, saying so to the adora that is gone. (Had it
        # submitted, its jobs would run the XPs a second time: checked below.)
        assert ended.read_text().split()[0] in ("4", "141"), ended.read_text()
        wait_for_jobs(tmp_path, environ, timeout=120)
        for rows, (name, root) in zip(final_rows(list(roots.values()), environ),
                                      roots.items()):
            check_each_xp_ran_once(root, rows, sizes[name])
    finally:
        release.touch()
        left = jobs_under(tmp_path, environ)
        if left:
            subprocess.run(["scancel", *left], env=environ, capture_output=True, timeout=60)
