"""Corrupt or foreign state never runs an XP twice and never shows another XP's results.

Each test damages one of adora's files on the local backend the way a crash, a
full disk or a careless `echo` would, then checks that the next `adora grid`
either rebuilds what it needs from the other records (and asks the queue what
really happened) or stops with a message naming the file and what to do.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import time
from pathlib import Path

from adora.backends.local_queue import FINAL, LocalQueue
from tests.conftest import adora_cli


def write_grid(root: Path, name: str, seeds: tuple[int, ...], extra: str = "epochs=1"
               ) -> None:
    (root / "toy" / "grids" / f"{name}.py").write_text(textwrap.dedent(f"""
        from adora import Explorer

        @Explorer
        def explorer(launcher):
            for seed in {list(seeds)!r}:
                launcher(seed=seed, {extra})
    """))



def queue(root: Path) -> LocalQueue:
    return LocalQueue(root / "outputs" / ".adora" / "local")


def wait_done(root: Path, timeout: float = 120) -> dict[str, dict]:
    q = queue(root)
    deadline = time.monotonic() + timeout
    try:
        while True:
            states = q.states()
            if states and all(s["state"] in FINAL for s in states.values()) \
                    and not q.runner_alive():
                return states
            assert time.monotonic() < deadline, states
            time.sleep(0.1)
    finally:
        q.close()


def rows(root: Path, name: str, code: int = 0) -> list[dict]:
    out = adora_cli("grid", name, "--json", cwd=root)
    assert out.returncode == code, out.stderr
    return json.loads(out.stdout)[name]


def finished_grid(root: Path, name: str = "g", seeds: tuple[int, ...] = (1, 2, 3),
                  extra: str = "epochs=1") -> list[dict]:
    write_grid(root, name, seeds, extra)
    first = adora_cli("grid", name, cwd=root)
    assert first.returncode == 0, first.stderr
    wait_done(root)
    done = rows(root, name)
    assert [r["state"] for r in done] == ["COMPLETED"] * len(seeds)
    return done


def starts(root: Path, sig: str) -> int:
    return len(list((root / "outputs" / "xps" / sig).glob("local_*.log")))


def test_garbage_job_record_is_rebuilt_from_the_submission_not_rerun(toy_project: Path) -> None:
    done = finished_grid(toy_project)
    record = toy_project / "outputs" / "xps" / done[0]["sig"] / "adora_job.json"
    record.write_text("garbage{")
    again = adora_cli("grid", "g", cwd=toy_project)
    assert again.returncode == 0, again.stderr
    assert "Submitted" not in again.stderr
    after = rows(toy_project, "g")
    assert [r["state"] for r in after] == ["COMPLETED"] * 3
    assert [r["job_id"] for r in after] == [r["job_id"] for r in done]
    assert all(starts(toy_project, r["sig"]) == 1 for r in after)
    # The record was healed with what the queue said.
    assert json.loads(record.read_text())["final_state"] == "COMPLETED"


def test_unknown_final_state_is_rebuilt_too(toy_project: Path) -> None:
    done = finished_grid(toy_project)
    record = toy_project / "outputs" / "xps" / done[1]["sig"] / "adora_job.json"
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "final_state": "EXPLODED"}))
    again = adora_cli("grid", "g", cwd=toy_project)
    assert again.returncode == 0 and "Submitted" not in again.stderr, again.stderr
    assert rows(toy_project, "g")[1]["state"] == "COMPLETED"


def test_unreadable_record_nobody_else_knows_stops_with_the_file(toy_project: Path) -> None:
    done = finished_grid(toy_project)
    sig = done[2]["sig"]
    shutil.rmtree(toy_project / "outputs" / ".adora" / "submissions")
    record = toy_project / "outputs" / "xps" / sig / "adora_job.json"
    record.write_text("\x00\x00")
    out = adora_cli("grid", "g", cwd=toy_project)
    assert out.returncode == 1
    assert str(record) in out.stderr and "delete" in out.stderr
    assert "Traceback" not in out.stderr and "Submitted" not in out.stderr
    assert len(queue(toy_project).job_ids()) == 3


def test_corrupt_queue_database_stops_then_moved_aside_nothing_reruns(toy_project: Path
                                                                       ) -> None:
    done = finished_grid(toy_project)
    db = toy_project / "outputs" / ".adora" / "local" / "queue.db"
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    db.write_bytes(b"this is not a database" * 100)
    write_grid(toy_project, "h", (1, 2, 3, 4))  # one new XP, three finished ones
    out = adora_cli("grid", "h", cwd=toy_project)
    assert out.returncode == 1, out.stderr
    assert str(db) in out.stderr and "mv " in out.stderr and "Traceback" not in out.stderr
    # As the message says: move it aside and run again.
    db.rename(f"{db}.broken")
    again = adora_cli("grid", "h", cwd=toy_project)
    assert again.returncode == 0, again.stderr
    assert "Submitted 1 XP(s)" in again.stderr
    wait_done(toy_project)
    after = rows(toy_project, "h")
    assert [r["state"] for r in after] == ["COMPLETED"] * 4
    assert [r["job_id"] for r in after[:3]] == [r["job_id"] for r in done]
    assert all(starts(toy_project, r["sig"]) == 1 for r in after)


def test_a_reused_job_id_never_shows_another_xps_job(toy_project: Path) -> None:
    # Grid a's jobs are queued, then the queue is lost before they ran; a new queue
    # hands ids 1, 2 out again, to grid b's XPs: a's records must not take their states.
    write_grid(toy_project, "a", (1, 2))
    q = queue(toy_project)
    q.set_max_parallel(1)
    runner_lock = q._flock("runner.lock", blocking=True)  # no runner starts a's jobs
    try:
        assert adora_cli("grid", "a", cwd=toy_project).returncode == 0
        q.close()
        shutil.rmtree(q.root / "jobs")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{q.path}{suffix}").unlink(missing_ok=True)
        write_grid(toy_project, "b", (7, 8))
        assert adora_cli("grid", "b", cwd=toy_project).returncode == 0
    finally:
        q._unlock(runner_lock)
    adora_cli("grid", "b", cwd=toy_project)  # starts the runner
    wait_done(toy_project)
    b = rows(toy_project, "b")
    assert [r["state"] for r in b] == ["COMPLETED"] * 2
    a = rows(toy_project, "a", code=1)  # MISSING jobs: failed XPs
    assert sorted(r["job_id"] for r in a) == sorted(r["job_id"] for r in b)  # ids reused
    assert [r["state"] for r in a] == ["MISSING"] * 2
    assert all(starts(toy_project, r["sig"]) == 0 for r in a)


def test_queue_of_an_older_adora_is_imported(toy_project: Path) -> None:
    done = finished_grid(toy_project)
    # Rewrite the queue as adora 0.1 kept it: one JSON file per job and its state.
    q = queue(toy_project)
    states = q.states()
    for job_id in states:
        spec = q.spec(job_id)
        (q.jobs / f"{job_id}.json").write_text(json.dumps(spec))
        (q.jobs / f"{job_id}.state.json").write_text(json.dumps(
            {k: states[job_id][k] for k in ("state", "exit_code", "pid", "started_at",
                                               "ended_at")}))
    q.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{q.path}{suffix}").unlink(missing_ok=True)
    for record in (toy_project / "outputs" / "xps").glob("*/adora_job.json"):
        data = json.loads(record.read_text())
        record.write_text(json.dumps({**data, "final_state": None}))
    again = adora_cli("grid", "g", "--json", cwd=toy_project)
    assert again.returncode == 0 and "Submitted" not in again.stderr
    after = json.loads(again.stdout)["g"]
    assert [(r["state"], r["job_id"]) for r in after] == [("COMPLETED", r["job_id"])
                                                          for r in done]
    write_grid(toy_project, "g2", (9,))
    assert adora_cli("grid", "g2", cwd=toy_project).returncode == 0
    assert int(rows(toy_project, "g2")[0]["job_id"]) == 4  # ids go on, never reused


def test_signature_collision_is_refused_wherever_the_xp_is_shown(toy_project: Path) -> None:
    # --seed=74759 and --seed=77789 both sign 3eb933f3 (a real 32-bit collision).
    done = finished_grid(toy_project, "a", (74759,), extra="")
    assert done[0]["sig"] == "3eb933f3"
    write_grid(toy_project, "b", (77789,), extra="")
    for args in (("grid", "b"), ("grid", "b", "--dry-run"), ("grid", "b", "--json"),
                 ("launch", "-b", "local", "--no-tail", "--", "--seed", "77789")):
        out = adora_cli(*args, cwd=toy_project)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert "Signature collision on 3eb933f3" in out.stderr, (args, out.stderr)
        assert "COMPLETED" not in out.stdout and "Traceback" not in out.stderr
    assert len(queue(toy_project).job_ids()) == 1
    assert rows(toy_project, "a")[0]["state"] == "COMPLETED"
