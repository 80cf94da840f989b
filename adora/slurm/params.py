"""From Dora's `SlurmConfig` to Slurm resources, as Dora users expect. Pure.

- ``gpus`` is the total: up to 8 on one node, above that a multiple of 8 spread
  over ``gpus // 8`` nodes; ``gpus=0`` asks for no GPU (no ``--gres``).
- one task per GPU (``ntasks-per-node = gpus per node``), or one task per node
  with ``one_task_per_node``; ``cpus_per_task`` defaults to ``cpus_per_gpu``
  (times the GPUs per node with one task per node).
- ``mem_per_gpu`` GB per GPU on a node (per node for CPU jobs); falsy: no ``--mem``.
"""

from __future__ import annotations

import os
import typing as tp
from dataclasses import dataclass

from ..conf import SlurmConfig
from ..errors import ConfigError

__all__ = ["Resources", "resources", "sbatch_directives", "submitit_parameters"]


@dataclass(frozen=True)
class Resources:
    nodes: int
    gpus_per_node: int
    ntasks_per_node: int
    cpus_per_task: int
    mem_gb: float | None


def resources(slurm: SlurmConfig) -> Resources:
    gpus = slurm.gpus
    if gpus < 0:
        raise ConfigError(f"SlurmConfig.gpus must be >= 0, got {gpus}.")
    if gpus > 8:
        if gpus % 8:
            raise ConfigError(f"SlurmConfig.gpus={gpus}: above 8, ask for a multiple of 8 "
                              "(8 GPUs per node).")
        nodes, per_node = gpus // 8, 8
    else:
        nodes, per_node = 1, gpus
    units = max(per_node, 1)
    if slurm.one_task_per_node:
        ntasks = 1
        cpus = slurm.cpus_per_task or units * slurm.cpus_per_gpu
    else:
        ntasks = units
        cpus = slurm.cpus_per_task or slurm.cpus_per_gpu
    mem = slurm.mem_per_gpu * units if slurm.mem_per_gpu else None
    return Resources(nodes, per_node, ntasks, cpus, mem)


def _nodelist(value: str | list[str] | None) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else ",".join(value)


def submitit_parameters(slurm: SlurmConfig, *, job_name: str,
                        cwd: str | None = None) -> dict[str, tp.Any]:
    """Keyword arguments for ``submitit.SlurmExecutor.update_parameters``."""
    res = resources(slurm)
    params: dict[str, tp.Any] = {
        "job_name": job_name,
        "signal_delay_s": signal_delay(slurm.time),
        "nodes": res.nodes,
        "ntasks_per_node": res.ntasks_per_node,
        "cpus_per_task": res.cpus_per_task,
        "time": slurm.time,
        "stderr_to_stdout": True,
        "array_parallelism": slurm.array_parallelism,
    }
    if res.gpus_per_node:
        params["gres"] = f"gpu:{res.gpus_per_node}"
    if res.mem_gb:
        params["mem"] = f"{_mem(res.mem_gb)}GB"
    for name in ("partition", "comment", "qos", "account", "exclude"):
        value = getattr(slurm, name)
        if value:
            params[name] = value
    if slurm.constraint:
        params["constraint"] = slurm.constraint
    if slurm.setup:
        params["setup"] = list(slurm.setup)
    srun_args = list(slurm.srun_args)
    chdir = slurm.force_chdir if slurm.force_chdir is not None else slurm.container_chdir
    if chdir:
        srun_args += ["--container-workdir", cwd or os.getcwd()]
    if srun_args:
        params["srun_args"] = srun_args
    nodelist = _nodelist(slurm.nodelist)
    if nodelist:
        params["nodelist"] = nodelist
    return params


def check_supported(slurm: SlurmConfig) -> None:
    """Refuse the `SlurmConfig` settings adora cannot honour on Slurm, rather than
    ignoring them silently. Pure.

    Every field is honoured by the Slurm and SSH backends (tests/test_slurm_params.py
    checks that each one changes what is submitted); only values that cannot mean
    anything are refused here.
    """
    dependents = slurm.dependents
    if isinstance(dependents, bool) or not isinstance(dependents, int) or dependents < 0:
        raise ConfigError(f"SlurmConfig.dependents must be an integer >= 0 (the number of "
                          f"jobs chained after the first), got {dependents!r}.")
    if slurm.max_num_timeout < 0:
        raise ConfigError(f"SlurmConfig.max_num_timeout must be >= 0, got "
                          f"{slurm.max_num_timeout}.")
    if slurm.array_parallelism < 1:
        raise ConfigError(f"SlurmConfig.array_parallelism must be >= 1, got "
                          f"{slurm.array_parallelism}.")
    resources(slurm)  # gpus


def signal_delay(minutes: int) -> int:
    """Seconds before the time limit at which the job is told to checkpoint (USR2).

    90 s as Dora, but a quarter of short limits (at least 10 s). slurmctld checks
    limits every 30 s and sends the signal at the first check within ``delay + 30``
    s of the end: a 1-minute job asked for USR2@30 was signalled at its first check,
    seconds after starting, and requeued again and again. With 15 s it is signalled
    between 15 and 45 s into its minute.
    """
    return int(min(90, max(10, minutes * 60 // 4)))


def _mem(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def sbatch_directives(slurm: SlurmConfig, *, job_name: str, output: str,
                      array: str | None = None, requeue: bool = True,
                      dependent: bool = False) -> list[str]:
    """``#SBATCH`` lines for a script adora writes itself (remote clusters).

    ``requeue=False``: a link of a chain of dependent jobs before the last (the next
    link takes over instead). ``dependent``: a later link, which Slurm kills once its
    dependency can never be satisfied (the link before it completed).
    """
    params = submitit_parameters(slurm, job_name=job_name)
    lines = [
        f"--job-name={job_name}",
        f"--output={output}",
        f"--error={output}",
        f"--nodes={params['nodes']}",
        f"--ntasks-per-node={params['ntasks_per_node']}",
        f"--cpus-per-task={params['cpus_per_task']}",
        f"--time={params['time']}",
        f"--signal=USR2@{params['signal_delay_s']}",
        "--open-mode=append",
        "--requeue" if requeue else "--no-requeue",
    ]
    if dependent:
        lines.append("--kill-on-invalid-dep=yes")
    if array is not None:
        lines.append(f"--array={array}")
    for key in ("gres", "mem", "partition", "comment", "qos", "account", "exclude",
                "constraint", "nodelist"):
        if key in params:
            lines.append(f"--{key}={params[key]}")
    for line in lines:
        if "\n" in line or "\r" in line:
            raise ConfigError(f"Slurm setting {line.split('=', 1)[0]} contains a line break.")
    return [f"#SBATCH {line}" for line in lines]
