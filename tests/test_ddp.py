"""`adora run -d`: local DDP workers on gloo, failures, Ctrl-C, torchrun, and Slurm tasks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import typing as tp
from pathlib import Path

import pytest

from adora.ddp import worker_env
from tests.conftest import EXAMPLES, adora_cli

pytest.importorskip("torch")

DISTRIB_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                "ADORA_FORCE_DISTRIB", "DORA_FORCE_DISTRIB")


@pytest.fixture
def ddp_project(tmp_path: Path) -> Path:
    """A copy of examples/ddp_toy (not a git repository)."""
    root = tmp_path / "ddp_project"
    shutil.copytree(EXAMPLES / "ddp_toy", root,
                    ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    return root


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in DISTRIB_VARS}


def history(root: Path) -> list[dict[str, tp.Any]]:
    [folder] = (root / "outputs" / "xps").iterdir()
    path = folder / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def xp_folder(root: Path) -> Path:
    [folder] = (root / "outputs" / "xps").iterdir()
    return folder


def test_worker_env() -> None:
    env = worker_env({"A": "1", "RANK": "9"}, 1, 3, 12345)
    assert env == {"A": "1", "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "3",
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "12345"}


def test_two_gloo_workers_all_reduce_and_only_rank0_pushes_metrics(ddp_project: Path) -> None:
    proc = adora_cli("run", "-d", "--ddp-workers", "2", "--", "--epochs=3", cwd=ddp_project,
                     env=clean_env())
    assert proc.returncode == 0, proc.stderr
    # Exactly one entry per epoch (rank 1 pushes nothing), each seeing both ranks.
    entries = history(ddp_project)
    assert [e["epoch"] for e in entries] == [1, 2, 3]
    assert all(e["world_size"] == 2 and e["rank_sum"] == 3.0 for e in entries)
    assert entries[-1]["loss"] < entries[0]["loss"]
    folder = xp_folder(ddp_project)
    # Rank 0 writes to the terminal, rank 1 to worker_1.log.
    worker_1 = (folder / "worker_1.log").read_text()
    assert "rank 1: Distributed init: 1/2" in worker_1
    assert "rank 1: epoch 3 loss" in worker_1
    assert "rank 0: Distributed init: 0/2" in proc.stderr
    assert "rank 1:" not in proc.stderr
    assert not (folder / "worker_0.log").exists()
    assert "All 2 DDP worker(s) completed successfully" in proc.stderr

    # Run again: the XP resumes from its history and checkpoint, nothing is duplicated.
    proc = adora_cli("run", "-d", "--ddp_workers", "2", "--", "--epochs=3", cwd=ddp_project,
                     env=clean_env())
    assert proc.returncode == 0, proc.stderr
    assert "Resuming" in proc.stderr and "Resuming" in (folder / "worker_1.log").read_text()
    assert [e["epoch"] for e in history(ddp_project)] == [1, 2, 3]


def test_default_is_one_worker_per_gpu_at_least_one(ddp_project: Path) -> None:
    import torch

    proc = adora_cli("run", "-d", "--", "--epochs=1", cwd=ddp_project, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    workers = max(1, torch.cuda.device_count())
    assert f"Starting {workers} DDP worker(s)" in proc.stderr
    assert [e["world_size"] for e in history(ddp_project)] == [workers]


def test_a_failing_worker_stops_the_others(ddp_project: Path) -> None:
    start = time.monotonic()
    proc = adora_cli("run", "-d", "--ddp-workers", "2", "--", "--epochs=3", "--fail_rank=1",
                     cwd=ddp_project, env=clean_env())
    assert proc.returncode != 0
    folder = xp_folder(ddp_project)
    # (torch may turn the exit into an abort: "exited with status 1" or "killed by SIGABRT")
    assert "DDP worker of rank 1 " in proc.stderr, proc.stderr
    assert f"(its log: {folder}/worker_1.log)" in proc.stderr
    assert "rank 1 fails on purpose" in (folder / "worker_1.log").read_text()
    assert history(ddp_project) == []  # rank 0 never got to push epoch 1
    assert time.monotonic() - start < 60  # rank 0 was stopped, not left waiting for rank 1


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _rank_of(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _start_long_run(root: Path) -> tuple[subprocess.Popen[str], dict[int, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "adora", "run", "-d", "--ddp-workers", "2", "--",
         "--epochs=1000", "--step_time=0.05"],
        cwd=root, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
        # As from a terminal: a test run started in the background (`cmd &` in a script)
        # would otherwise pass SIGINT on as ignored, and Ctrl-C would do nothing.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ranks = {r: pid for pid in _children(proc.pid) if (r := _rank_of(pid)) is not None}
        if len(ranks) == 2 and (root / "outputs" / "xps").exists() and history(root):
            return proc, ranks  # both workers are training
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the workers did not start training")


@pytest.mark.parametrize("victim", [1, 0])
def test_killing_one_worker_stops_the_other(ddp_project: Path, victim: int) -> None:
    proc, ranks = _start_long_run(ddp_project)
    os.kill(ranks[victim], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    where = f"its log: {xp_folder(ddp_project)}/worker_1.log" if victim else \
        "its output is above"
    assert f"DDP worker of rank {victim} was killed by SIGKILL ({where})" in err, err
    assert not any(_alive(pid) for pid in ranks.values())


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupt_stops_every_worker(ddp_project: Path, how: str) -> None:
    proc, ranks = _start_long_run(ddp_project)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # the terminal signals the whole group
    else:
        os.kill(proc.pid, signal.SIGTERM)  # only the parent: it must stop its workers
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopping all DDP workers" in err
    assert not any(_alive(pid) for pid in ranks.values())


def test_under_torchrun_each_process_just_runs(ddp_project: Path) -> None:
    # RANK is already set: `-d` starts nothing, each process runs its worker.
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "adora", "run", "-d", "--", "--epochs=2"],
        cwd=ddp_project, env=clean_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "Starting" not in proc.stderr
    entries = history(ddp_project)
    assert [(e["epoch"], e["world_size"], e["rank_sum"]) for e in entries] == \
        [(1, 2, 3.0), (2, 2, 3.0)]


# -- on the real Slurm cluster: one task per (fake) GPU --------------------------------------------

def cancel_jobs_of(root: Path) -> None:
    """Cancel the Slurm jobs of this project's XPs only (others may share the cluster)."""
    from adora.jobs import load_record

    ids = []
    for folder in (root / "outputs" / "xps").glob("*"):
        record = load_record(folder)
        if record is not None and record.job_id:
            ids.append(record.job_id)
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60)


@pytest.mark.slurm
def test_slurm_tasks_find_each_other(ddp_project: Path, slurm_env: tp.Any) -> None:
    # gpus=2: two tasks; rank, world size and master come from Slurm, the port from the
    # XP signature and the job id. git_save runs the job from a snapshot (no git here).
    env = {**clean_env(), "ADORA_BACKEND": "slurm", "ADORA_CACHE_DIR": str(ddp_project / ".c")}
    grid = ddp_project / "ddp_toy" / "grids" / "one.py"
    grid.write_text(
        "from adora import Explorer\n\n"
        "@Explorer\n"
        "def explorer(launcher):\n"
        "    launcher.slurm_(gpus=2, mem_per_gpu=None, cpus_per_gpu=1, time=10)\n"
        "    launcher(epochs=2)\n")
    try:
        proc = adora_cli("grid", "one", cwd=ddp_project, env=env)
        assert proc.returncode == 0, proc.stderr
        deadline = time.monotonic() + 240
        while len(history(ddp_project)) < 2:
            assert time.monotonic() < deadline, "the Slurm job did not finish"
            time.sleep(1)
        entries = history(ddp_project)
        assert [(e["epoch"], e["world_size"], e["rank_sum"]) for e in entries] == \
            [(1, 2, 3.0), (2, 2, 3.0)]
        folder = xp_folder(ddp_project)
        code = folder / "code"
        assert code.is_symlink() and code.resolve().parent == ddp_project / "outputs" / "codes"
        logs = sorted((folder / "submitit").glob("*_log.out"))
        assert len(logs) == 2  # one per task
        text = logs[1].read_text()
        assert "rank 1: Distributed init: 1/2 (local 1)" in text
    finally:
        cancel_jobs_of(ddp_project)
