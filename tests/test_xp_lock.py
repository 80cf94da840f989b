"""One training per XP folder: `adora run` refuses an XP that trains already."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from adora.backends.local_queue import LocalQueue
from tests.conftest import adora_cli

ARGS = ["--seed", "3", "--epochs", "200", "--epoch_time", "0.2"]


def _wait(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_run_refuses_an_xp_whose_job_is_pending_or_running(toy_project: Path) -> None:
    (toy_project / "toy" / "grids" / "one.py").write_text(textwrap.dedent("""
        from adora import Explorer

        @Explorer
        def explorer(launcher):
            launcher(seed=3, epochs=200, epoch_time=0.2)
    """))
    queue = LocalQueue(toy_project / "outputs" / ".adora" / "local")
    held = queue._flock("runner.lock", blocking=True)  # no runner: the job stays PENDING
    try:
        assert adora_cli("grid", "one", cwd=toy_project).returncode == 0
        pending = adora_cli("run", "--", *ARGS, cwd=toy_project)
        assert pending.returncode == 1, pending.stderr
        assert "has job 1 on the local backend, PENDING" in pending.stderr
        assert "--force" in pending.stderr and "Traceback" not in pending.stderr
    finally:
        queue._unlock(held)
    assert adora_cli("grid", "one", cwd=toy_project).returncode == 0  # starts the runner
    _wait(lambda: (queue.state("1") or {}).get("state") == "RUNNING")
    running = adora_cli("run", "--", *ARGS, cwd=toy_project)
    assert running.returncode == 1 and "RUNNING" in running.stderr, running.stderr
    # --clear must not delete the folder of a running job either.
    clear = adora_cli("run", "--clear", "--", *ARGS, cwd=toy_project)
    assert clear.returncode == 1 and "Deleted" not in clear.stderr
    assert adora_cli("grid", "one", "-C", cwd=toy_project).returncode == 0
    _wait(lambda: (queue.state("1") or {}).get("state") == "CANCELLED")


def test_a_second_training_of_the_same_xp_is_refused_by_the_folder_lock(
        toy_project: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    first = subprocess.Popen([sys.executable, "-m", "adora", "run", "--", *ARGS],
                             cwd=toy_project, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        from adora.package import load_main

        folder = load_main("toy").get_xp(ARGS).folder
        _wait(lambda: (folder / "history.jsonl").exists() or first.poll() is not None)
        assert first.poll() is None, first.communicate()
        second = adora_cli("run", "--", *ARGS, cwd=toy_project)
        assert second.returncode == 1, second.stderr
        assert f"being trained already, by pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        forced = subprocess.Popen([sys.executable, "-m", "adora", "run", "--force", "--",
                                   *ARGS], cwd=toy_project, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        forced.terminate()
        _, err = forced.communicate(timeout=30)
        assert "--force: training XP" in err
    finally:
        first.terminate()
        first.communicate(timeout=30)
    # The lock goes with its process: the XP can be trained again.
    import fcntl

    fd = os.open(folder / ".adora_run.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
