"""`adora ui` on a 1,000-XP grid with 1,000 metric lines per XP, in headless chromium.

Run from the repository (adora venv, with the ``ui`` and ``test`` extras; chromium
and chromium-driver are installed with apt when missing, as in the tests)::

    .venv/bin/python benchmarks/ui_adora.py                 # prints one JSON line
    .venv/bin/python benchmarks/ui_adora.py --record        # ... and appends to RESULTS.md

It generates the benchmark project (`project.py`, grid ``g1k`` of the ``abench``
package) in a temporary folder, gives every XP ``--lines`` metric lines with
adora's `Link`, and runs the `adora ui` pipeline in this process: the grid loaded
read-only, the watch API's snapshots turned into deltas by the hub, the ASGI app
served by uvicorn on 127.0.0.1. A headless chromium opens the page. Measured:

* **first page**: wall time from ``driver.get(url)`` until the table shows every XP
  with its metrics (the server had done its first refresh: what a user opening the
  page sees); median of ``--pages`` loads. Also the first XP page (plotly's bundled
  JS loaded, one curve of ``--lines`` points drawn).
* **refresh**: ``--append`` new lines are pushed to every XP, then one refresh is
  timed, from the watch's snapshot to the page having applied the delta: server
  CPU (``time.process_time()``, every thread of this process: reads, rows, JSON,
  uvicorn's writes), the bytes of history read, and the bytes sent to the page.
  Median of ``--repeats``. The same with nothing new, and (``--compare-lines``)
  with histories ten times shorter: the CPU must follow the new bytes, not the
  history length.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import typing as tp
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from project import make_project, metrics_entry  # noqa: E402


def run(lines: int, opts: argparse.Namespace, driver: object) -> dict[str, object]:
    import anyio
    import anyio.to_thread
    import uvicorn

    from adora.backends import get_backend
    from adora.link import Link
    from adora.package import load_main
    from adora.ui._app import create_app
    from adora.ui._hub import Hub
    from adora.ui._serve import _bind, load_results
    from adora.ui._source import frames

    work = Path(tempfile.mkdtemp(prefix="adora-ui-bench-"))
    make_project(work)
    os.chdir(work)
    sys.path.insert(0, str(work))
    for name in [m for m in sys.modules if m == "abench" or m.startswith("abench.")]:
        del sys.modules[name]
    main = load_main("abench", "train")
    d: tp.Any = driver

    async def bench() -> dict[str, object]:
        backend = get_backend("local", root=main.dora.dir)
        results = await load_results(main, [opts.grid], [], backend, skip_broken=False)
        sheeps = results[0].sheeps
        t0 = time.perf_counter()

        def write() -> list[Link]:
            links = []
            for sheep in sheeps:
                link = Link(sheep.xp.history)
                link.update_history([metrics_entry(i) for i in range(lines)])
                links.append(link)
            return links
        links = await anyio.to_thread.run_sync(write)
        setup = time.perf_counter() - t0
        hub = Hub()
        token = "bench"
        app = create_app(hub, token)
        sock = _bind("127.0.0.1", 0)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/?token={token}"
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                               lifespan="off", timeout_graceful_shutdown=1))
        out: dict[str, object] = {"xps": len(sheeps), "lines": lines, "append": opts.append,
                                  "setup_s": round(setup, 1)}
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            agen = frames(main, results, interval=1.0, wanted=hub.wanted).__aiter__()
            cpu0 = time.process_time()
            hub.publish(await agen.__anext__())  # the first refresh reads everything
            out["first_refresh_cpu"] = time.process_time() - cpu0

            def load_table() -> float:
                start = time.perf_counter()
                d.get(url)
                while d.execute_script(
                        "const r = document.querySelectorAll('tbody tr');"
                        f"return r.length === {len(sheeps)} && "
                        "r[r.length - 1].querySelectorAll('td')[7].textContent !== '';") \
                        is not True:
                    time.sleep(0.005)
                return time.perf_counter() - start
            pages = [await anyio.to_thread.run_sync(load_table) for _ in range(opts.pages)]
            out["first_page_s"] = statistics.median(pages)
            out["first_page_all"] = pages
            out["reset_bytes"] = len(hub._reset(next(iter(hub.pages))))

            def applied(version: int) -> None:
                while d.execute_script("return window.adora.v;") < version:
                    time.sleep(0.002)

            async def refresh(append: int) -> dict[str, float]:
                def push() -> None:
                    for link in links:
                        for _ in range(append):
                            link.push_metrics(metrics_entry(len(link.history)))
                await anyio.to_thread.run_sync(push)
                await anyio.sleep(1.0)  # the watch's period: no CPU spent waiting for it
                cpu0, wall0 = time.process_time(), time.perf_counter()
                frame = await agen.__anext__()
                hub.publish(frame)
                sent = hub.last_bytes
                await anyio.to_thread.run_sync(applied, hub.model.version)
                return {"cpu": time.process_time() - cpu0, "wall": time.perf_counter() - wall0,
                        "bytes_sent": sent, "changed": len(frame.changed),
                        "read_bytes": frame.read_bytes}

            runs = [await refresh(opts.append) for _ in range(opts.repeats)]
            idle = [await refresh(0) for _ in range(opts.repeats)]
            for key, got in (("refresh", runs), ("idle_refresh", idle)):
                out[f"{key}_cpu"] = statistics.median(r["cpu"] for r in got)
                out[f"{key}_wall"] = statistics.median(r["wall"] for r in got)
                out[f"{key}_bytes_sent"] = statistics.median(r["bytes_sent"] for r in got)
                out[f"{key}_read_bytes"] = statistics.median(r["read_bytes"] for r in got)
                out[f"{key}_all"] = got

            def xp_page() -> float:
                sig = sheeps[0].xp.sig
                start = time.perf_counter()
                d.get(f"{url}#/xp/{sig}")
                want = lines + opts.append * opts.repeats
                while d.execute_script(
                        "const p = document.querySelector('.plot');"
                        f"return !!(p && p.data && p.data[0].y.length === {want});") is not True:
                    time.sleep(0.005)
                return time.perf_counter() - start
            out["xp_page_s"] = await anyio.to_thread.run_sync(xp_page)
            server.should_exit = True
            hub.close()
            await agen.aclose()
            tg.cancel_scope.cancel()
        return out

    try:
        return anyio.run(bench, backend="asyncio")
    finally:
        import shutil

        os.chdir(HERE)
        shutil.rmtree(work, ignore_errors=True)


def record(results: list[dict[str, object]]) -> None:
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True,
                            capture_output=True).stdout.strip()
    load = os.getloadavg()
    lines = [f"\n## {time.strftime('%Y-%m-%d')} — adora ui (benchmarks/ui_adora.py), "
             f"{os.cpu_count()} cores, Python {platform.python_version()}, commit {commit}\n",
             f"Load average at the end: {load[0]:.2f}. A 1,000-XP grid, headless chromium "
             "on the same machine.\n",
             "| metric lines per XP | first page (table, 1,000 rows) | first XP page (plotly "
             "loaded, 1 curve) | server CPU per refresh (+10 lines/XP) | history bytes read "
             "| bytes sent to the page | server CPU, refresh with nothing new | reset message |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['lines']:,} | {r['first_page_s']:.2f} s | {r['xp_page_s']:.2f} s | "
            f"{1000 * r['refresh_cpu']:.0f} ms | {r['refresh_read_bytes']:,.0f} | "
            f"{r['refresh_bytes_sent']:,.0f} | {1000 * r['idle_refresh_cpu']:.0f} ms | "
            f"{r['reset_bytes']:,} B |")
    lines.append("\n<details><summary>raw JSON</summary>\n\n```json\n"
                 + json.dumps(results, indent=1) + "\n```\n\n</details>\n")
    with open(HERE / "RESULTS.md", "a") as f:
        f.write("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grid", default="g1k")
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--compare-lines", type=int, default=100,
                        help="Also run with histories this long (0: not).")
    parser.add_argument("--append", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pages", type=int, default=3)
    parser.add_argument("--record", action="store_true")
    opts = parser.parse_args()

    from adora.testing import browser

    reason = browser.unavailable_reason()
    if reason:
        sys.exit(f"SKIPPED ui: {reason}")
    driver = browser.start()
    try:
        results = [run(opts.lines, opts, driver)]
        if opts.compare_lines:
            results.append(run(opts.compare_lines, opts, driver))
    finally:
        driver.quit()
    for r in results:
        print(json.dumps(r))
    if opts.record:
        record(results)


if __name__ == "__main__":
    main()
