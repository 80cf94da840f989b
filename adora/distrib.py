"""Distributed-training helpers: who am I among the workers of one XP.

Values come from the environment (RANK, WORLD_SIZE, LOCAL_RANK) and, once
training code has initialised ``torch.distributed``, from torch. torch is never
imported here unless training code asks for it.
"""

from __future__ import annotations

import os
import sys
import typing as tp
from dataclasses import dataclass

__all__ = ["DistribSpec", "get_distrib_spec", "is_master", "rank", "world_size"]


@dataclass(frozen=True)
class DistribSpec:
    """Position of this process among the workers of one XP."""

    rank: int
    world_size: int
    local_rank: int
    node_rank: int
    num_nodes: int
    source: str


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None  # type: ignore[arg-type]


def get_distrib_spec() -> DistribSpec:
    """Read the distributed layout: environment first, then Slurm's, else a single worker."""
    rank_, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    if rank_ is not None and world is not None:
        local = _env_int("LOCAL_RANK")
        return DistribSpec(rank_, world, rank_ if local is None else local, 0, 1, "env")
    if "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ:
        rank_ = int(os.environ["SLURM_PROCID"])
        world = int(os.environ["SLURM_NTASKS"])
        local = _env_int("SLURM_LOCALID") or 0
        node = _env_int("SLURM_NODEID") or 0
        nodes = _env_int("SLURM_JOB_NUM_NODES") or 1
        return DistribSpec(rank_, world, local, node, nodes, "slurm")
    return DistribSpec(0, 1, 0, 0, 1, "empty")


def _torch_dist() -> tp.Any:
    torch = sys.modules.get("torch")
    dist = getattr(torch, "distributed", None) if torch is not None else None
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def rank() -> int:
    """Rank of this worker (0 when not distributed)."""
    dist = _torch_dist()
    return int(dist.get_rank()) if dist is not None else get_distrib_spec().rank


def world_size() -> int:
    """Number of workers (1 when not distributed)."""
    dist = _torch_dist()
    return int(dist.get_world_size()) if dist is not None else get_distrib_spec().world_size


def is_master() -> bool:
    """True on the worker of rank 0."""
    return rank() == 0
