"""Lightning 2.x inside adora XPs: Dora's ``dora.lightning`` for today's ``lightning``.

Replace ``lightning.Trainer(...)`` with `get_trainer` (or build it from argparse
arguments with `trainer_from_argparse_args`)::

    from adora.lightning import get_trainer

    trainer = get_trainer(max_epochs=10, callbacks=[ModelCheckpoint(save_last=True)])
    trainer.fit(model, train_loader, valid_loader)   # resumes from <xp>/last.ckpt

What it adds to a plain Trainer:

- the workers' layout comes from adora (``adora run -d``, a Slurm job, or
  RANK/WORLD_SIZE/LOCAL_RANK, see `adora.distrib`): ``devices`` and
  ``num_nodes`` are adora's to set, and several workers train with DDP
  (``gloo`` without CUDA), each process started by adora, never by Lightning;
- the metrics of each epoch (those logged with ``on_epoch=True``, ``_epoch``
  suffixes removed, tensors made floats) go to the XP's history
  (``xp.link.push_metrics``), which checkpoints carry along;
- ``trainer.fit`` resumes from ``<xp folder>/last.ckpt`` when there is one;
- Lightning's own Slurm signal handling is off: on preemption or time limit,
  adora requeues the job, and training resumes from the last end-of-epoch
  checkpoint rather than from a checkpoint taken mid-epoch.

Dora's version needs pytorch-lightning <= 1.8; this one needs ``lightning``
2.x (``pip install adora[lightning]``). It is imported only by code that uses it.
"""

from __future__ import annotations

import argparse
import os
import typing as tp
from pathlib import Path

import torch
from lightning.fabric.plugins.environments import ClusterEnvironment
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback

from . import distrib
from .xp import get_xp, is_xp

__all__ = ["AdoraEnvironment", "AdoraHistoryLogger", "CheckpointHistorySync",
           "DoraCheckpointSync", "DoraEnvironment", "DoraHistoryLogger", "get_trainer",
           "trainer_from_argparse_args"]

#: Keys under which checkpoints carry the XP's history, signature and config (Dora's).
HISTORY_KEY = "dora_link_history"
SIG_KEY = "dora_sig"
CFG_KEY = "dora_cfg"


def epoch_metrics(metrics: tp.Mapping[str, tp.Any]) -> dict[str, tp.Any]:
    """Epoch-level values of Lightning's metrics: ``*_step`` dropped, ``_epoch`` suffixes
    removed, one-element tensors made numbers. Pure."""
    out: dict[str, tp.Any] = {}
    for key, value in metrics.items():
        if key.endswith("_step"):
            continue
        if key.endswith("_epoch"):
            key = key[:-len("_epoch")]
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        out[key] = value
    return out


class AdoraEnvironment(ClusterEnvironment):
    """The workers' layout as adora started them (``run -d``, Slurm, RANK/WORLD_SIZE).

    adora (or Slurm) creates the processes; Lightning only joins them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spec = distrib.get_distrib_spec()
        distrib.set_distrib_env()  # MASTER_ADDR / MASTER_PORT, as `distrib.init` would

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        return int(os.environ.get("MASTER_PORT", "0"))

    @staticmethod
    def detect() -> bool:
        return False  # only ever given explicitly, by get_trainer

    def world_size(self) -> int:
        return self.spec.world_size

    def set_world_size(self, size: int) -> None:
        pass  # adora decided it

    def global_rank(self) -> int:
        return self.spec.rank

    def set_global_rank(self, rank: int) -> None:
        pass

    def local_rank(self) -> int:
        return self.spec.local_rank

    def node_rank(self) -> int:
        return self.spec.node_rank


class AdoraHistoryLogger(Callback):
    """Push the metrics of each training epoch to the XP's history."""

    def __init__(self) -> None:
        super().__init__()
        self.link = get_xp().link

    def on_train_epoch_end(self, trainer: Trainer, pl_module: tp.Any) -> None:
        # Here the epoch's training metrics are reduced, and this epoch's validation
        # (if any) has run: one entry per epoch, as Dora's tables expect.
        self.link.push_metrics(epoch_metrics(trainer.callback_metrics))


class CheckpointHistorySync(Callback):
    """Keep the XP's history and the checkpoints in step.

    Checkpoints carry the history; on resume, the history keeps exactly one entry
    per epoch the checkpoint completed (from the history on disk when it has them,
    else from the checkpoint).
    """

    def __init__(self) -> None:
        super().__init__()
        self.xp = get_xp()
        self._from_checkpoint: list[dict[str, tp.Any]] | None = None

    def on_save_checkpoint(self, trainer: Trainer, pl_module: tp.Any,
                           checkpoint: dict[str, tp.Any]) -> None:
        checkpoint[HISTORY_KEY] = list(self.xp.link.history)
        checkpoint[SIG_KEY] = self.xp.sig
        checkpoint[CFG_KEY] = _plain_cfg(self.xp.cfg)

    def on_load_checkpoint(self, trainer: Trainer, pl_module: tp.Any,
                           checkpoint: dict[str, tp.Any]) -> None:
        self._from_checkpoint = checkpoint.get(HISTORY_KEY)

    def on_train_start(self, trainer: Trainer, pl_module: tp.Any) -> None:
        if self._from_checkpoint is None:
            return
        # A checkpoint saved at the end of validation comes before that epoch's entry
        # was pushed: count epochs, not entries.
        done = trainer.current_epoch
        history = list(self.xp.link.history)
        if len(history) < done and len(self._from_checkpoint) > len(history):
            history = list(self._from_checkpoint)
        self.xp.link.update_history(history[:done])
        self._from_checkpoint = None


def _plain_cfg(cfg: tp.Any) -> tp.Any:
    # Plain types only: torch.load (weights_only, torch >= 2.6) refuses a Namespace.
    from .xp import jsonable

    if isinstance(cfg, argparse.Namespace):
        cfg = vars(cfg)
    try:
        return jsonable(cfg)
    except ValueError:
        return repr(cfg)


# Dora's names.
DoraEnvironment = AdoraEnvironment
DoraHistoryLogger = AdoraHistoryLogger
DoraCheckpointSync = CheckpointHistorySync

_ADORA_SETS = ("gpus", "devices", "num_nodes")
# Values of those that mean "not set" (the Trainer's defaults).
_UNSET: dict[str, tuple[tp.Any, ...]] = {"gpus": (None,), "devices": (None, "auto"),
                                         "num_nodes": (None, 1)}


class _AdoraTrainer(Trainer):
    # `fit` resumes from the XP's last checkpoint (Lightning 2 dropped the Trainer's
    # `resume_from_checkpoint`; `fit(ckpt_path=...)` replaced it).
    _adora_resume: Path | None = None

    def fit(self, *args: tp.Any, **kwargs: tp.Any) -> None:
        if kwargs.get("ckpt_path") is None and len(args) < 5 and self._adora_resume is not None:
            if self._adora_resume.is_file():
                kwargs["ckpt_path"] = str(self._adora_resume)
        super().fit(*args, **kwargs)


def get_trainer(*args: tp.Any, auto_resume: bool = True, add_dora_logger: bool = True,
                no_unfinished_epochs: bool = True, **kwargs: tp.Any) -> Trainer:
    """A `lightning.pytorch.Trainer` for the current XP; takes the Trainer's arguments.

    ``devices``, ``num_nodes`` (and the old ``gpus``) are set by adora from the
    workers it started: passing them is a `RuntimeError`, as in Dora.
    ``auto_resume``: ``fit`` resumes from ``<xp folder>/last.ckpt`` (or from the
    ``resume_from_checkpoint=`` path, Dora's keyword) unless given ``ckpt_path``;
    save it with ``ModelCheckpoint(save_last=True)``. ``add_dora_logger``: push
    each epoch's metrics to the XP's history. ``no_unfinished_epochs``: leave
    preemption to adora (no checkpoint in the middle of an epoch).
    """
    if not is_xp():
        raise RuntimeError("get_trainer() must be called from inside an XP (adora run, "
                           "adora grid, or a decorated main).")
    import inspect

    # Keywords of pytorch-lightning 1.x Trainers that Dora code may still pass.
    old: dict[str, tp.Any] = {name: kwargs.pop(name) for name in ("gpus", "resume_from_checkpoint")
           if name in kwargs}
    bound = inspect.signature(Trainer.__init__).bind_partial(None, *args, **kwargs)
    kwargs = dict(bound.arguments)
    kwargs.pop("self", None)
    kwargs.update(kwargs.pop("kwargs", {}))  # a Trainer taking **kwargs in some version
    kwargs.update(old)
    resume = kwargs.pop("resume_from_checkpoint", None)
    for name in _ADORA_SETS:
        if kwargs.pop(name, None) not in _UNSET[name]:
            raise RuntimeError(f"You cannot set `{name}`: adora sets it from the workers it "
                               "started (`adora run -d`, the Slurm job).")
    xp = get_xp()
    env = AdoraEnvironment()
    spec = env.spec
    per_node = max(1, spec.world_size // max(1, spec.num_nodes))
    plugins = kwargs.pop("plugins", None) or []
    if not isinstance(plugins, list):
        plugins = [plugins]
    strategy = kwargs.get("strategy", "auto")
    if spec.world_size > 1 and strategy in (None, "auto", "ddp"):
        from lightning.pytorch.strategies import DDPStrategy

        kwargs["strategy"] = DDPStrategy(
            cluster_environment=env,
            process_group_backend="nccl" if torch.cuda.is_available() else "gloo")
    else:
        # Always our environment: Lightning would otherwise detect Slurm and install
        # its own requeue handler (a checkpoint in the middle of an epoch).
        plugins.append(env)
    kwargs["plugins"] = plugins
    kwargs["devices"] = per_node
    kwargs["num_nodes"] = spec.num_nodes
    kwargs.setdefault("default_root_dir", str(xp.folder))
    callbacks = kwargs.pop("callbacks", None) or []
    if not isinstance(callbacks, list):
        callbacks = [callbacks]
    callbacks.append(CheckpointHistorySync())
    if add_dora_logger:
        callbacks.append(AdoraHistoryLogger())
    kwargs["callbacks"] = callbacks

    trainer = _AdoraTrainer(**kwargs)
    if auto_resume:
        trainer._adora_resume = Path(resume) if resume else xp.folder / "last.ckpt"
    if no_unfinished_epochs:
        # adora (submitit) requeues on preemption; Lightning's handlers would save a
        # mid-epoch checkpoint (or stop the run) first.
        trainer._signal_connector.register_signal_handlers = lambda: None  # type: ignore
    return trainer


def trainer_from_argparse_args(args: argparse.Namespace | tp.Any, **kwargs: tp.Any) -> Trainer:
    """`get_trainer` with the Trainer's arguments taken from ``args`` (an argparse
    namespace or a dict); ``kwargs`` win. Attributes that are not Trainer arguments
    are ignored."""
    import inspect

    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    accepted = set(inspect.signature(Trainer.__init__).parameters) - {"self"}
    accepted |= {"resume_from_checkpoint", "auto_resume", "add_dora_logger",
                 "no_unfinished_epochs"}
    params = {k: v for k, v in values.items() if k in accepted}
    params.update(kwargs)
    return get_trainer(**params)
