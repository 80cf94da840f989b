"""What runs inside a job that adora submitted with its own sbatch script (remote clusters).

``python -m adora.backends.remote_job --argv-file F --index I --package P
--main-module M`` reads the XP's arguments from ``F`` (a JSON list, one argv
per array index; never through a shell), then runs the package's ``main`` in
the XP. Before the time limit Slurm sends SIGUSR2: registered preemption
callbacks run, and the job requeues itself (up to ``--max-requeue`` times);
on restart it resumes from the XP folder.
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
        from .slurm_job import _callbacks

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
    parser = argparse.ArgumentParser("adora.backends.remote_job")
    parser.add_argument("--argv-file", required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--package", required=True)
    parser.add_argument("--main-module", required=True)
    parser.add_argument("--max-requeue", type=int, default=20)
    args = parser.parse_args(argv)
    with open(args.argv_file) as f:
        all_argv = json.load(f)
    xp_argv = [str(a) for a in all_argv[args.index]]
    signal.signal(signal.SIGUSR2, _on_usr2(args.max_requeue))
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    from ..distrib import get_distrib_spec
    from ..package import load_main
    from ..run import run_xp

    spec = get_distrib_spec()
    os.environ.setdefault("RANK", str(spec.rank))
    os.environ.setdefault("WORLD_SIZE", str(spec.world_size))
    os.environ.setdefault("LOCAL_RANK", str(spec.local_rank))
    run_xp(load_main(args.package, args.main_module), xp_argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
