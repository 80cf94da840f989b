"""Where the time of one `adora grid NAME` goes, phase by phase (diagnostics, ``--verbose``).

Run from the generated project folder with the adora venv::

    python benchmarks/phases_adora.py --package abench --grid g1k [--dry-run]

Replays what ``adora grid`` does after parsing its options (the same engine
calls as ``adora/cli_grid.py``), timing each phase; prints one JSON line. It
uses adora's internal modules, so it may need updating when they change.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

START = time.perf_counter()
sys.path.insert(0, os.getcwd())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--package", default="abench")
    parser.add_argument("--grid", default="g1k")
    parser.add_argument("--dry-run", action="store_true")
    opts = parser.parse_args()

    phases: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def timed(name: str, fun):  # type: ignore[no-untyped-def]
        wall0, cpu0 = time.perf_counter(), time.process_time()
        out = fun()
        phases[name] = time.perf_counter() - wall0
        cpu[name] = time.process_time() - cpu0
        return out

    def imports():  # type: ignore[no-untyped-def]
        import anyio

        from adora.backends import get_backend
        from adora.engine.grids import load_explorer
        from adora.engine.run import RunGridArgs, _evaluate_warming_up, schedule
        from adora.engine.watch import GridWatch
        from adora.monitor import build_table
        from adora.package import load_main
        return (anyio, get_backend, load_explorer, RunGridArgs, schedule, GridWatch,
                _evaluate_warming_up, build_table, load_main)

    (anyio, get_backend, load_explorer, RunGridArgs, schedule, GridWatch, evaluate, build_table,
     load_main) = timed("import adora engine", imports)
    amain = timed("load the training main", lambda: load_main(opts.package, "train"))
    explorer, grid_file = timed("import the grid", lambda: load_explorer(amain, opts.grid))
    backend = get_backend("local", root=amain.dora.dir)

    async def evaluated():  # type: ignore[no-untyped-def]
        # As `run_grid`: a child process scans the grid's XP folders meanwhile (prescan).
        return await evaluate(backend, amain, explorer, amain.get_slurm_config(), grid_file,
                              opts.grid)
    herd, scanned = timed("evaluate the grid (get_xp per XP; prescan in a child)",
                          lambda: anyio.run(evaluated))

    async def sched():  # type: ignore[no-untyped-def]
        return await schedule(amain, herd, opts.grid, backend, explorer=explorer,
                              args=RunGridArgs(dry_run=opts.dry_run), prescan=scanned)
    result = timed("schedule (records, states, plan, links)", lambda: anyio.run(sched))
    watch = GridWatch(amain, [result], just_submitted=True)
    timed("read metrics (GridWatch.refresh_metrics)", lambda: anyio.run(watch.refresh_metrics))
    table = timed("build the table (Explorer hooks)",
                  lambda: build_table(f"Grid {opts.grid}", explorer, result.sheeps,
                                      result.names, result.base_name, watch.histories))
    timed("render the table as text", table.to_text)
    print(json.dumps({"phases_wall": phases, "phases_cpu": cpu,
                      "total_in_process": time.perf_counter() - START,
                      "xps": len(result.sheeps)}))


if __name__ == "__main__":
    main()
