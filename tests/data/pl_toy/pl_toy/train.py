"""A tiny Lightning 2.x training on generated data, run as an adora XP (tests)."""

import argparse
import os

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from adora import argparse_main, distrib, get_xp
from adora.lightning import trainer_from_argparse_args

parser = argparse.ArgumentParser("pl_toy")
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--max_epochs", type=int, default=3)


def data(seed: int, n: int = 64) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.1 * torch.randn(n, generator=gen)
    return TensorDataset(x, y[:, None])


class Regressor(LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, index):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch, index):
        x, y = batch
        self.log("valid_loss", torch.nn.functional.mse_loss(self.layer(x), y), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


@argparse_main(parser=parser, dir="./outputs")
def main():
    xp = get_xp()
    args = xp.cfg
    torch.manual_seed(0)
    print(f"worker {distrib.rank()}/{distrib.world_size()} "
          f"RANK={os.environ.get('RANK')} start_history={len(xp.link.history)}", flush=True)
    checkpoint = ModelCheckpoint(dirpath=xp.folder, save_last=True)
    trainer = trainer_from_argparse_args(
        args, callbacks=[checkpoint], accelerator="cpu", enable_progress_bar=False,
        enable_model_summary=False, logger=False,
        # PL_TOY_STOP_AFTER=N: stop after N epochs, as a preempted job would.
        max_epochs=int(os.environ.get("PL_TOY_STOP_AFTER", 0)) or args.max_epochs)
    model = Regressor(args.lr)
    trainer.fit(model, DataLoader(data(1), batch_size=16), DataLoader(data(2), batch_size=32))
    print(f"worker {trainer.global_rank}/{trainer.world_size} strategy "
          f"{type(trainer.strategy).__name__} epochs {trainer.current_epoch} "
          f"history {len(xp.link.history)}", flush=True)
