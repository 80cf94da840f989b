"""The local backend for real: detached processes, parallelism limit, cancel, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from adora.backends.local_queue import LocalQueue
from tests.conftest import adora_cli


def write_grid(root: Path, name: str, body: str) -> None:
    (root / "toy" / "grids" / f"{name}.py").write_text(
        "from adora import Explorer\n\n" + textwrap.dedent(body))


def queue(root: Path) -> LocalQueue:
    return LocalQueue(root / "outputs" / ".adora" / "local")


def wait_states(root: Path, predicate, timeout: float = 60) -> dict[str, dict]:
    q = queue(root)
    deadline = time.monotonic() + timeout
    while True:
        states = {job_id: q.state(job_id) or {} for job_id in q.job_ids()}
        if states and predicate(states):
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; states: {states}")
        time.sleep(0.1)


def all_final(states: dict[str, dict]) -> bool:
    return all(s.get("state") in ("COMPLETED", "FAILED", "CANCELLED") for s in states.values())


def grid_json(root: Path, name: str, *args: str, code: int = 0) -> list[dict]:
    out = adora_cli("grid", name, "--json", *args, cwd=root)
    assert out.returncode == code, out.stderr
    return json.loads(out.stdout)[name]


def test_grid_runs_to_completion_and_rerun_submits_nothing(toy_project: Path) -> None:
    write_grid(toy_project, "small", """
        import treetable as tt

        class E(Explorer):
            def get_grid_metrics(self):
                return [tt.group("valid", [tt.leaf("loss", ".3f")])]

        @E
        def explorer(launcher):
            launcher.bind_(epochs=2)
            for lr in [0.01, 0.05, 0.1]:
                launcher(lr=lr)
    """)
    first = adora_cli("grid", "small", "--max-parallel", "3", cwd=toy_project)
    assert first.returncode == 0, first.stderr
    assert "Submitted 3 XP(s) in 1 submission(s)" in first.stderr
    # The command returned; the runner keeps the jobs going without it.
    wait_states(toy_project, all_final)
    rows = grid_json(toy_project, "small")
    assert [r["state"] for r in rows] == ["COMPLETED"] * 3
    assert all(r["metrics"]["epoch"] == 2 and r["exit_code"] == 0 for r in rows)
    assert all(r["metrics"]["valid"]["loss"] > 0 for r in rows)
    again = adora_cli("grid", "small", cwd=toy_project)
    assert again.returncode == 0 and "Submitted" not in again.stderr
    assert "COM" in again.stdout and "| valid" in again.stdout and "loss" in again.stdout
    assert len(queue(toy_project).job_ids()) == 3
    # Each XP's log is in its folder.
    log = adora_cli("grid", "small", "-l", "0", cwd=toy_project)
    assert "epoch 2/2" in log.stdout


def test_parallelism_limit_and_queue_drains_after_cli_exit(toy_project: Path) -> None:
    write_grid(toy_project, "par", """
        @Explorer
        def explorer(launcher):
            launcher.bind_(epochs=3, epoch_time=0.3)
            for seed in range(5):
                launcher(seed=seed)
    """)
    out = adora_cli("grid", "par", "--max-parallel", "2", cwd=toy_project)
    assert out.returncode == 0, out.stderr
    states = wait_states(toy_project, all_final, timeout=120)
    assert all(s["state"] == "COMPLETED" for s in states.values())
    spans = sorted((s["started_at"], s["ended_at"]) for s in states.values())
    for start, _ in spans:
        running = sum(1 for a, b in spans if a <= start < b)
        assert running <= 2, spans
    # The limit was used, not just respected: two jobs did run together.
    assert any(a < spans[0][1] for a, _ in spans[1:])


def test_cancel_kills_the_process_group(toy_project: Path) -> None:
    write_grid(toy_project, "long", """
        @Explorer
        def explorer(launcher):
            launcher(epochs=200, epoch_time=0.2)
    """)
    assert adora_cli("grid", "long", cwd=toy_project).returncode == 0
    # RUNNING is recorded just before the process starts, its pid just after.
    states = wait_states(toy_project, lambda s: all(v.get("state") == "RUNNING" and v.get("pid")
                                                    for v in s.values()))
    pid = next(iter(states.values()))["pid"]
    out = adora_cli("grid", "long", "-C", cwd=toy_project)
    assert out.returncode == 0 and "Cancelled 1 job(s)" in out.stderr
    wait_states(toy_project, all_final)
    rows = grid_json(toy_project, "long")
    assert rows[0]["state"] == "CANCELLED"
    deadline = time.monotonic() + 10
    while True:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "the job's process group survived the cancel"
        time.sleep(0.1)


def test_failure_exit_code_retry_and_resume(toy_project: Path) -> None:
    write_grid(toy_project, "fail", """
        @Explorer
        def explorer(launcher):
            launcher(epochs=4, fail_at=2)
    """)
    assert adora_cli("grid", "fail", cwd=toy_project).returncode == 0
    wait_states(toy_project, all_final)
    rows = grid_json(toy_project, "fail", code=1)  # a failed XP: exit status 1
    assert rows[0]["state"] == "FAILED" and rows[0]["exit_code"] == 1
    assert rows[0]["metrics"]["epoch"] == 2
    # Without -r nothing happens; with -r the XP resumes from its history
    # (and, the bug being still there, fails again at the same epoch).
    plain = adora_cli("grid", "fail", cwd=toy_project)
    assert plain.returncode == 1 and "Submitted" not in plain.stderr
    assert "1 XP failed:" in plain.stdout and "FAILED, exit code 1" in plain.stdout
    assert "adora grid fail -l 0" in plain.stdout and "adora grid fail -r" in plain.stdout
    retry = adora_cli("grid", "fail", "-r", cwd=toy_project)
    assert "Submitted 1 XP(s)" in retry.stderr
    wait_states(toy_project, all_final)
    log = adora_cli("grid", "fail", "-l", "0", cwd=toy_project).stdout
    assert f"Resuming {rows[0]['sig']} at epoch 2" in log
    again = grid_json(toy_project, "fail", code=1)[0]
    assert again["job_id"] != rows[0]["job_id"] and again["metrics"]["epoch"] == 2


def test_two_concurrent_grid_commands_submit_each_xp_once(toy_project: Path) -> None:
    write_grid(toy_project, "race", """
        @Explorer
        def explorer(launcher):
            for seed in range(8):
                launcher(seed=seed, epochs=1)
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["ADORA_BACKEND"] = "local"
    procs = [subprocess.Popen([sys.executable, "-m", "adora", "grid", "race"], cwd=toy_project,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum("Submitted 8 XP(s)" in err for _, err in outs) == 1
    assert len(queue(toy_project).job_ids()) == 8
    wait_states(toy_project, all_final)


def test_removed_xps_without_terminal_are_reported_not_cancelled(toy_project: Path) -> None:
    write_grid(toy_project, "shrink", """
        @Explorer
        def explorer(launcher):
            launcher(epochs=200, epoch_time=0.2, seed=1)
            launcher(epochs=200, epoch_time=0.2, seed=2)
    """)
    assert adora_cli("grid", "shrink", cwd=toy_project).returncode == 0
    write_grid(toy_project, "shrink", """
        @Explorer
        def explorer(launcher):
            launcher(epochs=200, epoch_time=0.2, seed=1)
    """)
    out = adora_cli("grid", "shrink", cwd=toy_project)  # stdin is not a terminal
    assert out.returncode == 0
    assert "Not cancelling 1 job(s)" in out.stderr and "--yes" in out.stderr
    assert all(s.get("state") != "CANCELLED"
               for s in wait_states(toy_project, lambda s: True).values())
    yes = adora_cli("grid", "shrink", "--yes", cwd=toy_project)
    assert "Cancelled 1 job(s)" in yes.stderr
    assert adora_cli("grid", "shrink", "-C", cwd=toy_project).returncode == 0
    states = wait_states(toy_project, all_final)
    assert sorted(s["state"] for s in states.values()) == ["CANCELLED", "CANCELLED"]


def test_grid_listing_and_errors(toy_project: Path) -> None:
    listing = adora_cli("grid", cwd=toy_project)
    assert listing.returncode == 0 and "sweep" in listing.stdout
    unknown = adora_cli("grid", "nope", cwd=toy_project)
    assert unknown.returncode == 2
    assert "No grid named 'nope'" in unknown.stderr and "sweep" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    write_grid(toy_project, "typo", """
        @Explorer
        def explorer(launcher):
            launcher(lr=0.1)
            launcher(lrr=0.1)
    """)
    bad = adora_cli("grid", "typo", cwd=toy_project)
    assert bad.returncode == 2 and "typo.py:7:" in bad.stderr
    assert "unrecognized arguments: --lrr=0.1" in bad.stderr and "Traceback" not in bad.stderr
    assert not (toy_project / "outputs" / ".adora" / "local" / "jobs").exists()


def test_folder_and_dry_run_are_read_only(toy_project: Path) -> None:
    dry = adora_cli("grid", "sweep", "--dry-run", cwd=toy_project)
    assert dry.returncode == 0 and "N/A" in dry.stdout
    folder = adora_cli("grid", "sweep", "-f", "1", cwd=toy_project)
    assert folder.returncode == 0 and "/outputs/xps/" in folder.stdout
    assert not (toy_project / "outputs" / ".adora" / "local" / "jobs").exists()


def test_launch_follows_the_log_and_info_finds_the_job(toy_project: Path) -> None:
    out = adora_cli("launch", "-b", "local", "--", "--epochs", "2", "--seed", "5",
                    cwd=toy_project)
    assert out.returncode == 0, out.stderr
    assert "epoch 2/2" in out.stdout and "ended: COMPLETED" in out.stderr
    again = adora_cli("launch", "-b", "local", "--no-tail", "--", "--epochs", "2", "--seed",
                      "5", cwd=toy_project)
    assert "Submitted" not in again.stderr and "COMPLETED" in again.stderr
    info = adora_cli("info", "--", "--epochs", "2", "--seed", "5", cwd=toy_project)
    assert "job: 1 on local, COMPLETED" in info.stdout
    by_job = adora_cli("info", "-j", "1", "-l", cwd=toy_project)
    assert by_job.returncode == 0 and "seed=5" in by_job.stdout
    assert "epoch 2/2" in by_job.stdout
    unknown = adora_cli("info", "-j", "999", cwd=toy_project)
    assert unknown.returncode != 0 and "No XP known for job 999" in unknown.stderr


def test_watch_several_grids_until_done(toy_project: Path) -> None:
    for name, seeds in (("a", (1, 2)), ("b", (2, 3))):
        write_grid(toy_project, name, f"""
            @Explorer
            def explorer(launcher):
                for seed in {seeds}:
                    launcher(seed=seed, epochs=2)
        """)
    out = adora_cli("grid", "a", "b", "--watch", "--json", "--max-parallel", "4",
                    cwd=toy_project, timeout=180)
    assert out.returncode == 0, out.stderr
    # JSON Lines: one document a line, each time something changed; the last is final.
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) >= 2 and all(set(doc) == {"a", "b"} for doc in lines)
    last = lines[-1]
    assert [r["state"] for r in last["a"]] == ["COMPLETED"] * 2
    assert [r["state"] for r in last["b"]] == ["COMPLETED"] * 2
    # seed=2 is in both grids: one job only.
    assert len(queue(toy_project).job_ids()) == 3
    assert last["a"][1]["job_id"] == last["b"][0]["job_id"]


def test_grid_json_of_a_big_grid_is_complete(toy_project: Path) -> None:
    # --json is streamed row by row: still one valid document with every row. The jobs
    # are held: the test holds the runner's lock, so no runner starts.
    import fcntl

    write_grid(toy_project, "big", """
        @Explorer
        def explorer(launcher):
            for seed in range(2000):
                launcher(seed=seed, lr=0.001 * (1 + seed % 11))
    """)
    q = queue(toy_project)
    q.ensure()
    with open(q.root / "runner.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        dry = grid_json(toy_project, "big", "--dry-run")
        rows = grid_json(toy_project, "big")
        again = grid_json(toy_project, "big")
    assert [r["index"] for r in dry] == list(range(2000)) == [r["index"] for r in rows]
    assert all(r["state"] is None for r in dry)
    assert len({r["sig"] for r in rows}) == 2000 and {r["state"] for r in rows} == {"PENDING"}
    assert [r["sig"] for r in rows] == [r["sig"] for r in dry] == [r["sig"] for r in again]
    assert all(Path(r["folder"]).name == r["sig"] for r in rows)
    assert len(set(q.job_ids())) == 2000  # each XP queued once
