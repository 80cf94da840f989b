"""Where one `adora grid` on the Slurm backend spends its time (``--verbose`` diagnostics for S1).

    ADORA_BENCH_TRACE=trace.json <adora venv>/bin/python benchmarks/trace_adora.py \\
        -P abench grid s1kv --backend slurm

adora's command line, in this process, with some engine functions wrapped to
time them, the ones that run in worker threads included (cProfile only sees the
main thread, which mostly waits for them). At exit, one entry per function
(calls, total time, first start, last end, in seconds since start-up) goes to
``$ADORA_BENCH_TRACE`` as JSON. It uses adora's internal names, so it may need
updating when they change; a name that no longer exists is skipped.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import inspect
import json
import os
import sys
import time
import typing as tp

ORIGIN = time.perf_counter()
EVENTS: list[tuple[float, float, str]] = []

#: (module, attribute path, label)
TIMED = [
    ("adora.engine.run", "run_grid", "run_grid (evaluate + schedule)"),
    ("adora.engine.run", "evaluate", "evaluate the grid"),
    ("adora.engine.run", "schedule", "schedule"),
    ("adora.engine.run", "_Acting.load_records", "load job records"),
    ("adora.engine.run", "_Acting.query", "query states"),
    ("adora.engine.grids", "set_membership", "grid membership links"),
    ("adora.engine.run", "_Acting.submit", "submit one group (intents, sbatch, records)"),
    ("adora.main", "ArgparseMain.init_xp", "init_xp (XP folder, .argv.json)"),
    ("adora.engine.run", "save_submission", "save_submission (intents, then job ids)"),
    ("adora.engine.run", "save_record", "save_record (final states)"),
    ("adora.backends.slurm", "SlurmBackend.prepare", "backend.prepare (scontrol)"),
    ("adora.backends.slurm", "SlurmBackend._submit_sync", "submitit: pickles + sbatch + links"),
    ("submitit.slurm.slurm", "SlurmExecutor._submit_command", "sbatch"),
    ("adora.engine.watch", "GridWatch.refresh_metrics", "read metrics"),
    ("adora.cli_grid", "_render", "render the table"),
]


def _wrap(module_name: str, path: str, label: str) -> None:
    try:
        owner: tp.Any = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        original = getattr(owner, name)
    except (ImportError, AttributeError):
        return
    if inspect.iscoroutinefunction(original):
        @functools.wraps(original)
        async def async_wrapper(*args: tp.Any, **kwargs: tp.Any) -> tp.Any:
            start = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                EVENTS.append((start - ORIGIN, time.perf_counter() - start, label))
        setattr(owner, name, async_wrapper)
    else:
        @functools.wraps(original)
        def wrapper(*args: tp.Any, **kwargs: tp.Any) -> tp.Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                EVENTS.append((start - ORIGIN, time.perf_counter() - start, label))
        setattr(owner, name, wrapper)


def _dump() -> None:
    path = os.environ.get("ADORA_BENCH_TRACE")
    if not path:
        return
    summary: dict[str, dict[str, float]] = {}
    for start, seconds, label in EVENTS:
        entry = summary.setdefault(label, {"calls": 0, "seconds": 0.0, "first": start,
                                           "last_end": 0.0})
        entry["calls"] += 1
        entry["seconds"] += seconds
        entry["first"] = min(entry["first"], start)
        entry["last_end"] = max(entry["last_end"], start + seconds)
    with open(path, "w") as f:
        json.dump({"total_in_process": time.perf_counter() - ORIGIN, "phases": summary}, f)


def main(argv: list[str]) -> int:
    for module_name, path, label in TIMED:
        _wrap(module_name, path, label)
    atexit.register(_dump)
    from adora.cli import main as adora_main

    sys.argv = ["adora", *argv]
    adora_main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
