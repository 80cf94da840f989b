"""The sbatch script adora writes for remote clusters. Pure.

Training arguments never appear in the script: they are in a JSON file next
to it, read by the job itself, so no value is ever interpreted by a shell.
Every path and name in the script is quoted.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..conf import SlurmConfig
from .commands import array_spec
from .params import sbatch_directives, submitit_parameters

__all__ = ["RemoteJob", "sbatch_script"]


@dataclass(frozen=True)
class RemoteJob:
    """Everything the script needs, as remote paths and names."""

    job_name: str
    count: int
    array: bool
    log_pattern: str
    argv_file: str
    code_dir: str
    original_dir: str
    package: str
    main_module: str
    python: str = "python"
    activate: tuple[str, ...] = ()


def sbatch_script(job: RemoteJob, slurm: SlurmConfig) -> str:
    """The full batch script for ``job`` with ``slurm``'s resources."""
    array = array_spec(job.count, slurm.array_parallelism) if job.array else None
    lines = ["#!/bin/bash"]
    lines += sbatch_directives(slurm, job_name=job.job_name, output=job.log_pattern,
                               array=array)
    lines += ["", "# Environment (from the cluster's configuration)."]
    lines += list(job.activate)
    lines += list(slurm.setup)
    params = submitit_parameters(slurm, job_name=job.job_name)
    srun = ["srun", "--unbuffered", *params.get("srun_args", [])]
    run = [job.python, "-m", "adora.job", "--argv-file", job.argv_file,
           "--package", job.package, "--main-module", job.main_module,
           "--max-requeue", str(slurm.max_num_timeout)]
    lines += [
        "",
        f"export _ADORA_ORIGINAL_DIR={shlex.quote(job.original_dir)}",
        "export PYTHONUNBUFFERED=1",
        f"cd {shlex.quote(job.code_dir)}",
        f"exec {shlex.join(srun + run)} --index \"${{SLURM_ARRAY_TASK_ID:-0}}\"",
        "",
    ]
    return "\n".join(lines)
