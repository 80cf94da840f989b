"""Slurm command builders and parsers, on output recorded from the real test cluster.

(tests/data/slurm/*.txt were recorded with the very commands these builders make.)
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from adora.conf import SlurmConfig
from adora.errors import ConfigError
from adora.slurm import commands as c
from adora.slurm.params import resources, sbatch_directives, submitit_parameters
from adora.states import JobState

DATA = Path(__file__).parent / "data" / "slurm"


def test_squeue_command_asks_once_for_all_the_users_jobs() -> None:
    cmd = c.squeue_command("alice")
    assert cmd[0] == "squeue" and "--user=alice" in cmd and "--array" in cmd
    assert "--states=all" in cmd and not any(a.startswith("--jobs") for a in cmd)


def test_parse_squeue_recorded() -> None:
    entries = c.parse_squeue((DATA / "squeue.txt").read_text())
    # Array tasks are keyed <array id>_<index>, pending ones expanded one per line.
    assert entries["91_0"].state is JobState.RUNNING
    assert entries["91_4"].state is JobState.PENDING
    assert entries["91_4"].reason == "JobArrayTaskLimit"
    assert entries["91_4"].name == "adora_rec1"
    assert entries["82_2"].state is JobState.COMPLETED  # last task has %A == array id
    assert entries["92"].state is JobState.FAILED and entries["92"].reason == "NonZeroExitCode"
    assert entries["93"].state is JobState.CANCELLED
    # A job name holding the separator stays whole.
    assert entries["94"].name == "weird|name" and entries["94"].state is JobState.RUNNING
    assert "91" not in entries  # the array itself is not a job of ours
    # Time used, a duration (no clock or time zone of the cluster's involved).
    assert entries["91_0"].used == 4.0 and entries["92"].used == 1.0
    assert entries["91_4"].used == 0.0


@pytest.mark.parametrize("text, seconds", [
    ("0:00", 0.0), ("0:04", 4.0), ("12:34", 754.0), ("1:02:03", 3723.0),
    ("1-02:03:04", 93784.0), ("00:00:01", 1.0), ("2-00:00:00", 172800.0),
    ("00:01.500", 1.0), ("INVALID", None), ("UNLIMITED", None), ("", None)])
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert c.parse_duration(text) == seconds


def test_parse_squeue_keeps_only_the_jobs_asked_about() -> None:
    text = (DATA / "squeue.txt").read_text()
    everything = c.parse_squeue(text)
    some = c.parse_squeue(text, {"91_4", "92", "999"})
    assert set(some) == {"91_4", "92"}
    assert some["91_4"] == everything["91_4"] and some["92"] == everything["92"]


def test_parse_sacct_recorded() -> None:
    entries = c.parse_sacct((DATA / "sacct.txt").read_text())
    assert entries["92"].state is JobState.FAILED and entries["92"].exit_code == 3
    assert entries["93"].state is JobState.CANCELLED and entries["93"].raw_state.startswith(
        "CANCELLED by")
    assert entries["91_1"].state is JobState.RUNNING
    # Pending array ranges are expanded (the %2 throttle is not an index).
    assert [entries[f"91_{i}"].state for i in range(2, 6)] == [JobState.PENDING] * 4
    assert "91_6" not in entries
    assert entries["94"].name == "weird|name"
    assert entries["92"].used == 1.0 and entries["91_0"].used == 4.0
    assert entries["82_2"].state is JobState.COMPLETED and entries["82_2"].used == 0.0


def test_sacct_command_has_absolute_times_and_array_ids() -> None:
    cmd = c.sacct_command(["12_3", "12_4", "7"], datetime(2026, 11, 24, 5, 0),
                          datetime(2026, 11, 25))
    assert "--starttime=2026-11-24T05:00:00" in cmd and "--endtime=2026-11-25T00:00:00" in cmd
    assert "--jobs=7,12" in cmd and "--allocations" in cmd


@pytest.mark.parametrize(("text", "code"), [("0:0", 0), ("3:0", 3), ("0:9", 137),
                                             ("0:15", 143), ("", None), ("x", None)])
def test_exit_codes(text: str, code: int | None) -> None:
    assert c.parse_exit_code(text) == code


def test_scontrol_config_recorded() -> None:
    config = c.parse_scontrol_config((DATA / "scontrol.txt").read_text())
    assert config["MaxArraySize"] == "10001"
    assert config["AccountingStorageType"] == "accounting_storage/slurmdbd"


def test_misc_builders() -> None:
    assert c.scancel_command(["10_2", "9", "10_2"]) == ["scancel", "9", "10_2"]
    assert c.parse_sbatch("1234\n") == "1234" and c.parse_sbatch("55;cluster") == "55"
    with pytest.raises(ValueError):
        c.parse_sbatch("sbatch: error: invalid partition")
    assert c.array_spec(1000, 256) == "0-999%256" and c.array_spec(1) == "0"
    assert c.array_spec(10, 50) == "0-9%10"
    assert c.expand_array_ranges("0-3,7,10-14:2%2") == [0, 1, 2, 3, 7, 10, 12, 14]


@pytest.mark.parametrize(("config", "expected"), [
    (SlurmConfig(gpus=0), dict(nodes=1, ntasks_per_node=1, cpus_per_task=10, mem="40GB")),
    (SlurmConfig(gpus=2), dict(nodes=1, ntasks_per_node=2, cpus_per_task=10, gres="gpu:2",
                               mem="80GB")),
    (SlurmConfig(gpus=16, one_task_per_node=True),
     dict(nodes=2, ntasks_per_node=1, cpus_per_task=80, gres="gpu:8", mem="320GB")),
    (SlurmConfig(gpus=4, cpus_per_task=3, mem_per_gpu=None),
     dict(nodes=1, ntasks_per_node=4, cpus_per_task=3, gres="gpu:4")),
    (SlurmConfig(gpus=1, partition="learnfair", comment="hi", qos="high", account="team",
                 constraint="volta", exclude="n1", nodelist=["a", "b"], time=60),
     dict(partition="learnfair", comment="hi", qos="high", account="team",
          constraint="volta", exclude="n1", nodelist="a,b", time=60)),
])
def test_slurm_config_mapping(config: SlurmConfig, expected: dict) -> None:
    params = submitit_parameters(config, job_name="adora_x")
    for key, value in expected.items():
        assert params[key] == value, key
    if config.gpus == 0:
        assert "gres" not in params
    if not config.mem_per_gpu:
        assert "mem" not in params


def test_bad_gpu_counts_and_line_breaks() -> None:
    with pytest.raises(ConfigError, match="multiple of 8"):
        resources(SlurmConfig(gpus=12))
    with pytest.raises(ConfigError, match="line break"):
        sbatch_directives(SlurmConfig(comment="a\n#SBATCH --evil"), job_name="x", output="o")


def test_container_chdir_and_srun_args() -> None:
    params = submitit_parameters(SlurmConfig(container_chdir=True, srun_args=["--export=ALL"]),
                                 job_name="x", cwd="/code")
    assert params["srun_args"] == ["--export=ALL", "--container-workdir", "/code"]


def test_checkpoint_signal_leaves_short_jobs_time_to_run() -> None:
    from adora.slurm.params import signal_delay

    # slurmctld signals at its first 30-s limit check within delay + 30 s of the end:
    # the whole window must lie inside the job's run, after a start-up margin.
    for minutes in (1, 2, 3, 5, 10, 60, 1200):
        delay = signal_delay(minutes)
        earliest = minutes * 60 - delay - 30
        assert earliest >= 10, (minutes, delay)
        assert 10 <= delay <= 90
    assert signal_delay(1200) == 90  # Dora's value for long jobs


def test_a_fenced_sbatch_runs_under_its_lock_unless_abandoned(tmp_path: Path) -> None:
    import fcntl
    import subprocess

    from adora.backends.slurm import fence

    lock, mark = c.fence_files(str(tmp_path), "adora_x")
    out = tmp_path / "ran"
    argv = c.fenced_command(["sh", "-c", f"echo ran >> {out}"], lock, mark)
    assert subprocess.run(argv).returncode == 0 and out.read_text() == "ran\n"
    # A recovery cannot fence while the lock is held (an sbatch in flight)...
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert not fence(tmp_path, "adora_x", wait=0.3)
    assert not Path(mark).exists()
    # ...and once it has, the sbatch never runs.
    assert fence(tmp_path, "adora_x", wait=0.3)
    late = subprocess.run(argv, capture_output=True, text=True)
    assert late.returncode == c.ABANDONED_STATUS, late
    assert "abandoned" in late.stderr and out.read_text() == "ran\n"
    # No folder: nothing was started there.
    assert fence(tmp_path / "absent", "adora_x", wait=0.3)
    assert not (tmp_path / "absent").exists()
