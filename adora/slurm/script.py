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


def sbatch_script(job: RemoteJob, slurm: SlurmConfig, *, link: int = 0) -> str:
    """The full batch script for ``job`` with ``slurm``'s resources.

    ``link``: which job of a chain of ``slurm.dependents + 1`` dependent jobs this
    script is for (Dora's ``dependents``). All but the last are never requeued (the
    next one takes over). Link k is submitted with ``--dependency=afternotok:`` and
    the ids of every link before it (given to ``sbatch`` on its command line), and
    ``--kill-on-invalid-dep=yes``: once one link completes, Slurm cancels every later
    one (DependencyNeverSatisfied). Naming only the link just before would not do:
    that cancellation counts as "not ok", and the link after it would run.
    """
    array = array_spec(job.count, slurm.array_parallelism) if job.array else None
    last = link >= slurm.dependents
    lines = ["#!/bin/bash"]
    lines += sbatch_directives(slurm, job_name=job.job_name, output=job.log_pattern,
                               array=array, requeue=last, dependent=link > 0)
    lines += ["", "# Environment (from the cluster's configuration)."]
    lines += list(job.activate)
    lines += list(slurm.setup)
    params = submitit_parameters(slurm, job_name=job.job_name, cwd=job.code_dir)
    srun = ["srun", "--unbuffered", *params.get("srun_args", [])]
    run = [job.python, "-m", "adora.job", "--argv-file", job.argv_file,
           "--package", job.package, "--main-module", job.main_module,
           "--max-requeue", str(slurm.max_num_timeout if last else 0)]
    lines += [
        "",
        f"export _ADORA_ORIGINAL_DIR={shlex.quote(job.original_dir)}",
        "export PYTHONUNBUFFERED=1",
        f"cd {shlex.quote(job.code_dir)}",
        f"exec {shlex.join(srun + run)} --index \"${{SLURM_ARRAY_TASK_ID:-0}}\"",
        "",
    ]
    return "\n".join(lines)
