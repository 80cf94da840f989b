"""Benchmark 3, Dora side: CPU of one `dora grid` monitoring refresh (run in the Dora venv).

Run from the generated project folder::

    <dora venv>/bin/python benchmarks/monitor_dora.py --package dbench --grid g1k

It builds the grid's herd with Dora's own `Shepherd`/`Launcher`, gives every XP
a ``history.json`` of ``--lines`` epochs in Dora's format (a JSON list,
``indent=2``, replaced atomically, as `dora.link.Link` writes it), runs one
refresh as warm-up, then ``--repeats`` times: appends ``--append`` epochs to
every XP (Dora rewrites the whole file on each push) and times one refresh.

A refresh is what one iteration of Dora's monitoring loop does:
``shepherd.update()`` then ``dora.grid.monitor(...)`` (names, every XP's
history through ``main.get_xp_history``, the table rendered and printed, here
to /dev/null). The history reads alone are timed too. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, os.getcwd())

from project import metrics_entry


def entry_text(entry: dict) -> str:
    # One list element as json.dump(history, f, indent=2) writes it (indented by 2).
    return "  " + json.dumps(entry, indent=2).replace("\n", "\n  ")


class HistoryWriter:
    """Writes Dora's history.json bytes quickly: element texts are cached by epoch."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def text(self, length: int) -> str:
        while len(self.texts) < length:
            self.texts.append(entry_text(metrics_entry(len(self.texts))))
        if length == 0:
            return "[]"
        return "[\n" + ",\n".join(self.texts[:length]) + "\n]"

    def write(self, path: Path, length: int) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.text(length))
        os.rename(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--package", default="dbench")
    parser.add_argument("--grid", default="g1k")
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--append", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()

    from dora.explore import Herd, Launcher
    from dora.grid import RunGridArgs, monitor
    from dora.shep import Shepherd

    train = importlib.import_module(f"{opts.package}.train")
    dmain = train.main
    explorer = importlib.import_module(f"{opts.package}.grids.{opts.grid}").explorer
    shepherd = Shepherd(dmain)
    herd = Herd()
    explorer(Launcher(shepherd, dmain.get_slurm_config(), herd))
    sheeps = list(herd.sheeps.values())

    writer = HistoryWriter()
    sample = [metrics_entry(i) for i in range(30)]
    assert writer.text(30) == json.dumps(sample, indent=2), "history.json format drifted"
    length = opts.lines
    for sheep in sheeps:
        sheep.xp.folder.mkdir(parents=True, exist_ok=True)
        writer.write(sheep.xp.history, length)
    file_size = sheeps[0].xp.history.stat().st_size

    args = RunGridArgs(monitor=False)
    sink = open(os.devnull, "w")

    def maybe_print(*parts: object, **kwargs: object) -> None:
        print(*parts, **kwargs, file=sink)  # type: ignore[call-overload]

    def refresh() -> None:
        shepherd.update()
        monitor(args, dmain, explorer, sheeps, maybe_print)

    refresh()  # warm-up (imports, page cache)
    full_cpu, full_wall, read_cpu, read_wall = [], [], [], []
    for _ in range(opts.repeats):
        length += opts.append
        for sheep in sheeps:
            writer.write(sheep.xp.history, length)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        refresh()
        full_cpu.append(time.process_time() - cpu0)
        full_wall.append(time.perf_counter() - wall0)

        length += opts.append
        for sheep in sheeps:
            writer.write(sheep.xp.history, length)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        histories = [dmain.get_xp_history(sheep.xp) for sheep in sheeps]
        read_cpu.append(time.process_time() - cpu0)
        read_wall.append(time.perf_counter() - wall0)
        bad = [len(h) for h in histories if len(h) != length]
        assert not bad, f"Dora read {bad[:3]} entries, expected {length}"

    print(json.dumps({
        "xps": len(sheeps), "lines": opts.lines, "append": opts.append, "final_lines": length,
        "history_bytes_per_xp": file_size,
        "refresh_cpu": statistics.median(full_cpu), "refresh_wall": statistics.median(full_wall),
        "read_cpu": statistics.median(read_cpu), "read_wall": statistics.median(read_wall),
        "refresh_cpu_all": full_cpu, "read_cpu_all": read_cpu,
    }))


if __name__ == "__main__":
    main()
