"""Distributed-training helpers: who am I among the workers of one XP, and DDP set-up.

Values come from the environment (RANK, WORLD_SIZE, LOCAL_RANK, set by
``adora run -d``, torchrun or the user), else from the Slurm job (one task per
GPU), else a single worker. Once training code has initialised
``torch.distributed``, `rank` and `world_size` ask torch.

torch is imported only inside `init` (and `set_distrib_env` for CUDA): ``import
adora`` never imports it. Training code written for Dora works as is::

    from adora import distrib

    distrib.init()                       # no-op for a single worker
    model = DistributedDataParallel(model) if distrib.world_size() > 1 else model
    if distrib.is_master():
        save_checkpoint()
"""

from __future__ import annotations

import logging
import os
import random
import re
import sys
import typing as tp
from dataclasses import dataclass

__all__ = ["DistribSpec", "force_distrib", "get_distrib_spec", "init", "is_master",
           "master_port", "parse_hostlist", "rank", "set_distrib_env", "slurm_job_id",
           "world_size"]

logger = logging.getLogger(__name__)

#: Ports `master_port` picks from, as Dora.
PORT_RANGE = (20000, 60000)


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


def force_distrib() -> bool:
    """True when ``ADORA_FORCE_DISTRIB`` (or Dora's ``DORA_FORCE_DISTRIB``) asks for
    distributed initialisation even with a single worker."""
    for name in ("ADORA_FORCE_DISTRIB", "DORA_FORCE_DISTRIB"):
        if os.environ.get(name, "") not in ("", "0"):
            return True
    return False


# -- Slurm host lists ------------------------------------------------------------------------

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def _split_top(text: str) -> list[str]:
    # Split on commas that are not inside brackets.
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"Unbalanced ']' in host list {text!r}")
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"Unbalanced '[' in host list {text!r}")
    parts.append(text[start:])
    return [p for p in parts if p]


def _expand_ranges(body: str, text: str) -> list[str]:
    values = []
    for item in body.split(","):
        match = _RANGE.match(item.strip())
        if not match:
            raise ValueError(f"Invalid range {item!r} in host list {text!r}")
        low, high = match[1], match[2] or match[1]
        width = len(low) if low.startswith("0") or (match[2] and len(low) == len(high)) else 0
        if int(high) < int(low):
            raise ValueError(f"Decreasing range {item!r} in host list {text!r}")
        values += [str(n).zfill(width) for n in range(int(low), int(high) + 1)]
    return values


def _expand_host(pattern: str, text: str) -> list[str]:
    # "a[1-2]b[3,5]" -> a1b3 a1b5 a2b3 a2b5 (Slurm allows several bracket groups).
    start = pattern.find("[")
    if start < 0:
        return [pattern]
    end = pattern.find("]", start)
    if end < 0:
        raise ValueError(f"Unbalanced '[' in host list {text!r}")
    prefix, rest = pattern[:start], pattern[end + 1:]
    tails = _expand_host(rest, text)
    return [prefix + value + tail for value in _expand_ranges(pattern[start + 1:end], text)
            for tail in tails]


def parse_hostlist(text: str) -> list[str]:
    """Expand a Slurm host list: ``"node[01-03,07],gpu7"`` -> node01 node02 node03 node07 gpu7.

    Zero padding is kept; several bracket groups in one name are expanded in order.
    Raises `ValueError` on a malformed list. Pure.
    """
    hosts: list[str] = []
    for part in _split_top(text.strip()):
        hosts += _expand_host(part.strip(), text)
    return hosts


# -- Rendezvous environment ------------------------------------------------------------------

def slurm_job_id() -> str | None:
    """The id of the Slurm job (``<array>_<task>`` for array tasks, as submitit), or None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def master_port(sig: str, job_id: str | None = None) -> int:
    """A port in 20000-60000 derived from the XP signature and the Slurm job id.

    The same for every worker of one job; two XPs, or two jobs of one XP, on one
    node get different ports (barring a 1 in 40,000 coincidence). The same value
    as Dora for the same signature and job. Pure.
    """
    return random.Random(sig + (job_id or "")).randint(*PORT_RANGE)


def _current_sig() -> str:
    from .xp import get_xp, is_xp

    return get_xp().sig if is_xp() else ""


def set_distrib_env() -> DistribSpec:
    """Export MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK and LOCAL_RANK for ``env://``.

    Values already in the environment win. Otherwise ``MASTER_ADDR`` is the first
    node of ``SLURM_JOB_NODELIST`` (127.0.0.1 for a single node outside Slurm) and
    ``MASTER_PORT`` comes from `master_port` (XP signature and Slurm job id). Call it
    yourself only when another framework initialises ``torch.distributed``;
    `init` calls it. Does nothing for a single worker unless forced. Returns the spec.
    """
    spec = get_distrib_spec()
    if spec.world_size == 1 and not force_distrib():
        return spec
    if "MASTER_ADDR" not in os.environ:
        nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
        if nodelist:
            os.environ["MASTER_ADDR"] = parse_hostlist(nodelist)[0]
        elif spec.num_nodes == 1:
            os.environ["MASTER_ADDR"] = "127.0.0.1"
        else:
            raise RuntimeError(
                f"Cannot find the master node of this {spec.num_nodes}-node job: set "
                "MASTER_ADDR (and MASTER_PORT), or run it under Slurm.")
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(master_port(_current_sig(), slurm_job_id()))
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        os.environ["WORLD_SIZE"] = str(spec.world_size)
        os.environ["RANK"] = str(spec.rank)
        os.environ["LOCAL_RANK"] = str(spec.local_rank)
    return spec


def init(backend: str = "nccl") -> None:
    """Initialise ``torch.distributed`` for this XP; a no-op for a single worker.

    ``ADORA_FORCE_DISTRIB=1`` (or ``DORA_FORCE_DISTRIB=1``) initialises even a
    single worker. With CUDA, the worker's device is ``cuda:LOCAL_RANK``; without
    it, ``nccl`` falls back on ``gloo``. The rendezvous is ``env://`` (see
    `set_distrib_env`), or the file ``<xp folder>/rendezvous.txt`` when
    ``DoraConfig.use_rendezvous``; that file is deleted once every worker is in.
    """
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    spec = get_distrib_spec()
    if spec.world_size == 1 and not force_distrib():
        logger.info("world_size is 1, skipping init.")
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(spec.local_rank)
    elif backend == "nccl":
        logger.warning("CUDA is not available: using the gloo backend instead of nccl.")
        backend = "gloo"
    from .xp import get_xp, is_xp

    xp = get_xp() if is_xp() else None
    use_file = xp is not None and xp.dora.use_rendezvous
    if use_file:
        assert xp is not None
        init_method = "file://" + os.path.abspath(xp.rendezvous_file)
    else:
        set_distrib_env()
        init_method = "env://"
    dist.init_process_group(backend=backend, init_method=init_method,
                            world_size=spec.world_size, rank=spec.rank)
    logger.info("Distributed init: %d/%d (local %d) from %s",
                spec.rank, spec.world_size, spec.local_rank, spec.source)
    if use_file:
        assert xp is not None
        dist.barrier()
        if rank() == 0:
            xp.rendezvous_file.unlink(missing_ok=True)


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
