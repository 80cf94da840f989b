"""Record tests/data/slurm/{squeue,sacct}.txt on the real test cluster.

    python -m adora.testing.slurm_cluster start
    SLURM_CONF=/tmp/adora-slurm/etc/slurm.conf python tests/data/slurm/record.py

Runs the scenario the parser tests read: a 3-task array that completed, a 6-task
array throttled to 2 running (``%2``), a job that exits 3, a cancelled job and a
running job whose name holds the separator. The output of adora's own
``squeue_command``/``sacct_command`` is kept for these jobs only, with job ids
renumbered to the fixed ones the tests name (82, 91-94; other task ids from 95):
nothing else is changed. Every job it submitted is cancelled at the end.
"""

from __future__ import annotations

import re
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

from adora.slurm import commands as c

HERE = Path(__file__).parent


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def sbatch(*args: str) -> str:
    return c.parse_sbatch(sh("sbatch", "--parsable", "--time=10", *args))


def squeue() -> str:
    return sh(*c.squeue_command("root"))


def main() -> None:
    done = sbatch("--array=0-2", "-J", "adora_dde5f5df07df", "--wrap", "true")
    fail = sbatch("-J", "adora_fail", "--wrap", "sleep 1; exit 3")
    rec = sbatch("--array=0-5%2", "-J", "adora_rec1", "--wrap", "sleep 300")
    cancel = sbatch("-J", "adora_cancel", "--wrap", "sleep 300")
    weird = sbatch("-J", "weird|name", "--wrap", "sleep 300")
    ours = {done: "82", rec: "91", fail: "92", cancel: "93", weird: "94"}
    try:
        sh("scancel", cancel)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            entries = c.parse_squeue(squeue())
            ready = [entries.get(k) for k in (f"{rec}_0", f"{rec}_1", weird, fail, f"{done}_2")]
            if all(e is not None for e in ready) and [e.state.value for e in ready] == [
                    "RUNNING", "RUNNING", "RUNNING", "FAILED", "COMPLETED"]:
                break
            time.sleep(0.5)
        else:
            raise SystemExit("the scenario did not reach its states in 120 s")
        time.sleep(3)  # the running jobs have used a few seconds
        renumber: dict[str, str] = dict(ours)
        extra = iter(range(95, 10_000))

        def new_id(job_id: str) -> str:
            if job_id not in renumber:
                renumber[job_id] = str(next(extra))
            return renumber[job_id]

        lines = []
        for line in squeue().splitlines():
            job, array, task, rest = line.split(c.SEP, 3)
            if array in ours:
                lines.append(c.SEP.join([new_id(job), ours[array], task, rest]))
        (HERE / "squeue.txt").write_text("\n".join(lines) + "\n")
        start = datetime.now() - timedelta(hours=1)
        acct = sh(*c.sacct_command(list(ours), start, datetime.now() + timedelta(days=1)))
        lines = []
        for line in acct.splitlines():
            job, rest = line.split(c.SEP, 1)
            base = re.match(r"\d+", job)
            if base and base.group(0) in ours:
                lines.append(ours[base.group(0)] + job[base.end():] + c.SEP + rest)
        (HERE / "sacct.txt").write_text("\n".join(lines) + "\n")
    finally:
        sh("scancel", *ours)


if __name__ == "__main__":
    main()
