"""`SlurmConfig.dependents` (Dora's chains of ``afternotok`` jobs), without a cluster:
the chain's state, the order of cancellation, grouping, the scripts, recovery by name.
The same behaviour on the real cluster: tests/test_slurm_dependents.py."""

from __future__ import annotations

import typing as tp
from pathlib import Path

import pytest

from adora.backends.base import JobStatus, LaunchSpec
from adora.backends.ssh import submission_command
from adora.conf import SlurmConfig
from adora.engine.run import submit_requests
from adora.errors import ConfigError
from adora.jobs import JobRecord, load_records, save_submission, settle_submission, sig_of_job
from adora.slurm.client import SlurmClient, cancel_waves, chain_status
from adora.slurm.params import check_supported
from adora.slurm.script import RemoteJob, sbatch_script
from adora.slurm.transport import CommandResult
from adora.states import JobState

S = JobState


def chain(*states: JobState, stale: int | None = None) -> list[tuple[str, JobStatus]]:
    return [(str(100 + i), JobStatus(state, stale=i == stale)) for i, state in enumerate(states)]


@pytest.mark.parametrize("links, state, link", [
    ((S.PENDING, S.PENDING, S.PENDING), S.PENDING, "100"),
    ((S.RUNNING, S.PENDING, S.PENDING), S.RUNNING, "100"),
    # The first failed, the second takes over: never FAILED while a link can run.
    ((S.FAILED, S.PENDING, S.PENDING), S.PENDING, "101"),
    ((S.TIMEOUT, S.RUNNING, S.PENDING), S.RUNNING, "101"),
    # A link completed: the later ones, cancelled by Slurm, are not a failure.
    ((S.COMPLETED, S.CANCELLED, S.CANCELLED), S.COMPLETED, "100"),
    ((S.FAILED, S.COMPLETED, S.CANCELLED), S.COMPLETED, "101"),
    ((S.COMPLETED, S.PENDING), S.COMPLETED, "100"),  # before Slurm cancelled the next
    # Only when every link failed is the chain failed, as its last link.
    ((S.FAILED, S.TIMEOUT, S.OUT_OF_MEMORY), S.OUT_OF_MEMORY, "102"),
    # Not known yet (sacct lags): not final, asked again.
    ((S.FAILED, S.UNKNOWN), S.UNKNOWN, "101"),
])
def test_chain_state(links: tuple[JobState, ...], state: JobState, link: str) -> None:
    got = chain_status(chain(*links))
    assert (got.state, got.job_id) == (state, link)


def test_chain_whose_last_failure_is_not_confirmed_is_not_final() -> None:
    got = chain_status(chain(S.FAILED, S.FAILED, stale=1))
    assert got.state is S.FAILED and got.stale


def test_cancel_waves_cancel_the_last_links_first() -> None:
    a = JobRecord(backend="slurm", token="t", job_id="10", dependents=["11", "12"])
    b = JobRecord(backend="slurm", token="t", job_id="20", dependents=["21"])
    c = JobRecord(backend="slurm", token="t", job_id="30_1")
    assert cancel_waves([a, b, c]) == [["12", "21", "30_1"], ["11", "20"], ["10"]]
    assert cancel_waves([c]) == [["30_1"]]  # no chain: one scancel, as before
    assert cancel_waves([]) == []


def test_xps_with_dependents_are_single_jobs_not_arrays(tmp_path: Path) -> None:
    xps = [tp.cast(tp.Any, type("X", (), {"sig": f"s{i}"})()) for i in range(5)]
    chained = SlurmConfig(dependents=2)
    plain = SlurmConfig()
    configs = {"s0": chained, "s1": chained, "s2": chained, "s3": plain, "s4": plain}
    launch = LaunchSpec("toy", "train", tmp_path)
    requests = submit_requests(xps, configs, launch, max_group=None)
    shapes = sorted((len(r.xps), r.array, r.slurm.dependents) for r in requests)
    assert shapes == [(1, False, 2), (1, False, 2), (1, False, 2), (2, True, 0)]
    assert len({r.token for r in requests}) == 4  # each chain has its own job name


def test_check_supported_takes_dependents_and_refuses_nonsense() -> None:
    check_supported(SlurmConfig(dependents=2))
    for bad in (-1, "2", 1.5, True):
        with pytest.raises(ConfigError, match="dependents"):
            check_supported(SlurmConfig(dependents=bad))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_num_timeout"):
        check_supported(SlurmConfig(max_num_timeout=-1))
    with pytest.raises(ConfigError, match="array_parallelism"):
        check_supported(SlurmConfig(array_parallelism=0))


def _script(slurm: SlurmConfig, link: int) -> str:
    job = RemoteJob(job_name="adora_t", count=1, array=False, log_pattern="/w/%j.log",
                    argv_file="/w/argv.json", code_dir="/codes/h", original_dir="/w",
                    package="toy", main_module="train")
    return sbatch_script(job, slurm, link=link)


def test_scripts_of_a_chain() -> None:
    slurm = SlurmConfig(gpus=0, dependents=2, max_num_timeout=7)
    first, middle, last = (_script(slurm, k) for k in range(3))
    # Only the last link is requeued (by Slurm or at its time limit): the next link
    # takes over from the others.
    for text in (first, middle):
        assert "#SBATCH --no-requeue" in text and "--max-requeue 0 " in text
    assert "#SBATCH --requeue" in last and "--max-requeue 7 " in last
    # Every later link is killed by Slurm once it can never run.
    assert "--kill-on-invalid-dep" not in first
    assert "#SBATCH --kill-on-invalid-dep=yes" in middle and "kill-on-invalid-dep" in last
    plain = _script(SlurmConfig(gpus=0), 0)
    assert "#SBATCH --requeue" in plain and "dependency" not in plain


def test_the_remote_submission_chains_the_link_scripts() -> None:
    script = submission_command("/w/arrays/adora_t", "/codes/h")[2]
    assert "\n" not in script  # one line, for csh login shells
    assert 'deps="afternotok:${job%%;*}"' in script
    assert '--dependency="$deps" -- "$f/link$n.sh"' in script
    assert 'deps="$deps:${job%%;*}"' in script  # every earlier link


def test_container_workdir_on_a_remote_cluster_is_the_code_there() -> None:
    text = _script(SlurmConfig(gpus=0, container_chdir=True), 0)
    assert "--container-workdir /codes/h" in text


class NamedJobs:
    """squeue/sacct answering with jobs by name (the links of interrupted chains)."""

    def __init__(self, queue: list[tuple[str, str]], acct: list[tuple[str, str]],
                 acct_state: str = "COMPLETED|0:0") -> None:
        self.queue, self.acct, self.acct_state = queue, acct, acct_state
        self.calls: list[list[str]] = []

    async def run(self, argv: tp.Sequence[str], *, timeout: float = 60.0,
                  input: str | None = None) -> CommandResult:
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] == "squeue":
            out = "".join(f"{i}|N/A|N/A|PENDING|0:00|Dependency|{n}\n" for i, n in self.queue)
        elif argv[0] == "sacct":
            out = "".join(f"{i}|{self.acct_state}|00:00:00|None|{n}\n"
                          for i, n in self.acct)
        else:
            out = "AccountingStorageType = accounting_storage/slurmdbd\n"
        return CommandResult(argv, 0, out, "")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_recovery_adopts_every_link_of_a_chain(anyio_backend: str) -> None:
    # The first link (999) left the queue; 1000 and 1001 wait in it. Ids sort as numbers.
    runner = NamedJobs(queue=[("1000", "adora_a"), ("1001", "adora_a"), ("77", "adora_b")],
                       acct=[("999", "adora_a"), ("1000", "adora_a")])
    client = SlurmClient(runner, user="u", share_polls=False)
    chained = JobRecord(backend="slurm", token="a", job_name="adora_a", array_index=0,
                        slurm={"dependents": 2})
    cut = JobRecord(backend="slurm", token="c", job_name="adora_c", array_index=0,
                    slurm={"dependents": 1})
    plain = JobRecord(backend="slurm", token="b", job_name="adora_b", array_index=0,
                      slurm={"dependents": 0})
    runner.acct.append(("555", "adora_c"))  # only the first link of c was submitted
    found = await client.find([("x", chained), ("y", cut), ("z", plain)])
    assert found == ["999", "555", "77"]
    assert chained.dependents == ["1000", "1001"]
    assert cut.dependents == [] and plain.dependents == []


def test_chain_links_are_recorded_and_found_by_any_link(tmp_path: Path) -> None:
    root = tmp_path / "out"
    (root / "xps" / "sig1").mkdir(parents=True)
    intent = JobRecord(backend="slurm", token="t", job_name="adora_t", array_index=0,
                       slurm={"dependents": 1})
    save_submission(root, "t", [intent], ["sig1"])
    settle_submission(root, "t", {"sig1": "41"}, {"sig1": ["42"]})
    record = load_records([root / "xps" / "sig1"])[0]
    assert record is not None and record.links == ["41", "42"]
    assert sig_of_job(root, "42") == "sig1"  # `adora info -j` of a later link
    record.log = "/o/xps/sig1/submitit/41_0_log.out"
    assert record.log_of("42") == "/o/xps/sig1/submitit/42_0_log.out"


def test_recovery_by_name_asks_sacct_for_jobs_that_never_started() -> None:
    from datetime import datetime

    from adora.slurm.commands import sacct_command

    # By name and time window alone, sacct leaves out a link cancelled before it started.
    cmd = sacct_command(start=datetime(2026, 1, 1), end=datetime(2026, 1, 2), names=["adora_t"])
    states = next(a for a in cmd if a.startswith("--state="))
    assert {"PD", "R", "CD", "CA", "F", "TO"} <= set(states[len("--state="):].split(","))
    assert not any(a.startswith("--state=") for a in sacct_command(["1"]))


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_chain_is_one_status_under_its_first_job(anyio_backend: str) -> None:
    # 50 failed (gone from the queue, in accounting), 51 waits in the queue to take over.
    runner = NamedJobs(queue=[("51", "adora_a"), ("77", "adora_b")], acct=[("50", "adora_a")],
                       acct_state="FAILED|1:0")
    client = SlurmClient(runner, user="u", share_polls=False)
    record = JobRecord(backend="slurm", token="a", job_id="50", dependents=["51"])
    plain = JobRecord(backend="slurm", token="b", job_id="77")
    got = await client.states([record, plain])
    assert set(got) == {"50", "77"}  # one status per record asked
    assert (got["50"].state, got["50"].job_id) == (S.PENDING, "51")  # pending, not failed
    assert got["77"].state is S.PENDING and got["77"].job_id is None


def test_only_the_last_job_of_a_slurm_chain_is_requeued(tmp_path: Path) -> None:
    from adora.backends.base import SubmitRequest
    from adora.backends.slurm import SlurmBackend
    from adora.backends.slurm_job import SlurmTarget

    class Executor:
        def submit_chain(self, targets: list[SlurmTarget], argv: list[str], *, job_name: str
                         ) -> list[str]:
            self.targets, self.argv, self.job_name = targets, argv, job_name
            return ["7", "8", "9"]

    xp = tp.cast(tp.Any, type("X", (), {"sig": "s", "argv": ["--a=1"],
                                         "folder": tmp_path / "xps" / "s"})())
    request = SubmitRequest([xp], SlurmConfig(dependents=2), "tok", "adora_tok",
                            LaunchSpec("toy", "train", tmp_path), array=False)
    executor = Executor()
    target = SlurmTarget("toy", "train", str(tmp_path), folder="/f")
    (record,) = SlurmBackend(tmp_path)._submit_chain(executor, target, request, tmp_path / "f")
    assert [t.requeue for t in executor.targets] == [False, False, True]
    assert executor.argv == ["--a=1"] and executor.job_name == "adora_tok"
    assert (record.job_id, record.dependents, record.array_id) == ("7", ["8", "9"], None)
    assert record.log == str(tmp_path / "f" / "7_0_log.out")
    # At its time limit a link that is not the last exits (the next one takes over).
    with pytest.raises(SystemExit):
        executor.targets[0].checkpoint(["--a=1"])
