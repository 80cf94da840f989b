"""Benchmark S4 helpers, run in the adora venv from the generated project folder.

    python benchmarks/ssh_probe.py rtt --cluster bench --cluster direct
    python benchmarks/ssh_probe.py refresh --cluster bench --package abench --grid r1k
    ADORA_BENCH_SSH_TRACE=t.json python benchmarks/ssh_probe.py cli -P abench grid r1k --cluster b

``rtt``: for each cluster (clusters.toml), over one adora `SSHConnection`: the time
to connect, the median of 20 SFTP ``stat`` calls (one request, one reply: one
round trip) and the median of 5 ``true`` commands (a channel opened, a command run,
its exit status; several round trips).

``refresh``: what one tick of ``adora grid --watch`` costs over SSH. The grid is
run read-only (nothing submitted), then a `GridWatch` over it is refreshed twice
(`GridWatch.refresh`: states and metrics); wall time of each, and the SSH commands
each one ran (``SSHConnection.count``).

``cli``: adora's command line, in this process, with the methods of
`adora.ssh.SSHConnection` timed (``connection``, ``run``, ``stat``, ``read_file``, and
``write_file`` in versions that have it; a few microseconds each): at exit, where
the time went is written as JSON to ``$ADORA_BENCH_SSH_TRACE``. The command is
otherwise unchanged.

Prints one JSON line (``rtt``, ``refresh``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import typing as tp
from pathlib import Path


async def rtt(names: list[str]) -> dict[str, tp.Any]:
    from adora.clusters import load_cluster
    from adora.ssh import SSHConnection

    out: dict[str, tp.Any] = {}
    for name in names:
        conn = SSHConnection(load_cluster(name, Path.cwd()))
        try:
            start = time.perf_counter()
            await conn.connection()
            connect = time.perf_counter() - start
            sftp = await conn.sftp()
            await sftp.stat("/")
            stats = []
            for _ in range(20):
                start = time.perf_counter()
                await sftp.stat("/")
                stats.append(time.perf_counter() - start)
            trues = []
            for _ in range(5):
                start = time.perf_counter()
                (await conn.run(["true"])).check()
                trues.append(time.perf_counter() - start)
        finally:
            await conn.aclose()
        out[name] = {"connect": connect, "stat": statistics.median(stats),
                     "stat_all": [round(s, 5) for s in stats],
                     "true": statistics.median(trues), "true_all": [round(t, 4) for t in trues]}
    return out


async def refresh(cluster: str, package: str, grid: str) -> dict[str, tp.Any]:
    from adora.engine.grids import load_explorer
    from adora.engine.run import RunGridArgs, resolve_backend, run_grid
    from adora.engine.watch import GridWatch
    from adora.package import load_main

    main = load_main(package)
    explorer, grid_file = load_explorer(main, grid)
    backend = resolve_backend(main, None, cluster=cluster)
    try:
        start = time.perf_counter()
        result = await run_grid(main, explorer, grid, args=RunGridArgs(read_only=True),
                                backend=backend, grid_file=grid_file)
        run_seconds = time.perf_counter() - start
        watch = GridWatch(main, [result])
        ssh = backend.ssh  # type: ignore[attr-defined]
        timings, commands = [], []
        for _ in range(2):
            before = dict(ssh.count)
            start = time.perf_counter()
            await watch.refresh()
            timings.append(time.perf_counter() - start)
            commands.append({k: v - before.get(k, 0) for k, v in ssh.count.items()
                             if v - before.get(k, 0)})
        with_metrics = sum(1 for s in watch.sheeps if watch.history(s))
        states: dict[str, int] = {}
        for sheep in watch.sheeps:
            state = sheep.state() or "none"
            states[state] = states.get(state, 0) + 1
    finally:
        await backend.aclose()
    return {"run_grid": run_seconds, "first": timings[0], "next": timings[1],
            "commands": commands, "with_metrics": with_metrics, "states": states,
            "connects": ssh.connects}


def cli(argv: list[str]) -> int:
    """adora's CLI with SSHConnection's methods timed; the breakdown goes to a JSON file."""
    import atexit
    import functools

    from adora import ssh

    origin = time.perf_counter()
    events: list[tuple[float, float, str, str]] = []

    def timed(name: str) -> None:
        original = getattr(ssh.SSHConnection, name, None)
        if original is None:
            return  # another version of adora: time what it has

        @functools.wraps(original)
        async def wrapper(self: tp.Any, *args: tp.Any, **kwargs: tp.Any) -> tp.Any:
            start = time.perf_counter()
            try:
                return await original(self, *args, **kwargs)
            finally:
                what = args[0] if args else ""
                if isinstance(what, (list, tuple)):
                    what = " ".join(str(a) for a in what)
                events.append((start - origin, time.perf_counter() - start, name,
                               str(what)[:80]))

        setattr(ssh.SSHConnection, name, wrapper)

    for name in ("connection", "run", "read_file", "stat", "write_file"):
        timed(name)

    def dump() -> None:
        path = os.environ.get("ADORA_BENCH_SSH_TRACE")
        if not path:
            return
        summary: dict[str, dict[str, float]] = {}
        for start, duration, name, what in events:
            if name == "connection" and duration < 0.05:
                continue  # the connection was open already (waited for its lock at most)
            key = f"run {what.split()[0]}" if name == "run" and what else name
            entry = summary.setdefault(key, {"count": 0, "busy": 0.0, "first": start,
                                             "last_end": 0.0})
            entry["count"] += 1
            entry["busy"] += duration
            entry["first"] = min(entry["first"], start)
            entry["last_end"] = max(entry["last_end"], start + duration)
        serial = [{"start": round(s, 4), "seconds": round(d, 4), "op": n, "arg": w}
                  for s, d, n, w in events
                  if n != "read_file" and not (n == "connection" and d < 0.05)]
        Path(path).write_text(json.dumps({"total": time.perf_counter() - origin,
                                          "summary": summary, "serial": serial}))

    atexit.register(dump)
    from adora.cli import main as adora_main

    sys.argv = ["adora", *argv]
    adora_main(argv)
    return 0


def main() -> int:
    if sys.argv[1:2] == ["cli"]:
        return cli(sys.argv[2:])
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["rtt", "refresh"])
    parser.add_argument("--cluster", action="append", default=[])
    parser.add_argument("--package", default="abench")
    parser.add_argument("--grid", default="r1k")
    opts = parser.parse_args()
    sys.path.insert(0, os.getcwd())
    import anyio

    if opts.what == "rtt":
        out = anyio.run(rtt, opts.cluster)
    else:
        out = anyio.run(refresh, opts.cluster[0], opts.package, opts.grid)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
