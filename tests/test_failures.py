"""Failed XPs explained: the error line of a log, the report under the table, exit codes,
-t on a finished XP, and the states after -C."""

from __future__ import annotations

import re
from pathlib import Path

from adora.engine.failures import last_error_line
from tests.conftest import adora_cli
from tests.test_local_backend import all_final, wait_states, write_grid

TRACEBACK = """epoch 1/4 train 0.5
Traceback (most recent call last):
  File "train.py", line 3, in <module>
    main()
  File "train.py", line 2, in main
    raise ValueError("bad lr: -1")
ValueError: bad lr: -1
"""


def test_last_error_line_of_a_traceback() -> None:
    assert last_error_line(TRACEBACK) == "ValueError: bad lr: -1"
    # Chained: the last traceback's exception.
    chained = TRACEBACK + "\nDuring handling of the above exception, another exception " \
        "occurred:\n\n" + TRACEBACK.replace("ValueError: bad lr: -1", "KeyError: 'x'")
    assert last_error_line(chained) == "KeyError: 'x'"
    # A DDP rank's prefix, colours, and lines printed after the traceback.
    ddp = "\n".join(f"[rank0]: {line}" for line in TRACEBACK.splitlines())
    assert last_error_line("\x1b[31m" + ddp + "\x1b[0m\nsrun: error: task 0 exited") \
        == "ValueError: bad lr: -1"
    assert last_error_line("torch.OutOfMemoryError: CUDA out of memory") is not None


def test_last_error_line_without_a_traceback() -> None:
    slurm = ("epoch 3/10\nslurmstepd: error: *** JOB 12 ON n1 CANCELLED AT 2024-01-01 DUE TO "
             "TIME LIMIT ***\n")
    assert last_error_line(slurm) == slurm.splitlines()[1]
    assert last_error_line("all good\nbye\n") == "bye"
    assert last_error_line("") is None and last_error_line("\n \n") is None


def test_two_of_three_crash_watch_exits_1_with_their_error_lines(toy_project: Path) -> None:
    write_grid(toy_project, "crash", """
        @Explorer
        def explorer(launcher):
            launcher.bind_(epochs=1, epoch_time=0)
            for seed, fail_at in enumerate([0, -1, 0]):
                launcher(fail_at=fail_at, seed=seed)
    """)
    proc = adora_cli("grid", "crash", "--watch", "-i", "0", cwd=toy_project, timeout=120)
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert "2 XPs failed:" in out
    failed = [line for line in out.splitlines() if re.match(r"\s+#\d \w{8} ", line)]
    assert len(failed) == 2, out
    for line in failed:
        assert "FAILED, exit code 1: RuntimeError: Failing on purpose at epoch 0" in line
    assert "adora grid crash -l 0" in out and "adora grid crash -r" in out
    # Not a terminal: a timestamped line per change, not the table per refresh.
    changes = [line for line in out.splitlines() if re.match(r"\d\d:\d\d:\d\d crash #", line)]
    assert any("-> FAILED" in line and "RuntimeError" in line for line in changes), out
    assert out.count("Grid crash") == 2  # once at the start, once at the end
    assert "Ctrl-C" not in out

    # A plain run shows the same failures, and exits 1 too.
    plain = adora_cli("grid", "crash", cwd=toy_project)
    assert plain.returncode == 1 and "2 XPs failed:" in plain.stdout

    # -t on a finished XP prints its log and returns (as `adora info -t` does).
    tail = adora_cli("grid", "crash", "-t", "0", cwd=toy_project, timeout=30)
    assert tail.returncode == 0, tail.stderr
    assert "RuntimeError: Failing on purpose" in tail.stdout
    log = adora_cli("grid", "crash", "-l", "1", cwd=toy_project, timeout=30)
    assert log.returncode == 0 and "epoch 1/1" in log.stdout


def test_cancel_shows_cancelled(toy_project: Path) -> None:
    write_grid(toy_project, "slow", """
        @Explorer
        def explorer(launcher):
            for seed in range(2):
                launcher(seed=seed, epochs=50, epoch_time=1)
    """)
    assert adora_cli("grid", "slow", cwd=toy_project).returncode == 0
    proc = adora_cli("grid", "slow", "-C", cwd=toy_project)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.split()[:1] in (["0"], ["1"])]
    assert len(rows) == 2 and all("CAN" in row for row in rows), proc.stdout
    assert "RUN" not in proc.stdout and "PEN" not in proc.stdout
    wait_states(toy_project, all_final)
    # Cancelled by adora: not a failure, later either.
    again = adora_cli("grid", "slow", cwd=toy_project)
    assert again.returncode == 0 and "failed" not in again.stdout, again.stdout


def test_metrics_option(toy_project: Path) -> None:
    write_grid(toy_project, "met", """
        import treetable as tt

        class E(Explorer):
            def get_grid_metrics(self):
                return [tt.group("train", [tt.leaf("loss", ".3f")]),
                        tt.group("valid", [tt.leaf("loss", ".3f")])]

        @E
        def explorer(launcher):
            launcher(epochs=0)
    """)
    proc = adora_cli("grid", "met", "--metrics", "valid.loss", "--dry-run", cwd=toy_project)
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout and "train" not in proc.stdout
    bad = adora_cli("grid", "met", "--metrics", "valid.nope", "--dry-run", cwd=toy_project)
    assert bad.returncode == 2 and "no metric column 'valid.nope'" in bad.stderr
