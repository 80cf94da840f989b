"""adora.lightning: a real Lightning 2.x Trainer run as an adora XP, on CPU, on generated
data: one process, a preempted-then-resumed run, and two DDP workers (gloo)."""

from __future__ import annotations

import argparse
import json
import shutil
import typing as tp
from pathlib import Path

import pytest

from .conftest import adora_cli

pytest.importorskip("lightning")

DATA = Path(__file__).parent / "data" / "pl_toy"


@pytest.fixture
def pl_project(tmp_path: Path) -> Path:
    root = tmp_path / "pl_toy"
    shutil.copytree(DATA, root, ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    return root


def _history(root: Path) -> list[dict]:
    (folder,) = (root / "outputs" / "xps").iterdir()
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]


def _run(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = adora_cli("-P", "pl_toy", "run", *args, cwd=root, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_epoch_metrics_keeps_epoch_values() -> None:
    import torch

    from adora.lightning import epoch_metrics

    got = epoch_metrics({"loss_step": torch.tensor(1.0), "loss_epoch": torch.tensor(0.5),
                         "valid_loss": torch.tensor(0.25), "other": "x"})
    assert got == {"loss": 0.5, "valid_loss": 0.25, "other": "x"}


def test_get_trainer_needs_an_xp_and_owns_devices(tmp_path: Path) -> None:
    from adora.conf import DoraConfig
    from adora.lightning import get_trainer
    from adora.xp import XP

    with pytest.raises(RuntimeError, match="inside an XP"):
        get_trainer(max_epochs=1)
    xp = XP(DoraConfig(dir=tmp_path), argparse.Namespace(), [], [])
    with xp.enter():
        for bad in ({"devices": 2}, {"num_nodes": 2}, {"gpus": 1}):
            with pytest.raises(RuntimeError, match="You cannot set"):
                get_trainer(**bad)
        trainer = get_trainer(max_epochs=1, accelerator="cpu", logger=False)
        assert Path(trainer.default_root_dir) == xp.folder
        assert trainer.world_size == 1


@pytest.mark.timeout(600)
def test_trainer_metrics_go_to_the_xp_and_fit_resumes(pl_project: Path) -> None:
    # Stopped after 2 epochs (as a preempted job), then run again: resumes from last.ckpt.
    out = _run(pl_project, env={"PL_TOY_STOP_AFTER": "2"})
    assert "worker 0/1 strategy SingleDeviceStrategy epochs 2 history 2" in out
    first = _history(pl_project)
    assert len(first) == 2 and set(first[0]) == {"train_loss", "valid_loss"}
    out = _run(pl_project)
    assert "start_history=2" in out
    assert "epochs 3 history 3" in out  # one more epoch, not three
    history = _history(pl_project)
    assert history[:2] == first and len(history) == 3
    assert history[2]["train_loss"] < history[0]["train_loss"]

    import torch

    (folder,) = (pl_project / "outputs" / "xps").iterdir()
    checkpoint = torch.load(folder / "last.ckpt", weights_only=True)
    assert checkpoint["dora_link_history"] == history
    assert checkpoint["dora_sig"] == folder.name


@pytest.mark.timeout(600)
def test_trainer_under_run_d_trains_with_two_ddp_workers(pl_project: Path) -> None:
    out = _run(pl_project, "-d", "--ddp-workers", "2")
    assert "worker 0/2 strategy DDPStrategy epochs 3 history 3" in out
    (folder,) = (pl_project / "outputs" / "xps").iterdir()
    assert "worker 1/2 strategy DDPStrategy epochs 3" in (folder / "worker_1.log").read_text()
    assert len(_history(pl_project)) == 3  # rank 0 alone writes the history


@pytest.mark.slurm
@pytest.mark.timeout(600)
def test_trainer_as_a_slurm_job(pl_project: Path, slurm_env: object, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    # The same training as one Slurm job on the test cluster (1 task, CPU): Lightning
    # trains in the job, its epoch metrics reach the XP's history, the XP completes.
    import sys

    import anyio

    from adora.backends.slurm import SlurmBackend
    from adora.conf import SlurmConfig
    from adora.engine.run import launch
    from adora.engine.watch import GridWatch
    from adora.package import load_main
    from adora.states import JobState

    monkeypatch.chdir(pl_project)
    monkeypatch.syspath_prepend(str(pl_project))
    monkeypatch.setenv("ADORA_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("ADORA_PACKAGE", "DORA_PACKAGE", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    main = load_main("pl_toy")
    backend = SlurmBackend(pl_project / "outputs")
    slurm = SlurmConfig(gpus=0, mem_per_gpu=None, cpus_per_gpu=1, time=10)

    async def run() -> tp.Any:
        result = await launch(main, [], slurm=slurm, backend=backend)
        (sheep,) = result.sheeps
        watch = GridWatch(main, [result])
        with anyio.fail_after(300):
            while sheep.job_state is None or not sheep.job_state.is_final or sheep.stale:
                await anyio.sleep(1)
                await watch.refresh_states()
        return sheep

    try:
        sheep = anyio.run(run)
    finally:
        for name in sys.modules.copy():
            if name == "pl_toy" or name.startswith("pl_toy."):
                del sys.modules[name]
    assert sheep.log is not None
    log = sheep.log.read_text()
    assert sheep.job_state is JobState.COMPLETED, log
    assert "worker 0/1 strategy SingleDeviceStrategy epochs 3 history 3" in log, log
    assert sheep.job is not None and sheep.job.backend == "slurm" and sheep.job.job_id
    assert sheep.log.name == f"{sheep.job.job_id}_0_log.out"  # submitit's log of that job
    history = _history(pl_project)
    assert len(history) == 3 and set(history[0]) == {"train_loss", "valid_loss"}
    assert history[2]["train_loss"] < history[0]["train_loss"]
