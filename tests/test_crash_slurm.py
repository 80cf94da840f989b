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
    sbatch = [i for i, line in enumerate(events, 1) if "subprocess.Popen sbatch" in line]
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
    sbatch = [i for i, line in enumerate(events, 1) if "subprocess.Popen sbatch" in line]
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
