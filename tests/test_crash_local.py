"""Crash consistency of submitting to the local backend (ALICE-style, OSDI '14).

`adora grid` is killed just before its k-th file-system write (or external
command), for every k of a clean run, with SIGKILL (and with SIGTERM for a spread
of k, those around the queue writes included); then a
second `adora grid` runs (the recovery), and once every job has ended each XP
must have run exactly once, with its own job: its record names the job that
started it, no XP is shown COMPLETED without a start, no job is shared.
A randomised loop then kills growing submissions of up to 2,000 XPs at random
moments and checks the same after one recovery run.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from adora.backends.local_queue import FINAL, LocalQueue
from adora.testing.crash import clean_env, crash_command, run_batch, write_package

TRAIN = '''
import argparse, os
from adora import argparse_main, get_xp

parser = argparse.ArgumentParser()
parser.add_argument("--x", type=int, default=0)

@argparse_main(parser=parser, dir="./outputs")
def main():
    xp = get_xp()
    with open(xp.folder / "starts", "a") as f:
        f.write(os.environ.get("ADORA_JOB_ID", "?") + "\\n")
    xp.link.push_metrics({"x": xp.cfg.x})
'''

GRID = '''
from adora import Explorer

@Explorer
def explorer(launcher):
    for x in range({n}):
        launcher(x=x)
'''


def make_project(root: Path, n: int) -> Path:
    return write_package(root, "crashpkg", TRAIN, {"g": GRID.format(n=n)})


def env() -> dict[str, str]:
    return clean_env(ADORA_BACKEND="local")


def crash_cmd(root: Path, at: int, sig: str = "KILL", log: Path | None = None) -> list[str]:
    return crash_command(root, at, ["grid", "g", "--max-parallel", "2"], sig=sig, log=log)


def run_all(commands: list[tuple[list[str], Path]]) -> list[subprocess.CompletedProcess[str]]:
    return run_batch(commands, env())


def wait_idle(roots: list[Path], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    for root in roots:
        queue = LocalQueue(root / "outputs" / ".adora" / "local")
        while queue.exists():
            states = queue.states()
            if all(s["state"] in FINAL for s in states.values()):
                break
            assert time.monotonic() < deadline, f"{root}: jobs still running: {states}"
            time.sleep(0.2)
        queue.close()


def check_each_xp_ran_once(root: Path, n: int) -> None:
    """Every XP of grid g ran exactly once, with the job its record names."""
    out = subprocess.run([sys.executable, "-m", "adora", "grid", "g", "--json"], cwd=root,
                         env=env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["g"]
    assert len(rows) == n
    xps = root / "outputs" / "xps"
    job_ids = [row["job_id"] for row in rows]
    assert len(set(job_ids)) == n, f"{root}: jobs shared between XPs: {rows}"
    for row in rows:
        starts_file = xps / row["sig"] / "starts"
        starts = starts_file.read_text().split() if starts_file.exists() else []
        assert starts == [row["job_id"]], (
            f"{root}: XP {row['sig']} is {row['state']} with job {row['job_id']} but "
            f"was started by jobs {starts}")
        assert row["state"] == "COMPLETED", row
    leftovers = [p for p in (root / "outputs" / ".adora").rglob("*.tmp")]
    assert not leftovers, leftovers


def test_every_crash_point_of_a_local_submission(tmp_path: Path) -> None:
    n = 3
    base = make_project(tmp_path / "base", n)
    clean = tmp_path / "clean"
    shutil.copytree(base, clean)
    log = tmp_path / "events.txt"
    first = run_all([(crash_cmd(clean, 0, log=log), clean)])[0]
    assert first.returncode == 0, first.stderr
    events = log.read_text().splitlines()
    assert any("adora.write submit" in line for line in events), events
    total = len(events)
    assert 20 < total < 200, events

    # `adora grid` has no SIGTERM handler, so TERM ends it as KILL does: a spread of k
    # (and those around each write to the queue) is enough to notice if a handler appears.
    submits = [i for i, line in enumerate(events, 1) if "adora.write submit" in line]
    term = sorted((set(range(1, total + 1, 4)) | {k + d for k in submits for d in (0, 1)})
                  & set(range(1, total + 1)))
    cases = [("KILL", k) for k in range(1, total + 1)] + [("TERM", k) for k in term]
    roots = []
    for sig, k in cases:
        root = tmp_path / f"{sig}-{k}"
        shutil.copytree(base, root)
        roots.append(root)
    crashed = run_all([(crash_cmd(root, k, sig), root) for root, (sig, k) in zip(roots, cases)])
    for result, (sig, k) in zip(crashed, cases):
        expected = -signal.SIGKILL if sig == "KILL" else (-signal.SIGTERM, 143, 130)
        assert result.returncode in (expected if isinstance(expected, tuple) else (expected,)), \
            (sig, k, result.returncode, result.stderr)
    recovery = run_all([([sys.executable, "-m", "adora", "grid", "g"], root) for root in roots])
    for result, root in zip(recovery, roots):
        assert result.returncode == 0, (root, result.stderr)
        assert "Traceback" not in result.stderr
    wait_idle([clean, *roots])
    for root in [clean, *roots]:
        check_each_xp_ran_once(root, n)


@pytest.mark.timeout(900)
def test_random_kill_loop_over_2000_xps(tmp_path: Path) -> None:
    """kill -9 at random moments during 20 growing submissions (100 to 2,000 XPs), then
    one recovery run: every XP ran exactly once. The jobs are a shell printing their job
    id (in their log, in the XP folder), so 2,000 of them run in seconds."""
    root = tmp_path / "p"
    make_project(root, 0)
    fake = tmp_path / "fake_python"
    fake.write_text('#!/bin/sh\necho "start $ADORA_JOB_ID"\n')
    fake.chmod(0o755)
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f'''
        import sys
        from pathlib import Path
        import anyio
        from adora.backends.base import LaunchSpec
        from adora.backends.local import LocalBackend
        from adora.engine.run import schedule
        from adora.explore import Herd
        from adora.package import load_main

        n = int(sys.argv[1])
        main = load_main("crashpkg")
        herd = Herd()
        slurm = main.get_slurm_config()
        for x in range(n):
            herd.add(main.get_xp([f"--x={{x}}"]), slurm)
        launch = LaunchSpec(package="crashpkg", main_module="train", cwd=Path.cwd(),
                            python={str(fake)!r})
        backend = LocalBackend(main.dora.dir, max_parallel=16)
        from adora.explore import Explorer
        anyio.run(lambda: schedule(main, herd, "g", backend, explorer=Explorer(lambda _: None),
                                   launch=launch))
    '''))
    rng = random.Random(1234)
    killed = 0
    for round_ in range(20):
        n = 100 * (round_ + 1)
        proc = subprocess.Popen([sys.executable, str(driver), str(n)], cwd=root, env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.1, 1.2))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        _, err = proc.communicate(timeout=300)
        assert proc.returncode in (0, -signal.SIGKILL), err
    assert killed >= 5, "the loop should interrupt most submissions"
    final = subprocess.run([sys.executable, str(driver), "2000"], cwd=root, env=env(),
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    wait_idle([root])
    queue = LocalQueue(root / "outputs" / ".adora" / "local")
    states = queue.states()
    from adora.jobs import load_records

    xps = root / "outputs" / "xps"
    folders = sorted(xps.iterdir())
    assert len(folders) == 2000
    records = load_records(folders)
    seen_jobs: set[str] = set()
    for folder, record in zip(folders, records):
        assert record is not None and record.job_id is not None, folder
        logs = sorted(folder.glob("local_*.log"))
        starts = [line for log in logs for line in log.read_text().splitlines()]
        assert starts == [f"start {record.job_id}"], (folder, starts, record)
        assert states[record.job_id]["state"] == "COMPLETED"
        assert states[record.job_id]["sig"] == folder.name
        seen_jobs.add(record.job_id)
    assert len(seen_jobs) == 2000
    # Jobs adopted from interrupted submissions ran once; no other job ran at all.
    assert sum(1 for s in states.values() if s["state"] == "COMPLETED") == 2000
    leftovers = list((root / "outputs" / ".adora").rglob("*.tmp"))
    assert not leftovers, leftovers
