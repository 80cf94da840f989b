"""What runs inside a job: the package's ``main`` in one XP, without the CLI's weight.

``python -m adora.job --package P --main-module M -- ARGV...`` (local jobs) or
``... --argv-file F --index I`` (jobs adora submits with its own sbatch script:
``F`` is a JSON list, one argv per array index, so no argument ever goes
through a shell). Under Slurm, SIGUSR2 before the time limit runs the
registered preemption callbacks and requeues the job (up to
``--max-requeue`` times); on restart it resumes from the XP folder.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import types
import typing as tp

__all__ = ["main"]


def _job_id() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def _on_usr2(max_requeue: int) -> tp.Callable[[int, types.FrameType | None], None]:
    def handler(signum: int, frame: types.FrameType | None) -> None:
        from .backends.slurm_job import _callbacks

        for callback in _callbacks:
            callback()
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        job_id = _job_id()
        is_leader = os.environ.get("SLURM_PROCID", "0") == "0"
        if is_leader and job_id and restarts < max_requeue:
            print(f"adora: time limit or preemption; requeueing job {job_id} "
                  f"(restart {restarts + 1}/{max_requeue})", flush=True)
            subprocess.run(["scontrol", "requeue", job_id], check=False)
        else:
            print("adora: time limit or preemption; not requeueing", flush=True)
    return handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser("adora.job")
    parser.add_argument("--argv-file")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--package", required=True)
    parser.add_argument("--main-module", required=True)
    parser.add_argument("--max-requeue", type=int, default=20)
    parser.add_argument("xp_argv", nargs="*", help="The XP's arguments, after --.")
    args = parser.parse_args(argv)
    if args.argv_file is not None:
        with open(args.argv_file) as f:
            xp_argv = [str(a) for a in json.load(f)[args.index]]
    else:
        xp_argv = list(args.xp_argv)
    if os.environ.get("SLURM_JOB_ID"):
        signal.signal(signal.SIGUSR2, _on_usr2(args.max_requeue))
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    from .distrib import get_distrib_spec
    from .package import load_main
    from .run import run_xp

    spec = get_distrib_spec()
    os.environ.setdefault("RANK", str(spec.rank))
    os.environ.setdefault("WORLD_SIZE", str(spec.world_size))
    os.environ.setdefault("LOCAL_RANK", str(spec.local_rank))
    run_xp(load_main(args.package, args.main_module), xp_argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
