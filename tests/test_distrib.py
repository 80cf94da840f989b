"""adora.distrib: Slurm host lists, the rendezvous environment, init, and torch kept lazy."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import typing as tp
from pathlib import Path

import pytest

from adora import distrib
from adora.conf import DoraConfig
from adora.distrib import get_distrib_spec, master_port, parse_hostlist, set_distrib_env
from adora.xp import XP

DISTRIB_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                "ADORA_FORCE_DISTRIB", "DORA_FORCE_DISTRIB", "SLURM_PROCID", "SLURM_NTASKS",
                "SLURM_LOCALID", "SLURM_NODEID", "SLURM_JOB_NUM_NODES", "SLURM_JOB_NODELIST",
                "SLURM_NODELIST", "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> tp.Iterator[None]:
    # set_distrib_env writes os.environ itself: restore all of it afterwards.
    saved = dict(os.environ)
    for name in DISTRIB_VARS:
        monkeypatch.delenv(name, raising=False)
    yield
    os.environ.clear()
    os.environ.update(saved)


def make_xp(tmp_path: Path, delta: list[tp.Any] | None = None, **dora: tp.Any) -> XP:
    conf = DoraConfig(dir=tmp_path / "outputs")
    for key, value in dora.items():
        setattr(conf, key, value)
    return XP(dora=conf, cfg=None, argv=[], delta=delta or [("lr", 0.1)])


# -- host lists -------------------------------------------------------------------------------

@pytest.mark.parametrize("text,hosts", [
    ("localhost", ["localhost"]),
    ("node[01-04],gpu7", ["node01", "node02", "node03", "node04", "gpu7"]),
    ("gpu7,node[1-2]", ["gpu7", "node1", "node2"]),
    ("n[8-11]", ["n8", "n9", "n10", "n11"]),
    ("n[008-010]", ["n008", "n009", "n010"]),
    ("n[1,3-4,7]", ["n1", "n3", "n4", "n7"]),
    ("rack[1-2]-n[3,5]", ["rack1-n3", "rack1-n5", "rack2-n3", "rack2-n5"]),
    ("a[1-2]-ib,b", ["a1-ib", "a2-ib", "b"]),
    ("learnfair[0123,0456-0457]", ["learnfair0123", "learnfair0456", "learnfair0457"]),
])
def test_parse_hostlist(text: str, hosts: list[str]) -> None:
    assert parse_hostlist(text) == hosts


@pytest.mark.parametrize("text", ["node[1-2", "node1-2]", "node[a-b]", "node[5-3]", "n[1-2,]"])
def test_parse_hostlist_rejects_malformed_lists(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hostlist(text)


def test_parse_hostlist_matches_submitit() -> None:
    from submitit.slurm.slurm import _parse_node_list

    for text in ("node[01-04],gpu7", "a[1-2]-ib,b", "n[008-010]", "x,y[1,3-4]"):
        assert parse_hostlist(text) == _parse_node_list(text)


# -- the distributed spec and environment ---------------------------------------------------------

def test_spec_from_env_then_slurm_then_single(monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_distrib_spec() == distrib.DistribSpec(0, 1, 0, 0, 1, "empty")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NODEID", "2")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "4")
    assert get_distrib_spec() == distrib.DistribSpec(5, 8, 1, 2, 4, "slurm")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert get_distrib_spec() == distrib.DistribSpec(3, 4, 3, 0, 1, "env")  # env wins
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert get_distrib_spec().local_rank == 0
    assert (distrib.rank(), distrib.world_size(), distrib.is_master()) == (3, 4, False)


def test_master_port_is_doras_and_separates_xps_and_jobs() -> None:
    # Dora: random.Random(xp.sig + job_id).randint(20000, 60000).
    assert master_port("abcd1234", "777") == random.Random("abcd1234777").randint(20000, 60000)
    ports = {master_port(sig, job) for sig in ("abcd1234", "00ff00ff") for job in ("1", "2")}
    assert len(ports) == 4
    assert all(20000 <= port <= 60000 for port in ports)
    assert master_port("abcd1234") == master_port("abcd1234", None)


def test_slurm_job_id_of_array_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    assert distrib.slurm_job_id() is None
    monkeypatch.setenv("SLURM_JOB_ID", "1007")
    assert distrib.slurm_job_id() == "1007"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "1000")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    assert distrib.slurm_job_id() == "1000_7"  # as submitit's JobEnvironment.job_id


def test_set_distrib_env_single_worker_changes_nothing() -> None:
    set_distrib_env()
    assert not {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"} & set(os.environ)


def test_set_distrib_env_from_slurm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key, value in dict(SLURM_PROCID="3", SLURM_NTASKS="8", SLURM_LOCALID="1",
                           SLURM_NODEID="1", SLURM_JOB_NUM_NODES="2", SLURM_JOB_ID="4242",
                           SLURM_JOB_NODELIST="gpu[07-08]").items():
        monkeypatch.setenv(key, value)
    xp = make_xp(tmp_path)
    with xp.enter():
        spec = set_distrib_env()
    assert spec.source == "slurm"
    assert os.environ["MASTER_ADDR"] == "gpu07"
    assert os.environ["MASTER_PORT"] == str(master_port(xp.sig, "4242"))
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == \
        ("3", "8", "1")
    # Another XP on the same node, in another job: another port.
    monkeypatch.delenv("MASTER_PORT")
    monkeypatch.setenv("SLURM_JOB_ID", "4243")
    with make_xp(tmp_path, [("lr", 0.2)]).enter():
        set_distrib_env()
    assert os.environ["MASTER_PORT"] != str(master_port(xp.sig, "4242"))


def test_set_distrib_env_keeps_given_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in dict(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", MASTER_ADDR="10.0.0.1",
                           MASTER_PORT="29500", SLURM_JOB_NODELIST="other").items():
        monkeypatch.setenv(key, value)
    set_distrib_env()
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("10.0.0.1", "29500")


def test_set_distrib_env_forced_single_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DORA_FORCE_DISTRIB", "1")
    set_distrib_env()
    assert os.environ["MASTER_ADDR"] == "127.0.0.1"
    assert 20000 <= int(os.environ["MASTER_PORT"]) <= 60000
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"]) == ("0", "1")


def test_set_distrib_env_multi_node_needs_a_master(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in dict(SLURM_PROCID="0", SLURM_NTASKS="16",
                           SLURM_JOB_NUM_NODES="2").items():
        monkeypatch.setenv(key, value)
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        set_distrib_env()


def test_force_distrib_values(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not distrib.force_distrib()
    monkeypatch.setenv("ADORA_FORCE_DISTRIB", "0")
    assert not distrib.force_distrib()
    monkeypatch.setenv("ADORA_FORCE_DISTRIB", "1")
    assert distrib.force_distrib()


# -- init ------------------------------------------------------------------------------------

class FakeDist:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tp.Any]] = []
        self.initialized = False

    def is_initialized(self) -> bool:
        return self.initialized

    def init_process_group(self, **kwargs: tp.Any) -> None:
        self.calls.append(("init_process_group", kwargs))

    def barrier(self) -> None:
        self.calls.append(("barrier", None))


def test_init_skips_a_single_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    fake = FakeDist()
    monkeypatch.setattr(torch.distributed, "is_initialized", fake.is_initialized)
    monkeypatch.setattr(torch.distributed, "init_process_group", fake.init_process_group)
    distrib.init()
    assert fake.calls == []


def test_init_sets_the_cuda_device_and_uses_env(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    fake = FakeDist()
    devices: list[int] = []
    monkeypatch.setattr(torch.distributed, "is_initialized", fake.is_initialized)
    monkeypatch.setattr(torch.distributed, "init_process_group", fake.init_process_group)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", devices.append)
    for key, value in dict(SLURM_PROCID="2", SLURM_NTASKS="4", SLURM_LOCALID="2",
                           SLURM_JOB_ID="99", SLURM_JOB_NODELIST="node[3-4]").items():
        monkeypatch.setenv(key, value)
    xp = make_xp(tmp_path)
    with xp.enter():
        distrib.init()
    assert devices == [2]
    assert fake.calls == [("init_process_group", dict(backend="nccl", init_method="env://",
                                                       world_size=4, rank=2))]
    assert os.environ["MASTER_ADDR"] == "node3"
    assert os.environ["MASTER_PORT"] == str(master_port(xp.sig, "99"))


def test_init_with_rendezvous_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    fake = FakeDist()
    monkeypatch.setattr(torch.distributed, "is_initialized", fake.is_initialized)
    monkeypatch.setattr(torch.distributed, "init_process_group", fake.init_process_group)
    monkeypatch.setattr(torch.distributed, "barrier", fake.barrier)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    xp = make_xp(tmp_path, use_rendezvous=True)
    xp.folder.mkdir(parents=True)
    xp.rendezvous_file.write_text("")
    with xp.enter():
        distrib.init("gloo")
    assert fake.calls == [
        ("init_process_group", dict(backend="gloo", world_size=2, rank=0,
                                    init_method="file://" + str(xp.rendezvous_file))),
        ("barrier", None)]
    assert "MASTER_PORT" not in os.environ  # no env:// rendezvous
    assert not xp.rendezvous_file.exists()  # rank 0 deletes it once everyone is in


SCRIPT = textwrap.dedent("""
    import json, os, sys, warnings
    warnings.filterwarnings("ignore")
    import torch, torch.distributed as dist
    from adora import distrib
    from adora.conf import DoraConfig
    from adora.xp import XP

    xp = XP(dora=DoraConfig(dir=sys.argv[1], use_rendezvous=sys.argv[2] == "file"),
            cfg=None, argv=[], delta=[("x", 1)])
    xp.folder.mkdir(parents=True, exist_ok=True)
    with xp.enter():
        distrib.init()  # nccl without CUDA: gloo
        value = torch.tensor([float(distrib.rank() + 1)])
        if distrib.world_size() > 1:
            dist.all_reduce(value)
        out = dict(rank=distrib.rank(), world=distrib.world_size(), sum=value.item(),
                   init=dist.is_initialized(), backend=dist.get_backend() if
                   dist.is_initialized() else None, port=os.environ.get("MASTER_PORT"))
        print(json.dumps(out))
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
""")


@pytest.mark.parametrize("rendezvous", ["env", "file"])
def test_init_two_real_processes(tmp_path: Path, rendezvous: str) -> None:
    pytest.importorskip("torch")
    import json

    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    folder = tmp_path / "outputs"
    (folder / "xps").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in DISTRIB_VARS}
    env.update(WORLD_SIZE="2", MASTER_ADDR="127.0.0.1")
    if rendezvous == "env":
        from adora.ddp import free_port

        env["MASTER_PORT"] = str(free_port())
    procs = [subprocess.Popen([sys.executable, str(script), str(folder), rendezvous],
                              env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                              stdout=subprocess.PIPE, text=True) for rank in range(2)]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert [(o["rank"], o["world"], o["sum"], o["backend"]) for o in outs] == \
        [(0, 2, 3.0, "gloo"), (1, 2, 3.0, "gloo")]
    [xp_folder] = (folder / "xps").iterdir()
    assert not (xp_folder / "rendezvous.txt").exists()  # deleted after the barrier
    ports = {o["port"] for o in outs}
    assert ports == ({env["MASTER_PORT"]} if rendezvous == "env" else {None})


def test_init_forced_single_worker(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import json

    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in DISTRIB_VARS}
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "o"), "env"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert json.loads(one.stdout) == dict(rank=0, world=1, sum=1.0, init=False, backend=None,
                                          port=None)
    forced = subprocess.run([sys.executable, str(script), str(tmp_path / "o"), "env"],
                            env={**env, "DORA_FORCE_DISTRIB": "1"}, capture_output=True,
                            text=True, timeout=120)
    out = json.loads(forced.stdout)
    assert (out["init"], out["world"], out["backend"]) == (True, 1, "gloo")
    assert 20000 <= int(out["port"]) <= 60000


# -- torch stays out of `import adora` -------------------------------------------------------------

def test_import_adora_and_help_import_no_torch(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import sys
        import adora, adora.distrib, adora.log, adora.ddp, adora.snapshot, adora.git_save
        from adora import distrib
        assert distrib.rank() == 0 and distrib.world_size() == 1 and distrib.is_master()
        from adora.cli import main
        for args in (["--help"], ["run", "--help"], ["grid", "--help"]):
            try:
                main(args)
            except SystemExit as exc:
                assert exc.code == 0, (args, exc.code)
        heavy = sorted(m for m in ("torch", "numpy", "hydra") if m in sys.modules)
        print("HEAVY", heavy)
    """)
    env = {k: v for k, v in os.environ.items() if k not in DISTRIB_VARS}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    assert "--ddp-workers" in proc.stdout and "--git-save" in proc.stdout
    assert "--no-git-save" in proc.stdout


# -- adora.log: Dora's progress lines ---------------------------------------------------------

@pytest.mark.parametrize("speed,time_per_it,text", [
    (2.0, False, "2.00 it/sec"),
    (0.05, False, "20.0 sec/it"),
    (0.5, True, "2.00 sec/it"),
    (4.0, True, "250.0 ms/it"),
    (1e-5, False, "oo sec/it"),
    (1e-5, True, "oo sec/it"),
])
def test_speed_text_as_dora(speed: float, time_per_it: bool, text: str) -> None:
    from adora.log import format_speed

    assert format_speed(speed, time_per_it) == text


def test_progress_speed_counts_the_finished_iteration(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import adora.log

    clock = iter([100.0, 103.0])  # start, then the line at index 5: 6 iterations in 3 s

    class FakeTime:
        @staticmethod
        def time() -> float:
            return next(clock)

    monkeypatch.setattr(adora.log, "time", FakeTime)
    logger = logging.getLogger("adora.tests.speed")
    caplog.set_level(logging.INFO, logger="adora.tests.speed")
    progress = adora.log.LogProgress(logger, range(10), updates=2, name="train")
    for i in progress:
        progress.update(loss=i)
    assert [r.getMessage() for r in caplog.records if r.name == "adora.tests.speed"] == \
        ["train | 5/10 | 2.00 it/sec | Loss 5"]


def test_setup_and_disable_logging_touch_only_adora_logger() -> None:
    import logging

    from adora.log import disable_logging, setup_logging

    root_handlers = list(logging.getLogger().handlers)
    before = list(logging.getLogger("adora").handlers)
    setup_logging(verbose=True)
    try:
        setup_logging()  # idempotent: one handler
        assert len(logging.getLogger("adora").handlers) == len(before) + 1
        assert logging.getLogger().handlers == root_handlers
    finally:
        disable_logging()
    assert logging.getLogger("adora").handlers == before
    assert logging.getLogger().handlers == root_handlers
