"""Benchmark 3, adora side: CPU of one `adora grid --watch` refresh (run in the adora venv).

Run from the generated project folder::

    <adora venv>/bin/python benchmarks/monitor_adora.py --package abench --grid g1k

It evaluates the grid (a dry run of the engine: the XPs and their job records,
if any), gives every XP ``--lines`` epochs of metrics with adora's own
`adora.link.Link`, builds a `GridWatch` and refreshes once as warm-up (the
first refresh reads everything), then ``--repeats`` times: pushes
``--append`` epochs per XP (``Link.push_metrics``) and times one refresh.

A refresh is what one iteration of ``adora grid --watch`` does:
``GridWatch.refresh()`` (job states with one batched query, metrics read
incrementally) and the table built and rendered to text. The metric reads
alone (``GridWatch.refresh_metrics``, i.e. ``MetricsTailer.refresh``) are
timed too. CPU is ``time.process_time()``, which counts every thread of the
process (the file reads run in worker threads). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, os.getcwd())

from project import metrics_entry


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--package", default="abench")
    parser.add_argument("--grid", default="g1k")
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--append", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()

    import anyio

    from adora.engine.grids import load_explorer
    from adora.engine.run import RunGridArgs, run_grid
    from adora.engine.watch import GridWatch
    from adora.link import Link
    from adora.monitor import build_table
    from adora.package import load_main

    amain = load_main(opts.package, "train")
    explorer, grid_file = load_explorer(amain, opts.grid)

    async def bench() -> dict[str, object]:
        result = await run_grid(amain, explorer, opts.grid, args=RunGridArgs(dry_run=True),
                                backend="local", grid_file=grid_file)
        sheeps = result.sheeps
        length = opts.lines
        links = []
        for sheep in sheeps:
            link = Link(sheep.xp.history)
            link.update_history([metrics_entry(i) for i in range(length)])
            links.append(link)
        files = [p for p in sheeps[0].xp.folder.iterdir() if p.name.startswith("history")]
        file_size = sum(p.stat().st_size for p in files)

        watch = GridWatch(amain, [result])

        def table_text() -> str:
            table = build_table(f"Grid {result.name}", result.explorer, sheeps, result.names,
                                result.base_name, watch.histories, cache=watch.merge_cache)
            return table.to_text()

        await watch.refresh()  # warm-up: the first refresh reads every file whole
        table_text()
        full_cpu, full_wall, read_cpu, read_wall, read_bytes = [], [], [], [], []
        for _ in range(opts.repeats):
            for step in ("full", "read"):
                for link in links:
                    for _ in range(opts.append):
                        link.push_metrics(metrics_entry(len(link.history)))
                length += opts.append
                cpu0, wall0 = time.process_time(), time.perf_counter()
                if step == "full":
                    await watch.refresh()
                    table_text()
                    full_cpu.append(time.process_time() - cpu0)
                    full_wall.append(time.perf_counter() - wall0)
                else:
                    await watch.refresh_metrics()
                    read_cpu.append(time.process_time() - cpu0)
                    read_wall.append(time.perf_counter() - wall0)
                    read_bytes.append(watch.tailer.bytes_read)
                bad = [len(watch.history(s)) for s in sheeps
                       if len(watch.history(s)) != length]
                assert not bad, f"adora read {bad[:3]} entries, expected {length}"
        return {
            "xps": len(sheeps), "lines": opts.lines, "append": opts.append, "final_lines": length,
            "history_bytes_per_xp": file_size, "history_files": sorted(p.name for p in files),
            "refresh_cpu": statistics.median(full_cpu),
            "refresh_wall": statistics.median(full_wall),
            "read_cpu": statistics.median(read_cpu), "read_wall": statistics.median(read_wall),
            "read_bytes": statistics.median(read_bytes),
            "refresh_cpu_all": full_cpu, "read_cpu_all": read_cpu,
        }

    print(json.dumps(anyio.run(bench)))


if __name__ == "__main__":
    main()
