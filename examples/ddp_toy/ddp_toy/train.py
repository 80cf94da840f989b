"""Data-parallel linear regression with torch.distributed, written as a Dora package.

Every worker draws its own batches, gradients are averaged with an all-reduce
(gloo on CPU, nccl on GPUs), and only rank 0 writes metrics and checkpoints.
``git_save=True``: grids run every XP from a snapshot of this code.

    adora run -d --ddp-workers 2 -- --epochs 3      # two local workers
    adora grid sweep                                # the grid in grids/sweep.py
"""

import argparse
import logging
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")  # CPU wheel, no numpy

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from adora import argparse_main, distrib, get_xp  # noqa: E402
from adora.log import LogProgress  # noqa: E402

logger = logging.getLogger(__name__)

parser = argparse.ArgumentParser("ddp_toy")
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=4)
parser.add_argument("--steps", type=int, default=20, help="Steps per epoch.")
parser.add_argument("--batch", type=int, default=32)
parser.add_argument("--dim", type=int, default=8)
parser.add_argument("--seed", type=int, default=42)
parser.add_argument("--step_time", type=float, default=0.0,
                    help="Extra seconds per step, to watch a run progress.")
parser.add_argument("--fail_rank", type=int, default=-1,
                    help="This rank crashes at the end of the first epoch (tests).")


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    if distrib.world_size() > 1:
        dist.all_reduce(tensor)
        tensor /= distrib.world_size()
    return tensor


@argparse_main(parser=parser, dir="./outputs", exclude=["step_time"], git_save=True)
def main():
    rank = distrib.get_distrib_spec().rank
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank {rank}: %(message)s")
    distrib.init(backend="nccl" if torch.cuda.is_available() else "gloo")
    xp = get_xp()
    args = xp.cfg
    rank, world = distrib.rank(), distrib.world_size()
    true_w = torch.linspace(-1, 1, args.dim)
    w = torch.zeros(args.dim)
    checkpoint = xp.folder / "checkpoint.th"
    start = len(xp.link.history)
    if start and checkpoint.exists():
        w = torch.load(checkpoint)["w"]
        logger.info("Resuming %s at epoch %d", xp.sig, start)
    # Each rank its own data; the same stream again after a restart.
    gen = torch.Generator().manual_seed(args.seed * 1000 + rank)
    for _ in range(start * args.steps):
        torch.randn(args.batch, args.dim, generator=gen)
    for epoch in range(start, args.epochs):
        progress = LogProgress(logger, range(args.steps), updates=2, name=f"Epoch {epoch + 1}")
        for _ in progress:
            x = torch.randn(args.batch, args.dim, generator=gen)
            y = x @ true_w
            grad = 2 * x.T @ (x @ w - y) / args.batch
            all_reduce_mean(grad)  # the same update on every rank
            w -= args.lr * grad
            progress.update(error=f"{(w - true_w).norm().item():.4f}")
            if args.step_time:
                import time

                time.sleep(args.step_time)
        if rank == args.fail_rank:
            raise RuntimeError(f"rank {rank} fails on purpose")
        loss = all_reduce_mean(((w - true_w) ** 2).sum().reshape(1))
        ranks = torch.tensor([float(rank + 1)])
        if world > 1:
            dist.all_reduce(ranks)  # 1 + 2 + ... + world: every rank took part
        if distrib.is_master():
            torch.save({"w": w}, checkpoint)
            xp.link.push_metrics({"epoch": epoch + 1, "loss": loss.item(),
                                  "world_size": world, "rank_sum": ranks.item()})
        logger.info("epoch %d loss %.6f", epoch + 1, loss.item())
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
