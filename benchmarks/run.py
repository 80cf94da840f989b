"""adora vs Dora benchmarks: ``python benchmarks/run.py`` runs them all and prints one table.

Both tools are measured in the same run, on the same generated argparse project
(see project.py): adora from the project venv (``<repo>/.venv``), Dora 0.1.13
from a side venv (``adora.testing.dora_venv``). See README.md for what each
benchmark measures and why.

    python benchmarks/run.py                  # everything, prints the table
    python benchmarks/run.py --only help dryrun
    python benchmarks/run.py --only slurm,ssh # the real test cluster (skipped if it cannot run)
    python benchmarks/run.py --record         # and append the results to RESULTS.md
    python benchmarks/run.py --verbose        # plus `python -X importtime` top entries
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import typing as tp
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_hydra
import bench_scale
import bench_slurm
from _util import (
    BENCH_DIR,
    LOGS,
    REPO,
    WORK,
    BenchError,
    Measure,
    adora_python,
    base_env,
    console_script,
    dora_python,
    fake_slurm_bin,
    fake_slurm_completed_bin,
    load_average,
    log,
    machine_description,
    median_measure,
    remove_tree,
    run_json,
    run_measured,
    version_of,
    wait_runner_idle,
    with_path,
)
from project import ADORA_PKG, DORA_PKG, GRIDS, SLURM_GRIDS, make_project
from report import Row, record, text_table

BENCHES = ("help", "dryrun", "hydra_dryrun", "rerun", "monitor", "rerun_metrics",
           "slurm_submit", "slurm_rerun", "slurm_watch", "ssh", "scale_local", "scale_slurm")
#: Names `--only`/`--skip` accept for several benchmarks at once.
GROUPS = {
    "local": ("help", "dryrun", "hydra_dryrun", "rerun", "monitor", "rerun_metrics"),
    "hydra": ("hydra_dryrun",),
    "slurm": ("slurm_submit", "slurm_rerun", "slurm_watch"),
    "ssh": ("ssh",),
    # Not in the default run (10-15 min on 2 cores): `--only scale`.
    "scale": ("scale_local", "scale_slurm"),
}


class Context:
    """Everything the benchmarks share: tools, environments, the project folder."""

    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.proj = WORK / "proj"
        self.env = base_env()
        self.adora_py = adora_python()
        self.adora = console_script(self.adora_py, "adora")
        self.dora_py = dora_python(opts.dora_python)
        self.dora = console_script(self.dora_py, "dora")
        self.dora_env = with_path(self.env, fake_slurm_bin(WORK / "fake-slurm"))
        #: Set once Dora scheduled the 1k grid against the "all COMPLETED" fake Slurm.
        self.dora_done_env: dict[str, str] | None = None
        self.raw: dict[str, tp.Any] = {}
        self.rows: list[Row] = []
        #: XPs of the Slurm grids (project.SLURM_GRIDS, resized by --slurm-xps/--watch-xps).
        self.slurm_sizes = {name: (opts.watch_xps if name.startswith("w") else opts.slurm_xps)
                            for name in SLURM_GRIDS}
        #: The Slurm test bed (bench_slurm.SlurmBed), or the reason it cannot run.
        self._slurm_bed: tp.Any = None

    def slurm_bed(self) -> tp.Any:
        """The real test cluster with counting wrappers; raises bench_slurm.Skip if absent."""
        if isinstance(self._slurm_bed, bench_slurm.Skip):
            raise self._slurm_bed
        if self._slurm_bed is None:
            try:
                self._slurm_bed = bench_slurm.SlurmBed(self)
            except bench_slurm.Skip as exc:
                self._slurm_bed = exc
                raise
        return self._slurm_bed

    def adora_cmd(self, *args: str) -> list[str]:
        return [*self.adora, "-P", ADORA_PKG, *args]

    def dora_cmd(self, *args: str) -> list[str]:
        return [*self.dora, "-P", DORA_PKG, *args]

    def measure(self, name: str, cmd: list[str], env: dict[str, str], runs: int, *,
                warmup: int = 1, stdout: Path | None = None,
                check_output: tp.Callable[[str], None] | None = None) -> dict[str, tp.Any]:
        """Run ``cmd`` ``warmup`` times untimed then ``runs`` times; medians."""
        out = stdout or LOGS / f"out-{name}.txt"
        for _ in range(warmup):
            run_measured(cmd, cwd=self.proj, env=env, stdout=out)
        measures: list[Measure] = []
        for _ in range(runs):
            measures.append(run_measured(cmd, cwd=self.proj, env=env, stdout=out))
        if check_output is not None:
            check_output(out.read_text(errors="replace"))
        result = median_measure(measures)
        result["cmd"] = shlex.join(cmd)
        self.raw[name] = result
        log(f"  {name}: wall {result['wall']:.3f} s (runs {result['wall_all']}), "
            f"cpu {result['cpu']:.3f} s, peak {result['maxrss_mb']:.0f} MB")
        return result


# -- benchmark 4: start-up -----------------------------------------------------------------
def bench_help(ctx: Context) -> None:
    log("[4] start-up: `adora --help` and `dora --help`")
    runs = ctx.opts.help_runs
    a = ctx.measure("help_adora", [*ctx.adora, "--help"], ctx.env, runs)
    d = ctx.measure("help_dora", [*ctx.dora, "--help"], ctx.dora_env, max(3, runs // 2))
    ctx.rows.append(Row("4. --help start-up", f"wall, median of {runs}", "s", a["wall"],
                        d["wall"], ("abs", 0.25)))
    if ctx.opts.verbose:
        for tool, py, env in (("adora", ctx.adora_py, ctx.env), ("dora", ctx.dora_py,
                                                                  ctx.dora_env)):
            top = importtime_top(py, tool, env, ctx.opts.importtime_top)
            ctx.raw[f"importtime_{tool}"] = top
            log(f"  python -X importtime -m {tool} --help, top {len(top)} by cumulative time:")
            for cumulative, self_us, module in top:
                log(f"    {cumulative / 1000:8.1f} ms cumulative {self_us / 1000:7.1f} ms self"
                    f"  {module}")


def importtime_top(python: Path, module: str, env: dict[str, str], top: int
                   ) -> list[tuple[int, int, str]]:
    proc = subprocess.run([str(python), "-X", "importtime", "-m", module, "--help"],
                          capture_output=True, text=True, env=env, cwd=WORK)
    entries = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative, name = line[len("import time:"):].split("|", 2)
        entries.append((int(cumulative), int(self_us), name.rstrip()))
    return sorted(entries, reverse=True)[:top]


# -- benchmark 1: evaluate + plan, dry run -------------------------------------------------
def _expect_xps(n: int) -> tp.Callable[[str], None]:
    def check(text: str) -> None:
        # Both tools print one table row per XP: the last index shown is n - 1.
        if f"{n - 1} " not in text:
            raise BenchError(f"the output does not show XP #{n - 1}:\n{text[-500:]}")
    return check


def bench_dryrun(ctx: Context) -> None:
    for grid, n in GRIDS.items():
        log(f"[1] dry run of the {n}-XP grid {grid}")
        runs = ctx.opts.runs if n <= 1000 else max(2, ctx.opts.runs - 1)
        a = ctx.measure(f"dryrun_{grid}_adora",
                        ctx.adora_cmd("grid", grid, "--dry-run", "--backend", "local"),
                        ctx.env, runs, check_output=_expect_xps(n))
        d = ctx.measure(f"dryrun_{grid}_dora",
                        ctx.dora_cmd("grid", grid, "--dry_run", "--no_monitoring"),
                        ctx.dora_env, runs, check_output=_expect_xps(n))
        label = f"1. dry run {n:,} XPs"
        ctx.rows.append(Row(label, f"wall, median of {runs}", "s", a["wall"], d["wall"]))
        ctx.rows.append(Row(label, "peak RSS", "MB", a["maxrss_mb"], d["maxrss_mb"]))
        if ctx.opts.verbose:
            phases(ctx, f"dryrun_{grid}", grid, dry_run=True)


def phases(ctx: Context, name: str, grid: str, *, dry_run: bool) -> None:
    """``--verbose``: where adora's time goes, phase by phase (phases_adora.py)."""
    cmd = [str(ctx.adora_py), str(BENCH_DIR / "phases_adora.py"), "--package", ADORA_PKG,
           "--grid", grid] + (["--dry-run"] if dry_run else [])
    try:
        got = run_json(cmd, cwd=ctx.proj, env=ctx.env)
    except (BenchError, ValueError, subprocess.SubprocessError) as exc:
        log(f"  (phase breakdown unavailable: {str(exc).splitlines()[0]})")
        return
    ctx.raw[f"phases_{name}"] = got
    log(f"  adora phases ({got['xps']} XPs, in-process total {got['total_in_process']:.3f} s; "
        "the rest of the CLI's wall time is interpreter start-up and option parsing):")
    for phase, wall in got["phases_wall"].items():
        log(f"    {wall:7.3f} s wall {got['phases_cpu'][phase]:7.3f} s cpu  {phase}")


# -- benchmark 2: re-run of an already-scheduled grid ---------------------------------------
def _states(ctx: Context, grid: str) -> dict[str, int]:
    out = LOGS / "out-states.json"
    run_measured(ctx.adora_cmd("grid", grid, "--backend", "local", "--json"), cwd=ctx.proj,
                 env=ctx.env, stdout=out)
    tables = json.loads(out.read_text())
    counts: dict[str, int] = {}
    for rows in tables.values():
        for row in rows:
            state = row.get("state") or "none"
            counts[state] = counts.get(state, 0) + 1
    return counts


def setup_rerun(ctx: Context, grid: str, n: int) -> None:
    """Dora: ``--init`` writes every XP folder. adora: submit the grid, wait for completion."""
    log(f"[2] setup: `dora grid {grid} --dry_run --init`; adora submits {n} trivial jobs "
        "and waits for them")
    run_measured(ctx.dora_cmd("grid", grid, "--dry_run", "--no_monitoring", "--init"),
                 cwd=ctx.proj, env=ctx.dora_env)
    start = time.monotonic()
    sub = run_measured(ctx.adora_cmd("grid", grid, "--backend", "local", "--max-parallel",
                                     str(ctx.opts.max_parallel)),
                       cwd=ctx.proj, env=ctx.env, stdout=LOGS / "out-submit.txt")
    ctx.raw["rerun_setup_submit"] = {"wall": sub.wall, "cpu": sub.cpu}
    log(f"  submitted in {sub.wall:.2f} s (cpu {sub.cpu:.2f} s)")
    deadline = start + ctx.opts.jobs_timeout
    while True:
        time.sleep(5)
        counts = _states(ctx, grid)
        done = counts.get("COMPLETED", 0)
        log(f"  {time.monotonic() - start:5.0f} s: {counts}")
        if done >= n:
            break
        bad = {k: v for k, v in counts.items() if k in ("FAILED", "CANCELLED", "MISSING")}
        if bad:
            raise BenchError(f"some benchmark jobs did not complete: {counts} (see "
                             f"{ctx.proj}/outputs_adora/.adora/local/runner.log)")
        if time.monotonic() > deadline:
            raise BenchError(f"the {n} jobs did not complete in {ctx.opts.jobs_timeout} s: "
                             f"{counts}")
    ctx.raw["rerun_setup_jobs_seconds"] = time.monotonic() - start
    wait_runner_idle(ctx.proj / "outputs_adora")


def bench_rerun(ctx: Context) -> None:
    grid, n = "g1k", GRIDS["g1k"]
    setup_rerun(ctx, grid, n)
    log(f"[2] re-run of the already-scheduled {n}-XP grid")

    def all_completed(text: str) -> None:
        if f"{n} XPs: {n} COMPLETED" not in text:
            raise BenchError(f"adora's re-run did not show {n} COMPLETED XPs:\n{text[-400:]}")
    a = ctx.measure("rerun_adora", ctx.adora_cmd("grid", grid, "--backend", "local"), ctx.env,
                    ctx.opts.runs, check_output=all_completed)
    d = ctx.measure("rerun_dora", ctx.dora_cmd("grid", grid, "--dry_run", "--no_monitoring"),
                    ctx.dora_env, ctx.opts.runs, check_output=_expect_xps(n))
    ctx.rows.append(Row(f"2. re-run {n:,} XPs", f"wall, median of {ctx.opts.runs}", "s",
                        a["wall"], d["wall"],
                        note="adora: `adora grid` on the local backend, all jobs completed; "
                             "Dora: `--dry_run --no_monitoring` on initialised XP folders "
                             "(no Slurm here); the stand-in for the re-run target until the "
                             "Slurm backend existed: the target is now S2's, on the cluster"))
    ctx.rows.append(Row(f"2. re-run {n:,} XPs", "CPU", "s", a["cpu"], d["cpu"]))
    if ctx.opts.verbose:
        phases(ctx, "rerun", grid, dry_run=False)

    # The same re-run for Dora without --dry_run: it really schedules the grid against a
    # fake Slurm whose jobs all complete, then re-runs it (job.pkl unpickled, sacct asked).
    log(f"[2] Dora, really scheduled: `dora grid {grid} --no_monitoring` against a fake "
        "Slurm where every job is COMPLETED")
    env = with_path(ctx.env, fake_slurm_completed_bin(LOGS / "fake-slurm-done"))
    sub = run_measured(ctx.dora_cmd("grid", grid, "--no_monitoring"), cwd=ctx.proj, env=env,
                       stdout=LOGS / "out-dora-submit.txt")
    ctx.raw["rerun_dora_submit"] = {"wall": sub.wall, "cpu": sub.cpu}
    log(f"  Dora scheduled {n} XPs ({n} sbatch calls) in {sub.wall:.2f} s")
    ctx.dora_done_env = env

    def all_com(text: str) -> None:
        if text.count(" COM ") < n:
            raise BenchError(f"Dora's re-run did not show {n} COM XPs:\n{text[-400:]}")
    d2 = ctx.measure("rerun_dora_scheduled", ctx.dora_cmd("grid", grid, "--no_monitoring"),
                     env, ctx.opts.runs, check_output=all_com)
    ctx.rows.append(Row(f"2'. re-run {n:,} XPs, Dora scheduled",
                        f"wall, median of {ctx.opts.runs}", "s", a["wall"], d2["wall"],
                        note="Dora without --dry_run on a grid it scheduled itself against a "
                             "fake Slurm (sbatch ids, sacct says COMPLETED): job.pkl files "
                             "unpickled, sacct called"))


def bench_rerun_metrics(ctx: Context) -> None:
    """2b: the same re-run once every XP has a long history (left by benchmark 3)."""
    grid, n = "g1k", GRIDS["g1k"]
    lines = ctx.raw.get("monitor_adora", {}).get("final_lines")
    if lines is None:
        raise BenchError("needs benchmark 3 (monitor) to have written the histories")
    log(f"[2b] re-run of the {n}-XP grid, every XP with {lines} metric lines")
    runs = max(2, ctx.opts.runs - 1)

    def all_completed(text: str) -> None:
        if f"{n} XPs: {n} COMPLETED" not in text:
            raise BenchError(f"adora's re-run did not show {n} COMPLETED XPs:\n{text[-400:]}")
    a = ctx.measure("rerun_metrics_adora", ctx.adora_cmd("grid", grid, "--backend", "local"),
                    ctx.env, runs, warmup=0, check_output=all_completed)
    dora_args = ["grid", grid, "--no_monitoring"]
    if ctx.dora_done_env is None:
        dora_args.append("--dry_run")
    d = ctx.measure("rerun_metrics_dora", ctx.dora_cmd(*dora_args),
                    ctx.dora_done_env or ctx.dora_env, runs, warmup=0,
                    check_output=_expect_xps(n))
    label = f"2b. re-run {n:,} XPs, {lines} lines each"
    ctx.rows.append(Row(label, f"wall, median of {runs}", "s", a["wall"], d["wall"],
                        note="not a target of the brief: the one-shot table of a grid whose "
                             "XPs have long histories; both tools read every history whole; "
                             "Dora: " + " ".join(dora_args)))
    ctx.rows.append(Row(label, "peak RSS", "MB", a["maxrss_mb"], d["maxrss_mb"]))
    dora_lines = ctx.raw.get("monitor_dora", {}).get("final_lines")
    if dora_lines != lines:
        log(f"  note: Dora's histories have {dora_lines} lines")
    if ctx.opts.verbose:
        phases(ctx, "rerun_metrics", grid, dry_run=False)


# -- benchmark 3: one monitoring refresh -------------------------------------------------------
def bench_monitor(ctx: Context) -> None:
    lines, append = ctx.opts.lines, 10
    log(f"[3] one monitoring refresh, 1,000 XPs x {lines} metric lines, after {append} new "
        "lines per XP")
    common = ["--grid", "g1k", "--lines", str(lines), "--append", str(append)]
    common += ["--repeats", str(ctx.opts.monitor_repeats)]
    a = run_json([str(ctx.adora_py), str(BENCH_DIR / "monitor_adora.py"), "--package",
                  ADORA_PKG, *common], cwd=ctx.proj, env=ctx.env)
    ctx.raw["monitor_adora"] = a
    log(f"  adora: refresh cpu {a['refresh_cpu']:.3f} s, metrics-only cpu "
        f"{a['read_cpu']:.3f} s, {a['read_bytes'] / 1e6:.2f} MB read")
    d = run_json([str(ctx.dora_py), str(BENCH_DIR / "monitor_dora.py"), "--package",
                  DORA_PKG, *common], cwd=ctx.proj, env=ctx.dora_done_env or ctx.dora_env)
    ctx.raw["monitor_dora"] = d
    log(f"  Dora: refresh cpu {d['refresh_cpu']:.3f} s, metrics-only cpu "
        f"{d['read_cpu']:.3f} s")
    ctx.rows.append(Row("3. monitor refresh 1,000 XPs", "CPU of one refresh", "s",
                        a["refresh_cpu"], d["refresh_cpu"], ("ratio", 1 / 50),
                        note="states + metrics + table; adora: GridWatch.refresh + "
                             "build_table/to_text; Dora: shepherd.update + dora.grid.monitor"))
    ctx.rows.append(Row("3. monitor refresh 1,000 XPs", "CPU, metric reads only", "s",
                        a["read_cpu"], d["read_cpu"],
                        note="adora: GridWatch.refresh_metrics (MetricsTailer); Dora: "
                             "main.get_xp_history for every XP"))


# -- main -----------------------------------------------------------------------------------
def git_info() -> tuple[str, bool]:
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return proc.stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "?"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "adora"))
    return commit, dirty


def selection(words: tp.Sequence[str]) -> list[str]:
    """Benchmark names from `--only`/`--skip` words: names or groups, spaces or commas."""
    out: list[str] = []
    for word in words:
        for name in filter(None, word.split(",")):
            if name in GROUPS:
                out += GROUPS[name]
            elif name in BENCHES:
                out.append(name)
            else:
                raise SystemExit(f"run.py: unknown benchmark or group {name!r}; choose from "
                                 f"{', '.join([*GROUPS, *BENCHES])}")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser("python benchmarks/run.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=["local", "slurm", "ssh"],
                        metavar="NAME",
                        help="Run only these benchmarks or groups (space- or comma-separated). "
                             "Groups: " + "; ".join(f"{g} = {','.join(b)}"
                                                    for g, b in GROUPS.items()) + ".")
    parser.add_argument("--skip", nargs="+", default=[], metavar="NAME",
                        help="Leave out these benchmarks or groups.")
    parser.add_argument("--runs", type=int, default=3,
                        help="Timed runs per command (benchmarks 1 and 2; 10k grid and 2b: runs-1, "
                             "at least 2).")
    parser.add_argument("--hydra-runs", type=int, default=3,
                        help="Timed runs per tool of the Hydra dry run H1 (after one --init "
                             "run each; Dora takes minutes per run).")
    parser.add_argument("--help-runs", type=int, default=10,
                        help="Timed runs of `adora --help` (Dora: half, at least 3).")
    parser.add_argument("--lines", type=int, default=1000, help="Metric lines per XP (3).")
    parser.add_argument("--monitor-repeats", type=int, default=3,
                        help="Timed refreshes per tool in benchmark 3 (median).")
    parser.add_argument("--max-parallel", type=int, default=max(8, 4 * (os.cpu_count() or 1)),
                        help="Local jobs at once while preparing benchmark 2.")
    parser.add_argument("--jobs-timeout", type=float, default=900.0,
                        help="Give up if benchmark 2's 1,000 jobs take longer (s).")
    parser.add_argument("--verbose", action="store_true",
                        help="Also show `python -X importtime` top entries of both CLIs.")
    parser.add_argument("--importtime-top", type=int, default=12)
    parser.add_argument("--dora-python", default=None,
                        help="Python of a venv with dora-search 0.1.13 (default: "
                             "adora.testing.dora_venv).")
    parser.add_argument("--json", type=Path, default=WORK / "results.json",
                        help="Where to write the machine-readable results.")
    parser.add_argument("--record", action="store_true",
                        help="Append the results (date, machine, table, JSON) to RESULTS.md.")
    parser.add_argument("--date", default=None, help="Date to record (default: today).")
    parser.add_argument("--machine", default=None, help="Machine to record (default: detected).")
    parser.add_argument("--keep", action="store_true",
                        help="Keep the generated project (.work/proj) and command outputs "
                             "(.work/logs).")
    slurm = parser.add_argument_group("Slurm and SSH benchmarks (groups slurm, ssh)")
    slurm.add_argument("--slurm-xps", type=int, default=1000,
                       help="XPs of the S1/S2 and S4 grids (smaller while developing).")
    slurm.add_argument("--watch-xps", type=int, default=50, help="XPs of each S3 grid.")
    slurm.add_argument("--submit-runs", type=int, default=3,
                       help="S1: first submissions per tool, each of a new grid (at most 3).")
    slurm.add_argument("--watch-interval", type=float, default=2.0,
                       help="S3: refresh period of the watchers (s; both tools).")
    slurm.add_argument("--watch-window", type=float, default=14.0,
                       help="S3: measuring window of each configuration (s).")
    slurm.add_argument("--watch-stagger-interval", type=float, default=10.0,
                       help="S3f: refresh period of 5 watchers started period/5 apart "
                            "(0: leave S3f out).")
    slurm.add_argument("--watch-dora", default="1,2,5",
                       help="S3: Dora watcher counts to measure (comma-separated; '' for none).")
    slurm.add_argument("--ssh-delay", type=float, default=0.025,
                       help="S4: delay added by the relay in each direction (s).")
    slurm.add_argument("--sshd-state-dir", default="/tmp/adora-bench-sshd",
                       help="S4: state folder of the benchmark's own sshd (stopped at the end).")
    slurm.add_argument("--remote-workdir", default="/tmp/adora-bench-remote",
                       help="S4: the cluster's workdir (deleted at the end unless --keep).")
    scale = parser.add_argument_group("Scale benchmarks (group scale: issue #11)")
    scale.add_argument("--scale-xps", type=int, nargs="+", default=[10_000, 100_000],
                       help="Grid sizes (XPs) of the scale benchmarks.")
    scale.add_argument("--scale-runs", type=int, default=3,
                       help="Timed runs per command at 10,000 XPs (larger grids: one less).")
    scale.add_argument("--scale-dora-max", type=int, default=10_000,
                       help="Largest grid Dora dry-runs (its 100,000-XP dry run takes minutes).")
    scale.add_argument("--scale-slurm-max", type=int, default=100_000,
                       help="Largest grid submitted to the test cluster (jobs held).")
    opts = parser.parse_args(argv)
    skip = set(selection(opts.skip))
    opts.only = [name for name in dict.fromkeys(selection(opts.only)) if name not in skip]
    opts.watch_dora = [int(x) for x in opts.watch_dora.split(",") if x.strip()]
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.monotonic()
    load_start = load_average()
    WORK.mkdir(parents=True, exist_ok=True)
    ctx = Context(opts)
    remove_tree(ctx.proj)
    make_project(ctx.proj, ctx.slurm_sizes, release=f"{opts.remote_workdir}/release")
    errors: dict[str, str] = {}
    skipped: dict[str, str] = {}
    try:
        for name, fun in (("help", bench_help), ("dryrun", bench_dryrun),
                          ("hydra_dryrun", bench_hydra.bench_hydra_dryrun),
                          ("rerun", bench_rerun), ("monitor", bench_monitor),
                          ("rerun_metrics", bench_rerun_metrics),
                          ("slurm_submit", bench_slurm.bench_slurm_submit),
                          ("slurm_rerun", bench_slurm.bench_slurm_rerun),
                          ("slurm_watch", bench_slurm.bench_slurm_watch),
                          ("ssh", bench_slurm.bench_ssh),
                          ("scale_local", bench_scale.bench_scale_local),
                          ("scale_slurm", bench_scale.bench_scale_slurm)):
            if name not in opts.only:
                continue
            try:
                fun(ctx)
            except bench_slurm.Skip as exc:
                skipped[name] = str(exc)
                log(f"  SKIPPED {name}: {exc}")
            except (BenchError, subprocess.SubprocessError, OSError, ValueError) as exc:
                errors[name] = str(exc)
                log(f"  FAILED: {exc}")
            if name == "slurm_rerun" or (name == "slurm_submit"
                                         and "slurm_rerun" not in opts.only):
                bench_slurm.finish_s1k(ctx)  # cancel the 2,000 held jobs once S1/S2 are done
    finally:
        if isinstance(ctx._slurm_bed, bench_slurm.SlurmBed):
            ctx._slurm_bed.cleanup()
        if not wait_runner_idle(ctx.proj / "outputs_adora", timeout=60):
            log("warning: adora's local runner is still busy; leaving the project in place")
        elif not opts.keep:
            remove_tree(ctx.proj)
            remove_tree(LOGS)
        if not opts.keep:
            remove_tree(bench_scale.SCALE_DIR)

    commit, dirty = git_info()
    env = ctx.env
    results = {
        "context": {
            "date": opts.date or datetime.date.today().isoformat(),
            "machine": opts.machine or machine_description(),
            "platform": platform.platform(),
            "adora_commit": commit, "dirty": dirty,
            "adora_python": str(ctx.adora_py), "dora_python": str(ctx.dora_py),
            "adora_python_version": subprocess.run(
                [str(ctx.adora_py), "-c", "import platform; print(platform.python_version())"],
                capture_output=True, text=True, env=env).stdout.strip(),
            "dora_version": version_of(ctx.dora_py, "dora-search", env),
            "torch_version": version_of(ctx.dora_py, "torch", env),
            "load_start": load_start, "load_end": load_average(),
            "total_seconds": time.monotonic() - started,
            "command": shlex.join(["python", "benchmarks/run.py", *(argv or sys.argv[1:])]),
        },
        "rows": [row.to_json() for row in ctx.rows],
        "raw": ctx.raw,
        "errors": errors,
        "skipped": skipped,
    }
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    opts.json.write_text(json.dumps(results, indent=1, default=str))

    # "1.", "2.", "2'.", "2b.", "3.", "4.", "H1.": by number, then variant; stable otherwise.
    ctx.rows.sort(key=lambda row: (row.bench[0], row.bench.split(" ")[0].rstrip(".")[1:]))
    print()
    print(text_table(ctx.rows))
    print()
    for row in ctx.rows:
        if row.note:
            print(f"  {row.bench} ({row.metric}): {row.note}")
    print(f"\nLoad average {load_start} -> {load_average()}; took "
          f"{results['context']['total_seconds']:.0f} s; JSON: {opts.json}")
    for name, message in skipped.items():
        print(f"SKIPPED {name}: {message}")
    for name, message in errors.items():
        print(f"ERROR in {name}: {message.splitlines()[0] if message else ''}")
    if opts.record:
        record(BENCH_DIR / "RESULTS.md", results, ctx.rows)
        print(f"Recorded in {BENCH_DIR / 'RESULTS.md'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
