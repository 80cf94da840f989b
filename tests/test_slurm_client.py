"""The Slurm client on canned command output: batching, sharing, rate limit, squeue-only mode."""

from __future__ import annotations

import time
import typing as tp
from pathlib import Path

import pytest

from adora.engine.clock import FakeClock
from adora.jobs import JobRecord
from adora.slurm.client import SlurmClient
from adora.slurm.transport import CommandResult, RateLimited, TokenBucket
from adora.states import JobState

pytestmark = pytest.mark.anyio
DATA = Path(__file__).parent / "data" / "slurm"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CannedSlurm:
    """A CommandRunner answering like the recorded cluster; counts every command."""

    def __init__(self, accounting: str = "accounting_storage/slurmdbd") -> None:
        self.calls: list[list[str]] = []
        self.accounting = accounting
        self.squeue = (DATA / "squeue.txt").read_text()
        self.sacct = (DATA / "sacct.txt").read_text()

    async def run(self, argv: tp.Sequence[str], *, timeout: float = 60.0,
                  input: str | None = None) -> CommandResult:
        argv = list(argv)
        self.calls.append(argv)
        out = {"squeue": self.squeue, "sacct": self.sacct,
               "scontrol": f"MaxArraySize = 10001\nAccountingStorageType = {self.accounting}\n",
               "scancel": ""}[argv[0]]
        return CommandResult(argv, 0, out, "")

    def count(self, name: str) -> int:
        return sum(1 for c in self.calls if c[0] == name)


def records(*ids: str) -> list[JobRecord]:
    return [JobRecord(backend="slurm", token="t", job_id=i) for i in ids]


async def test_one_squeue_then_sacct_only_for_jobs_gone_or_failed(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    monkeypatch.setenv("ADORA_CACHE_DIR", str(tmp_path))
    canned = CannedSlurm()
    client = SlurmClient(canned, user="root", share_polls=False)
    # 91_0 running, 91_4 pending: in the queue. 92 failed: sacct gives its exit code.
    # 12345 is in neither: unknown for now, stale, never failed.
    got = await client.states(records("91_0", "91_4", "92", "12345"))
    assert canned.count("squeue") == 1 and canned.count("sacct") == 1
    sacct = next(c for c in canned.calls if c[0] == "sacct")
    assert any(a.startswith("--jobs=") and "92" in a and "91" not in a for a in sacct)
    assert got["91_0"].state is JobState.RUNNING and got["91_4"].state is JobState.PENDING
    assert got["92"].state is JobState.FAILED and got["92"].exit_code == 3
    assert got["12345"].state is JobState.UNKNOWN and got["12345"].stale
    # Run times: a running job started when squeue's time used says (by our clock); an
    # ended one ran for sacct's elapsed; a pending one has no start.
    assert got["91_0"].started_at is not None
    assert abs(time.time() - got["91_0"].started_at - 4.0) < 60
    assert got["92"].elapsed == 1.0 and got["92"].started_at is None
    assert got["91_4"].started_at is None and got["91_4"].elapsed is None
    # Final states are remembered: the next tick asks sacct nothing for 92.
    await client.states(records("91_0", "92"))
    assert canned.count("sacct") == 1


async def test_squeue_only_mode_without_accounting(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADORA_CACHE_DIR", str(tmp_path))
    canned = CannedSlurm(accounting="accounting_storage/none")
    client = SlurmClient(canned, user="root", share_polls=False)
    got = await client.states(records("91_0", "92", "12345"))
    assert canned.count("sacct") == 0
    assert got["92"].state is JobState.FAILED  # from squeue (MinJobAge)
    assert got["12345"].stale


async def test_processes_share_fresh_squeue_results(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADORA_CACHE_DIR", str(tmp_path))
    canned = CannedSlurm()
    # Two clients stand for two adora processes of the same user on one cluster.
    first = SlurmClient(canned, cluster="c", user="root", poll_max_age=60)
    second = SlurmClient(canned, cluster="c", user="root", poll_max_age=60)
    await first.queue()
    await second.queue()
    assert canned.count("squeue") == 1
    other_cluster = SlurmClient(canned, cluster="d", user="root", poll_max_age=60)
    await other_cluster.queue()
    assert canned.count("squeue") == 2


async def test_cancel_is_one_scancel() -> None:
    canned = CannedSlurm()
    client = SlurmClient(canned, user="root", share_polls=False)
    await client.cancel([f"91_{i}" for i in range(500)] + ["92"])
    assert canned.count("scancel") == 1 and len(canned.calls[0]) == 502


async def test_recover_by_job_name() -> None:
    canned = CannedSlurm()
    client = SlurmClient(canned, user="root", share_polls=False)
    intents = [("a", JobRecord(backend="slurm", token="t", job_name="adora_rec1",
                               array_index=4)),
               ("b", JobRecord(backend="slurm", token="u", job_name="adora_fail")),
               ("c", JobRecord(backend="slurm", token="v", job_name="adora_never"))]
    assert await client.find(intents) == ["91_4", "92", None]


async def test_recovery_asks_squeue_itself(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # A watcher shared a listing from before the interrupted sbatch, which died before it
    # could invalidate it: recovery must not trust it (nor sacct, which lags).
    monkeypatch.setenv("ADORA_CACHE_DIR", str(tmp_path))
    canned = CannedSlurm()
    watcher = SlurmClient(canned, cluster="c", user="root", poll_max_age=60)
    canned.squeue, listed = "", canned.squeue
    await watcher.queue()
    canned.squeue, canned.sacct = listed, ""
    recovering = SlurmClient(canned, cluster="c", user="root", poll_max_age=60)
    intents = [("a", JobRecord(backend="slurm", token="t", job_name="adora_rec1",
                               array_index=4))]
    assert await recovering.find(intents) == ["91_4"]
    assert canned.count("squeue") == 2


async def test_token_bucket_limits_the_rate() -> None:
    clock = FakeClock()
    canned = CannedSlurm()
    runner = RateLimited(canned, TokenBucket(rate=2, burst=3, clock=clock))
    for _ in range(9):
        await runner.run(["squeue"])
    # 3 at once, then one every 0.5 s.
    assert len(canned.calls) == 9
    assert clock.now() == pytest.approx(3.0)


def test_watch_period_widens_sharing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adora.backends.slurm import SlurmBackend

    monkeypatch.setenv("ADORA_CACHE_DIR", str(tmp_path))
    backend = SlurmBackend(tmp_path, runner=CannedSlurm())
    assert backend.client.cache is not None and backend.client.cache.max_age == 2.0
    backend.set_poll_period(10)  # watchers every 10 s share listings up to 5 s old
    assert backend.client.cache.max_age == 5.0
    backend.set_poll_period(1)
    assert backend.client.cache.max_age == 2.0


async def test_cancel_invalidates_the_shared_listing(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADORA_CACHE_DIR", str(tmp_path))
    canned = CannedSlurm()
    one = SlurmClient(canned, cluster="c", user="root", poll_max_age=60)
    other = SlurmClient(canned, cluster="c", user="root", poll_max_age=60)
    await one.queue()
    await one.cancel(["91_0"])
    await other.queue()  # another process must not see the listing from before scancel
    assert canned.count("squeue") == 2


async def test_failed_job_not_yet_in_sacct_is_not_final() -> None:
    canned = CannedSlurm()
    canned.sacct = ""  # sacct lags squeue right after a job ends
    client = SlurmClient(canned, user="root", share_polls=False)
    got = await client.states(records("92"))
    assert got["92"].state is JobState.FAILED and got["92"].stale  # asked again next tick
    canned.sacct = (DATA / "sacct.txt").read_text()
    got = await client.states(records("92"))
    assert not got["92"].stale and got["92"].exit_code == 3
