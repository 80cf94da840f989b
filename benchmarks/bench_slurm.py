"""Benchmarks on the real test Slurm cluster (group ``slurm``) and over SSH (group ``ssh``).

S1 first submission of 1,000 XPs, S2 re-run of the submitted grid, S3 Slurm
commands per monitoring refresh, S4 remote submission and refresh over SSH with
50 ms of added round-trip time. See README.md for what each one measures.

Every Slurm command of both tools goes through counting wrappers put first on
PATH (``sbatch``, ``squeue``, ``sacct``, ``scancel``, ``scontrol``): each call
appends ``<time> <caller pid> <tool>`` to ``$ADORA_BENCH_SLURM_LOG`` and runs the
real binary. The ``sbatch`` wrapper also records every job id it got (the
harness cancels exactly those, never anyone else's jobs: the cluster is shared)
and, when ``$ADORA_BENCH_SLURM_HOLD`` is set, submits with ``--hold``, so that
1,000 jobs per tool do not start running (and eat the two cores) while the
other tool's submission is being timed.

Standard library only, like run.py.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import typing as tp
from dataclasses import dataclass
from pathlib import Path

from _util import (
    BENCH_DIR,
    LOGS,
    WORK,
    BenchError,
    Measure,
    log,
    remove_tree,
    run_json,
    run_measured,
    with_path,
)
from project import ADORA_PKG, DORA_PKG
from report import Row

if tp.TYPE_CHECKING:
    from run import Context

SLURM_TOOLS = ("sbatch", "squeue", "sacct", "scancel", "scontrol")
#: Slurm's queries: what a monitoring refresh costs the controller.
QUERIES = ("squeue", "sacct")
WATCH_GRIDS = [f"w{i}" for i in range(1, 6)]
#: A bit more than how long adora's processes share one squeue result (SlurmBackend's
#: ``poll_max_age``, 2 s): commands measured one after the other are spaced by this.
POLL_CACHE_AGE = 2.5


class Skip(Exception):
    """The Slurm or SSH test bed cannot run here; the message says why."""


# -- counting wrappers ----------------------------------------------------------------------
_WRAPPER = """#!/bin/bash
# Counting wrapper of the adora benchmarks: log the call, then run the real {tool}.
if [ -n "${{ADORA_BENCH_SLURM_LOG:-}}" ]; then
  printf '%s %s %s\\n' "$EPOCHREALTIME" "$PPID" "{tool}" >> "$ADORA_BENCH_SLURM_LOG"
fi
exec {real} "$@"
"""

_SBATCH = """#!/bin/bash
# Counting wrapper of the adora benchmarks: log the call, run the real sbatch (held
# when $ADORA_BENCH_SLURM_HOLD is set), record the job id for the clean-up.
if [ -n "${{ADORA_BENCH_SLURM_LOG:-}}" ]; then
  printf '%s %s %s\\n' "$EPOCHREALTIME" "$PPID" "sbatch" >> "$ADORA_BENCH_SLURM_LOG"
fi
hold=()
[ -n "${{ADORA_BENCH_SLURM_HOLD:-}}" ] && hold=(--hold)
if [ -z "${{ADORA_BENCH_SLURM_IDS:-}}" ]; then
  exec {real} "${{hold[@]}}" "$@"
fi
out=$({real} "${{hold[@]}}" "$@")
rc=$?
printf '%s\\n' "$out"
if [ $rc -eq 0 ]; then
  id=${{out##*[[:space:]]}}
  printf '%s\\n' "${{id%%;*}}" >> "$ADORA_BENCH_SLURM_IDS"
fi
exit $rc
"""


def write_wrappers(folder: Path) -> dict[str, str]:
    """Write the wrappers into ``folder``; return the real binaries they call."""
    folder.mkdir(parents=True, exist_ok=True)
    search = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                             if p and Path(p).resolve() != folder.resolve())
    real: dict[str, str] = {}
    for tool in SLURM_TOOLS:
        found = shutil.which(tool, path=search)
        if found is None:
            raise Skip(f"`{tool}` is not installed")
        real[tool] = found
        text = (_SBATCH if tool == "sbatch" else _WRAPPER).format(tool=tool,
                                                                   real=shlex.quote(found))
        path = folder / tool
        path.write_text(text)
        path.chmod(0o755)
    return real


@dataclass(frozen=True)
class Call:
    time: float
    pid: int
    tool: str


def read_calls(path: Path) -> list[Call]:
    calls = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            calls.append(Call(float(parts[0]), int(parts[1]), parts[2]))
    return calls


def by_tool(calls: tp.Iterable[Call]) -> dict[str, int]:
    out: dict[str, int] = {}
    for call in calls:
        out[call.tool] = out.get(call.tool, 0) + 1
    return dict(sorted(out.items()))


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {tool}" for tool, n in counts.items()) or "none"


# -- the test bed ----------------------------------------------------------------------------
class SlurmBed:
    """The running test cluster, the wrappers, and the jobs this run submitted."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        got = run_json([str(ctx.adora_py), str(BENCH_DIR / "testbed.py"), "slurm"],
                       cwd=BENCH_DIR, env=ctx.env, timeout=600)
        if "error" in got:
            raise Skip(f"no Slurm test cluster: {got['error']}")
        self.info = got
        self.root = WORK / "slurm"
        self.root.mkdir(parents=True, exist_ok=True)
        self.ids_file = self.root / "job-ids.txt"
        self.cancelled: set[str] = set()
        # Jobs left by an interrupted earlier run of this harness (their ids were recorded).
        self.cancel(self.submitted_ids(), why="left by an earlier run")
        self.ids_file.unlink(missing_ok=True)
        self.real = write_wrappers(self.root / "bin")
        env = dict(ctx.env)
        env.update(got["env"])
        # A cache of squeue results of our own: another session's adora processes (same
        # user, same cluster) must not serve ours, nor ours theirs.
        env["ADORA_CACHE_DIR"] = str(self.root / "adora-cache")
        env["ADORA_BENCH_SLURM_IDS"] = str(self.ids_file)
        env.pop("ADORA_BACKEND", None)
        env.pop("ADORA_CLUSTER", None)
        self.env = with_path(env, self.root / "bin")
        probe = subprocess.run([self.real["squeue"], "--noheader", "--me"], env=self.env,
                               capture_output=True, text=True, timeout=60)
        if probe.returncode != 0:
            raise Skip(f"the test cluster does not answer: squeue: {probe.stderr.strip()}")
        self.submitted: dict[str, list[str]] = {}

    def env_for(self, slurm_log: Path | None = None, *, hold: bool = False,
                tick_log: Path | None = None) -> dict[str, str]:
        env = dict(self.env)
        if slurm_log is not None:
            env["ADORA_BENCH_SLURM_LOG"] = str(slurm_log)
        if hold:
            env["ADORA_BENCH_SLURM_HOLD"] = "1"
        if tick_log is not None:
            env["ADORA_BENCH_TICK_LOG"] = str(tick_log)
        return env

    def log_path(self, name: str) -> Path:
        path = self.root / f"{name}.log"
        path.unlink(missing_ok=True)
        return path

    def submitted_ids(self) -> list[str]:
        try:
            lines = self.ids_file.read_text().split()
        except FileNotFoundError:
            return []
        return [line for line in lines if line.isdigit()]

    def ids_since(self, mark: int) -> list[str]:
        return self.submitted_ids()[mark:]

    def cancel(self, ids: tp.Sequence[str], *, why: str = "") -> None:
        """scancel these job ids (ours), in chunks; arrays by their id (all tasks)."""
        todo = [i for i in dict.fromkeys(ids) if i not in self.cancelled]
        if not todo:
            return
        scancel = getattr(self, "real", {}).get("scancel") or shutil.which("scancel") \
            or "scancel"
        env = getattr(self, "env", self.ctx.env)
        env = {k: v for k, v in env.items() if not k.startswith("ADORA_BENCH_SLURM")}
        for start in range(0, len(todo), 500):
            subprocess.run([scancel, *todo[start:start + 500]], env=env, capture_output=True,
                           timeout=120)
        self.cancelled.update(todo)
        log(f"  cancelled {len(todo)} job(s) of ours{' (' + why + ')' if why else ''}")

    def wait_gone(self, ids: tp.Sequence[str], timeout: float = 60.0) -> bool:
        """Wait until none of these jobs is pending, running or completing."""
        if not ids:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.active(ids):
                return True
            time.sleep(1)
        return False

    def plain_env(self) -> dict[str, str]:
        """The environment for the harness's own Slurm commands (not counted)."""
        return {k: v for k, v in self.env.items() if not k.startswith("ADORA_BENCH_SLURM")}

    def active(self, ids: tp.Sequence[str], states: str = "PD,R,CG,S,CF,RQ") -> list[str]:
        out = subprocess.run([self.real["squeue"], "--noheader", "--array", "--format=%i|%T",
                              f"--states={states}", "--jobs=" + ",".join(ids)],
                             env=self.plain_env(), capture_output=True, text=True, timeout=60)
        return [line for line in out.stdout.splitlines() if line.strip()]

    def cleanup(self) -> None:
        self.cancel(self.submitted_ids(), why="end of the Slurm benchmarks")
        self.ids_file.unlink(missing_ok=True)  # all cancelled (or ended): nothing left over


def _stderr_tail() -> str:
    try:
        return (LOGS / "last-stderr.txt").read_text(errors="replace")
    except OSError:
        return ""


def run_counted(ctx: Context, bed: SlurmBed, name: str, cmd: list[str], *, hold: bool = False,
                timeout: float = 900.0) -> tuple[Measure, dict[str, int], str, str]:
    """One measured command with its Slurm calls counted: (measure, calls, stdout, stderr)."""
    slurm_log = bed.log_path(name)
    out = LOGS / f"out-{name}.txt"
    measure = run_measured(cmd, cwd=ctx.proj, env=bed.env_for(slurm_log, hold=hold),
                           stdout=out, timeout=timeout)
    stderr = _stderr_tail()
    (LOGS / f"err-{name}.txt").write_text(stderr)
    return measure, by_tool(read_calls(slurm_log)), out.read_text(errors="replace"), stderr


# -- S1: first submission ------------------------------------------------------------------------
#: Grids of S1: each is a first submission (new XPs); S2 re-runs the first.
SUBMIT_GRIDS = ("s1k", "s1k2", "s1k3")


def submit_s1k(ctx: Context, bed: SlurmBed, *, measured: bool) -> None:
    """S1: first submissions, alternating adora and Dora, one new grid per run (held jobs).

    The jobs of every run but the first are cancelled at once: S2 re-runs ``s1k``.
    """
    if "s1k" in bed.submitted:
        return
    n = ctx.slurm_sizes["s1k"]
    runs = max(1, min(len(SUBMIT_GRIDS), ctx.opts.submit_runs if measured else 1))
    log(f"[S1] first submission of a {n}-XP grid to the test cluster (jobs held), "
        f"{runs} run(s) per tool, each on a new grid")
    # Untimed warm-up: dry runs fill the bytecode and file caches of both tools.
    run_measured(ctx.adora_cmd("grid", "s1k", "--dry-run", "--backend", "slurm"),
                 cwd=ctx.proj, env=bed.env_for(), stdout=LOGS / "out-warm.txt")
    run_measured(ctx.dora_cmd("grid", "s1k", "--dry_run", "--no_monitoring"), cwd=ctx.proj,
                 env=bed.env_for(), stdout=LOGS / "out-warm.txt")
    per_run: dict[str, list[dict[str, tp.Any]]] = {"adora": [], "dora": []}
    for grid in SUBMIT_GRIDS[:runs]:
        for tool, cmd in (("adora", ctx.adora_cmd("grid", grid, "--backend", "slurm")),
                          ("dora", ctx.dora_cmd("grid", grid, "--no_monitoring"))):
            mark = len(bed.submitted_ids())
            measure, calls, stdout, stderr = run_counted(ctx, bed, f"S1-{grid}-{tool}", cmd,
                                                         hold=True)
            ids = bed.ids_since(mark)
            bed.submitted[f"{grid}-{tool}"] = ids
            expected = 1 if tool == "adora" else n
            if calls.get("sbatch", 0) != len(ids):
                raise BenchError(f"{tool}: {calls.get('sbatch', 0)} sbatch calls but "
                                 f"{len(ids)} job ids\n{stderr[-1000:]}")
            if tool == "adora" and f"Submitted {n} XP(s)" not in stderr:
                raise BenchError(f"adora did not submit {n} XPs:\n{stderr[-1000:]}")
            if len(ids) < expected:
                raise BenchError(f"{tool} submitted {len(ids)} jobs, expected {expected}:\n"
                                 f"{stderr[-1000:]}")
            per_run[tool].append({"grid": grid, "wall": measure.wall, "cpu": measure.cpu,
                                  "calls": calls, "jobs": len(ids),
                                  "maxrss_mb": measure.maxrss_kb / 1024})
            log(f"  {grid} {tool}: {measure.wall:.2f} s wall, {measure.cpu:.2f} s cpu; "
                f"Slurm calls: {_fmt_counts(calls)}")
        if grid != "s1k":
            bed.cancel(bed.submitted[f"{grid}-adora"] + bed.submitted[f"{grid}-dora"],
                       why=f"{grid} measured")
    bed.submitted["s1k"] = []
    results = {tool: {"wall": statistics.median(r["wall"] for r in rs),
                      "cpu": statistics.median(r["cpu"] for r in rs),
                      "calls": rs[0]["calls"], "runs": rs} for tool, rs in per_run.items()}
    ctx.raw["slurm_submit"] = results
    if ctx.opts.verbose:
        trace_submission(ctx, bed)
    if not measured:
        return
    a, d = results["adora"], results["dora"]
    label = f"S1. first submission {n:,} XPs"
    walls = {tool: [round(r["wall"], 2) for r in rs] for tool, rs in per_run.items()}
    ctx.rows.append(Row(label, f"wall of the submitting command, median of {runs}", "s",
                        a["wall"], d["wall"], ("ratio", 1 / 20),
                        note=f"adora: `adora grid s1k --backend slurm` (one job array), runs "
                             f"{walls['adora']} s; Dora: `dora grid s1k --no_monitoring` (one "
                             f"sbatch per XP through submitit), runs {walls['dora']} s; real "
                             "test cluster, every job submitted with --hold; each run a new "
                             "grid"))
    ctx.rows.append(Row(label, "CPU of the submitting command", "s", a["cpu"], d["cpu"]))
    ctx.rows.append(Row(label, "sbatch calls", "cmds", a["calls"].get("sbatch", 0),
                        d["calls"].get("sbatch", 0)))
    ctx.rows.append(Row(label, "all Slurm commands", "cmds", sum(a["calls"].values()),
                        sum(d["calls"].values()),
                        note=f"adora: {_fmt_counts(a['calls'])}; Dora: "
                             f"{_fmt_counts(d['calls'])}"))


def trace_submission(ctx: Context, bed: SlurmBed) -> None:
    """``--verbose``: the same first submission (grid s1kv, new XPs), phase by phase."""
    trace_file = bed.root / "trace-s1kv.json"
    trace_file.unlink(missing_ok=True)
    env = dict(bed.env_for(bed.log_path("S1-trace"), hold=True),
               ADORA_BENCH_TRACE=str(trace_file))
    mark = len(bed.submitted_ids())
    measure = run_measured([str(ctx.adora_py), str(BENCH_DIR / "trace_adora.py"), "-P",
                            ADORA_PKG, "grid", "s1kv", "--backend", "slurm"], cwd=ctx.proj,
                           env=env, stdout=LOGS / "out-S1-trace.txt")
    bed.submitted["s1kv"] = bed.ids_since(mark)
    bed.cancel(bed.submitted["s1kv"], why="traced submission")
    try:
        trace = json.loads(trace_file.read_text())
    except (OSError, ValueError):
        log("  (no trace written)")
        return
    ctx.raw["slurm_submit_trace"] = {"wall": measure.wall, **trace}
    log(f"  adora's first submission, phase by phase (grid s1kv, {measure.wall:.2f} s wall, "
        f"{trace['total_in_process']:.2f} s in-process; start = seconds since start-up):")
    for label, entry in sorted(trace["phases"].items(), key=lambda kv: kv[1]["first"]):
        log(f"    start {entry['first']:6.3f}  {entry['seconds']:6.3f} s in {entry['calls']:.0f} "
            f"call(s)  {label}")


def bench_slurm_submit(ctx: Context) -> None:
    submit_s1k(ctx, ctx.slurm_bed(), measured=True)


# -- S2: re-run of the submitted grid ----------------------------------------------------------
def bench_slurm_rerun(ctx: Context) -> None:
    bed = ctx.slurm_bed()
    grid, n = "s1k", ctx.slurm_sizes["s1k"]
    submit_s1k(ctx, bed, measured=False)
    runs = ctx.opts.runs
    log(f"[S2] re-run of the submitted {n}-XP grid (both tools' jobs held in the queue), "
        f"{runs} timed runs after one warm-up")
    results: dict[str, tp.Any] = {}
    for tool, cmd in (("adora", ctx.adora_cmd("grid", grid, "--backend", "slurm")),
                      ("dora", ctx.dora_cmd("grid", grid, "--no_monitoring"))):
        walls, cpus, counts = [], [], []
        for index in range(runs + 1):
            # adora shares squeue results between processes for 2 s (PollCache): space the
            # runs so that each one pays its own query, as a re-run minutes later would.
            time.sleep(POLL_CACHE_AGE)
            measure, calls, stdout, stderr = run_counted(ctx, bed, f"S2-{tool}-{index}", cmd)
            if calls.get("sbatch"):
                raise BenchError(f"{tool} submitted again on a re-run: {calls}")
            if tool == "adora" and f"{n} XPs: {n} PENDING" not in stdout:
                raise BenchError(f"adora's re-run did not show {n} PENDING XPs:\n"
                                 f"{stdout[-400:]}\n{stderr[-400:]}")
            if tool == "dora" and stdout.count(" PEN") < n:
                raise BenchError(f"Dora's re-run did not show {n} PENDING XPs:\n"
                                 f"{stdout[-400:]}\n{stderr[-400:]}")
            if index == 0:
                continue  # warm-up
            walls.append(measure.wall)
            cpus.append(measure.cpu)
            counts.append(calls)
        total = [sum(c.values()) for c in counts]
        results[tool] = {"wall": statistics.median(walls), "wall_all": walls,
                         "cpu": statistics.median(cpus), "calls_all": counts,
                         "calls": statistics.median(total)}
        log(f"  {tool}: wall {results[tool]['wall']:.3f} s (runs {[round(w, 3) for w in walls]})"
            f", Slurm calls per run: {[_fmt_counts(c) for c in counts]}")
    ctx.raw["slurm_rerun"] = results
    a, d = results["adora"], results["dora"]
    label = f"S2. re-run {n:,} submitted XPs"
    ctx.rows.append(Row(label, f"wall, median of {runs}", "s", a["wall"], d["wall"],
                        ("ratio", 0.1),
                        note="no change to the grid; all jobs held (PENDING) in the queue; "
                             "adora: `adora grid s1k --backend slurm`; Dora: `dora grid s1k "
                             "--no_monitoring`; the re-run target of the engine issue, which "
                             "asks for this comparison on the real cluster once the Slurm "
                             "backend exists (benchmarks 2 and 2' were the stand-ins)"))
    ctx.rows.append(Row(label, "Slurm commands per re-run", "cmds", a["calls"], d["calls"],
                        note=f"adora: {_fmt_counts(a['calls_all'][-1])}; Dora: "
                             f"{_fmt_counts(d['calls_all'][-1])} (per run)"))


def finish_s1k(ctx: Context) -> None:
    bed = ctx._slurm_bed
    if isinstance(bed, SlurmBed) and "s1k" in bed.submitted:
        ids = [i for key, got in bed.submitted.items() if key.startswith("s1k")
               for i in got]
        bed.cancel(ids, why="S1/S2 done")


# -- S3: Slurm commands per monitoring refresh -------------------------------------------------
@dataclass
class WatchConfig:
    key: str
    label: str
    groups: list[list[str]]  # grids watched by each process
    interval: float
    stagger: float = 0.0


def _tick_args(interval: float) -> str:
    # Dora sleeps int(interval * 60) seconds: a hair more, so that it is the intended value.
    return f"{(interval + 0.01) / 60:.6f}"


def measure_watch(ctx: Context, bed: SlurmBed, tool: str, config: WatchConfig,
                  window: float) -> dict[str, tp.Any]:
    """Start one watcher per group, measure Slurm queries per refresh over ``window`` s.

    Ticks come from ticks.py (one line per refresh and process); queries from the
    wrappers (with the pid of the process that ran them). For each process, the
    refreshes that start in the window are counted, with every query that process
    made from the first of them to the start of its next refresh after the window.
    """
    name = f"S3-{config.key}-{tool}"
    slurm_log, tick_log = bed.log_path(name), bed.log_path(name + "-ticks")
    env = bed.env_for(slurm_log, tick_log=tick_log)
    python = ctx.adora_py if tool == "adora" else ctx.dora_py
    procs: list[subprocess.Popen[bytes]] = []
    files = []
    try:
        for index, grids in enumerate(config.groups):
            if index and config.stagger:
                time.sleep(config.stagger)
            if tool == "adora":
                args = ["-P", ADORA_PKG, "grid", *grids, "--backend", "slurm", "--watch"]
            else:
                args = ["-P", DORA_PKG, "grid", *grids]
            args += ["-i", _tick_args(config.interval)]
            out = open(LOGS / f"out-{name}-{index}.txt", "wb")
            files.append(out)
            procs.append(subprocess.Popen(
                [str(python), str(BENCH_DIR / "ticks.py"), tool, *args], cwd=ctx.proj,
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True))
        # Warm-up: every process in its monitoring loop (adora: 2 refreshes; Dora: its 2
        # updates while running the grid, then 1 refresh of the loop).
        need = 2 if tool == "adora" else 3
        deadline = time.monotonic() + 120
        while True:
            ticks = _ticks(tick_log)
            if all(len(ticks.get(p.pid, [])) >= need for p in procs):
                break
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                raise BenchError(f"a {tool} watcher exited ({dead[0].returncode}); see "
                                 f"{LOGS}/out-{name}-*.txt")
            if time.monotonic() > deadline:
                raise BenchError(f"{tool} watchers did not reach their monitoring loop: "
                                 f"{ {p.pid: len(ticks.get(p.pid, [])) for p in procs} }")
            time.sleep(0.2)
        t0 = time.time()
        time.sleep(window)
        t1 = time.time()
        # Let every process start one more refresh after the window (closes the last one).
        deadline = time.monotonic() + config.interval + 30
        while time.monotonic() < deadline:
            ticks = _ticks(tick_log)
            if all(any(t >= t1 for t in ticks.get(p.pid, [])) for p in procs):
                break
            time.sleep(0.2)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for f in files:
            f.close()
    ticks = _ticks(tick_log)
    calls = read_calls(slurm_log)
    per_process = []
    total_ticks, total_calls = 0, {tool_: 0 for tool_ in QUERIES}
    for proc in procs:
        starts = sorted(ticks.get(proc.pid, []))
        inside = [t for t in starts if t0 <= t < t1]
        after = [t for t in starts if t >= t1]
        if not inside:
            raise BenchError(f"{tool} process {proc.pid} made no refresh in the window")
        end = after[0] if after else time.time()
        mine = [c for c in calls if c.pid == proc.pid and inside[0] <= c.time < end]
        counts = by_tool(mine)
        per_process.append({"pid": proc.pid, "grids": config.groups[procs.index(proc)],
                            "refreshes": len(inside), "calls": counts})
        total_ticks += len(inside)
        for q in QUERIES:
            total_calls[q] += counts.get(q, 0)
    rounds = total_ticks / len(procs)
    queries = sum(total_calls.values())
    result = {"processes": len(procs), "interval": config.interval, "window": t1 - t0,
              "stagger": config.stagger, "refreshes": total_ticks,
              "refreshes_per_process": rounds, "calls": total_calls,
              "per_refresh_round": queries / rounds, "per_process": per_process,
              "other_calls": by_tool(c for c in calls if c.tool not in QUERIES)}
    log(f"  {tool} {config.label}: {total_ticks} refreshes in {t1 - t0:.0f} s "
        f"({rounds:.1f} per process), {_fmt_counts(total_calls)} -> "
        f"{result['per_refresh_round']:.2f} queries per refresh round")
    return result


def _ticks(path: Path) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out.setdefault(int(parts[1]), []).append(float(parts[0]))
    return out


def bench_slurm_watch(ctx: Context) -> None:
    bed = ctx.slurm_bed()
    opts = ctx.opts
    n = ctx.slurm_sizes["w1"]
    interval, window = opts.watch_interval, opts.watch_window
    log(f"[S3] Slurm queries per monitoring refresh: {len(WATCH_GRIDS)} grids of {n} XPs; "
        f"adora's jobs run (10 tasks of each array at once, 100 epochs of 3 s), Dora's are "
        f"held; refresh every {interval:g} s, {window:g} s windows")
    mark = len(bed.submitted_ids())
    _, calls, _, stderr = run_counted(ctx, bed, "S3-setup-adora",
                                      ctx.adora_cmd("grid", *WATCH_GRIDS, "--backend", "slurm"))
    adora_ids = bed.ids_since(mark)
    bed.submitted["w-adora"] = adora_ids
    if len(adora_ids) != len(WATCH_GRIDS):
        raise BenchError(f"adora submitted {len(adora_ids)} arrays for {len(WATCH_GRIDS)} "
                         f"grids:\n{stderr[-800:]}")
    dora_ids: list[str] = []
    try:
        for grid in WATCH_GRIDS:
            mark = len(bed.submitted_ids())
            run_counted(ctx, bed, f"S3-setup-dora-{grid}",
                        ctx.dora_cmd("grid", grid, "--no_monitoring"), hold=True)
            dora_ids += bed.ids_since(mark)
        bed.submitted["w-dora"] = dora_ids
        # Wait until adora's jobs run (10 per array).
        deadline = time.monotonic() + 120
        while True:
            running = len(bed.active(adora_ids, states="R"))
            if running >= min(10, n) * len(WATCH_GRIDS) or time.monotonic() > deadline:
                break
            time.sleep(1)
        log(f"  {running} of adora's tasks running, {len(dora_ids)} Dora jobs held")
        configs = [
            WatchConfig("a", "1 grid, 1 process", [["w1"]], interval),
            WatchConfig("b", "2 grids, 1 process", [["w1", "w2"]], interval),
            WatchConfig("c", "5 grids, 1 process", [WATCH_GRIDS], interval),
            WatchConfig("d", "2 grids, 2 processes", [["w1"], ["w2"]], interval),
            WatchConfig("e", "5 grids, 5 processes", [[g] for g in WATCH_GRIDS], interval),
        ]
        if opts.watch_stagger_interval > 0:
            slow = opts.watch_stagger_interval
            configs.append(WatchConfig(
                "f", f"5 grids, 5 processes started {slow / 5:g} s apart, refresh {slow:g} s",
                [[g] for g in WATCH_GRIDS], slow, stagger=slow / 5))
        adora: dict[str, tp.Any] = {}
        for config in configs:
            win = window if config.interval == interval else max(window, 3 * config.interval)
            adora[config.key] = measure_watch(ctx, bed, "adora", config, win)
        dora: dict[str, tp.Any] = {}
        dora_configs = {1: configs[0], 2: configs[3], 5: configs[4]}
        for count, config in dora_configs.items():
            if count in opts.watch_dora:
                dora[str(count)] = measure_watch(ctx, bed, "dora", config, window)
        ctx.raw["slurm_watch"] = {"adora": adora, "dora": dora}
        running_after = len(bed.active(adora_ids, states="R"))
        ctx.raw["slurm_watch"]["adora_running_after"] = running_after
        for config in configs:
            grids = sum(len(g) for g in config.groups)
            d = dora.get(str(grids))
            a = adora[config.key]
            label = f"S3{config.key}. watch {config.label}"
            note = (f"adora: {_fmt_counts(a['calls'])} in {a['refreshes']} refreshes of "
                    f"{a['processes']} process(es); Dora: "
                    + ("not measured" if d is None else
                       f"{_fmt_counts(d['calls'])} in {d['refreshes']} refreshes of "
                       f"{d['processes']} process(es)"))
            if config.key == "a":
                note += ("; per refresh round = queries / (refreshes / processes); Dora "
                         "watches one grid per process; target: adora's design (one squeue "
                         "per tick whatever the grids, shared between processes)")
            ctx.rows.append(Row(label, "squeue+sacct per refresh", "cmds",
                                a["per_refresh_round"],
                                None if d is None else d["per_refresh_round"], ("abs", 1.0),
                                note=note))
        finished(ctx, bed, adora_ids, dora_ids)
    finally:
        bed.cancel(adora_ids + dora_ids, why="S3 done")


def finished(ctx: Context, bed: SlurmBed, adora_ids: list[str], dora_ids: list[str]) -> None:
    """S3g: the same grids once every job ended (cancelled): one more `grid` command."""
    log("[S3g] the watched grids once their jobs ended (cancelled)")
    bed.cancel(adora_ids + dora_ids, why="to end them")
    if not bed.wait_gone(adora_ids + dora_ids, timeout=120):
        raise BenchError("the cancelled jobs are still in the queue after 120 s")
    runs = {}
    for index in range(2):
        time.sleep(POLL_CACHE_AGE)
        _, calls, stdout, _ = run_counted(ctx, bed, f"S3g-adora-{index}",
                                          ctx.adora_cmd("grid", *WATCH_GRIDS, "--backend",
                                                        "slurm"))
        runs[f"adora_{index}"] = calls
    dora_total: dict[str, int] = {}
    for grid in WATCH_GRIDS:
        _, calls, _, _ = run_counted(ctx, bed, f"S3g-dora-{grid}",
                                     ctx.dora_cmd("grid", grid, "--no_monitoring"))
        for tool, count in calls.items():
            dora_total[tool] = dora_total.get(tool, 0) + count
    runs["dora"] = dora_total
    ctx.raw["slurm_finished"] = runs
    log(f"  adora, first run after the end: {_fmt_counts(runs['adora_0'])}; second: "
        f"{_fmt_counts(runs['adora_1'])}; Dora, one run per grid: {_fmt_counts(dora_total)}")
    ctx.rows.append(Row(
        "S3g. 5 ended grids, one more `grid`", "Slurm commands", "cmds",
        sum(runs["adora_1"].values()), sum(dora_total.values()),
        note=f"jobs cancelled; adora `grid w1..w5` a second time (the first, which persisted "
             f"the final states, made {_fmt_counts(runs['adora_0'])}); Dora: `grid wN "
             "--no_monitoring` for each of the 5 grids (Dora keeps no state between runs)"))


# -- S4: remote submission over SSH with added latency -----------------------------------------
class SshBed:
    """A private sshd, the delaying relay, the cluster TOML, the remote workdir."""

    def __init__(self, ctx: Context, bed: SlurmBed) -> None:
        self.ctx = ctx
        self.root = WORK / "ssh"
        remove_tree(self.root)
        self.root.mkdir(parents=True)
        self.state_dir = Path(ctx.opts.sshd_state_dir)
        self.remote = Path(ctx.opts.remote_workdir)
        remove_tree(self.remote)
        got = run_json([str(ctx.adora_py), str(BENCH_DIR / "testbed.py"), "sshd-start",
                        "--state-dir", str(self.state_dir), "--slurm-conf", bed.info["conf"]],
                       cwd=BENCH_DIR, env=ctx.env, timeout=600)
        if "error" in got:
            raise Skip(f"no test sshd: {got['error']}")
        self.sshd = got
        self.relay: subprocess.Popen[str] | None = None
        self.relay_port = self._start_relay(ctx.opts.ssh_delay)
        pattern, key_type, key_data = got["host_key_entry"].split()[:3]
        known = self.root / "known_hosts"
        known.write_text(f"[127.0.0.1]:{self.relay_port},[127.0.0.1]:{got['port']} "
                         f"{key_type} {key_data}\n")
        self.clusters = self.root / "clusters.toml"
        lines = []
        for name, port in (("bench", self.relay_port), ("direct", got["port"])):
            fields = {"host": "127.0.0.1", "port": port, "user": got["username"],
                      "identity_file": got["client_key"], "known_hosts": str(known),
                      "workdir": str(self.remote), "python": str(ctx.adora_py)}
            lines.append(f"[clusters.{name}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in fields.items()]
            lines.append("")
        self.clusters.write_text("\n".join(lines))
        env = dict(ctx.env)
        env["ADORA_CLUSTERS_FILE"] = str(self.clusters)
        env["ADORA_CACHE_DIR"] = str(self.root / "adora-cache")
        env.pop("ADORA_BACKEND", None)
        env.pop("ADORA_CLUSTER", None)
        self.env = env
        self.ssh_base = ["ssh", "-i", got["client_key"], "-o", f"UserKnownHostsFile={known}",
                         "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
                         "-o", "BatchMode=yes", "-l", got["username"]]

    def cli(self, *args: str) -> list[str]:
        """adora's CLI through ssh_probe.py, which times SSHConnection's methods."""
        return [str(self.ctx.adora_py), str(BENCH_DIR / "ssh_probe.py"), "cli", "-P",
                ADORA_PKG, *args]

    def traced(self, name: str, *args: str) -> tuple[Measure, dict[str, tp.Any]]:
        """Run ``adora ARGS`` measured; also return where its SSH time went."""
        trace_file = self.root / f"trace-{name}.json"
        trace_file.unlink(missing_ok=True)
        env = dict(self.env, ADORA_BENCH_SSH_TRACE=str(trace_file))
        measure = run_measured(self.cli(*args), cwd=self.ctx.proj, env=env,
                               stdout=LOGS / f"out-{name}.txt", timeout=900)
        try:
            trace = json.loads(trace_file.read_text())
        except (OSError, ValueError):
            trace = {}
        summary = trace.get("summary", {})
        log(f"  {name}: {measure.wall:.2f} s wall; SSH: " + "; ".join(
            f"{key} x{v['count']:.0f} busy {v['busy']:.2f} s ({v['first']:.2f}-"
            f"{v['last_end']:.2f} s)" for key, v in sorted(summary.items(),
                                                             key=lambda kv: kv[1]['first'])))
        return measure, trace

    def _start_relay(self, delay: float) -> int:
        self.relay = subprocess.Popen(
            [sys.executable, str(BENCH_DIR / "relay.py"), "--target",
             f"127.0.0.1:{self.sshd['port']}", "--delay", str(delay)],
            stdout=subprocess.PIPE, stderr=open(self.root / "relay.log", "w"), text=True,
            start_new_session=True)
        assert self.relay.stdout is not None
        line = self.relay.stdout.readline().split()
        if len(line) != 3 or line[0] != "listening":
            raise BenchError(f"the relay did not start: {line}")
        return int(line[2])

    def close(self) -> None:
        if self.relay is not None and self.relay.poll() is None:
            self.relay.terminate()
            try:
                self.relay.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.relay.kill()
        run_json([str(self.ctx.adora_py), str(BENCH_DIR / "testbed.py"), "sshd-stop",
                  "--state-dir", str(self.state_dir)], cwd=BENCH_DIR, env=self.ctx.env)
        if not self.ctx.opts.keep:
            remove_tree(self.remote)


def _git_project(proj: Path) -> None:
    """Make the generated project a git repository of its own (outputs ignored).

    adora ships what git would commit; the project lives in an ignored folder of
    the adora repository, where that is nothing at all.
    """
    (proj / ".gitignore").write_text("outputs_adora/\noutputs_dora/\n")
    if not (proj / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=proj, check=True, capture_output=True)


def _remote_array(bed: SlurmBed, remote: Path) -> list[str]:
    """Ids of the arrays adora submitted over SSH, asked to Slurm by job name.

    Each submission has its folder ``<remote>/outputs_adora/arrays/<job name>/``;
    the names are unique (they carry the submission's token). This does not
    depend on how adora records job ids locally.
    """
    folder = remote / "outputs_adora" / "arrays"
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if not names:
        return []
    out = subprocess.run([bed.real["squeue"], "--noheader", "--format=%F", "--states=all",
                          "--name=" + ",".join(names)], env=bed.plain_env(),
                         capture_output=True, text=True, timeout=60)
    return sorted({line.strip() for line in out.stdout.splitlines() if line.strip()})


def bench_ssh(ctx: Context) -> None:
    bed = ctx.slurm_bed()
    grid, n = "r1k", ctx.slurm_sizes["r1k"]
    delay = ctx.opts.ssh_delay
    log(f"[S4] {n} XPs submitted over SSH through a relay adding {2 * delay * 1000:.0f} ms "
        "of round-trip time")
    ssh = SshBed(ctx, bed)
    array_ids: list[str] = []
    try:
        _git_project(ctx.proj)
        probe = run_json([str(ctx.adora_py), str(BENCH_DIR / "ssh_probe.py"), "rtt",
                          "--cluster", "bench", "--cluster", "direct"], cwd=ctx.proj,
                         env=ssh.env, timeout=300)
        probe["ssh_true"] = {}
        for name, port in (("bench", ssh.relay_port), ("direct", ssh.sshd["port"])):
            walls = []
            for _ in range(3):
                start = time.perf_counter()
                subprocess.run([*ssh.ssh_base, "-p", str(port), "127.0.0.1", "true"],
                               check=True, capture_output=True, timeout=60)
                walls.append(time.perf_counter() - start)
            probe["ssh_true"][name] = statistics.median(walls)
        ctx.raw["ssh_rtt"] = probe
        b, d = probe["bench"], probe["direct"]
        log(f"  round trip (SFTP stat): {b['stat'] * 1000:.1f} ms relayed, "
            f"{d['stat'] * 1000:.1f} ms direct; `true` on an open connection: "
            f"{b['true'] * 1000:.1f} / {d['true'] * 1000:.1f} ms; `ssh host true` (new "
            f"connection): {probe['ssh_true']['bench'] * 1000:.0f} / "
            f"{probe['ssh_true']['direct'] * 1000:.0f} ms")

        # Untimed warm-up (bytecode caches): a dry run evaluates the grid, submits nothing.
        run_measured(ssh.cli("grid", grid, "--cluster", "bench", "--dry-run"),
                     cwd=ctx.proj, env=ssh.env, stdout=LOGS / "out-warm.txt")
        submit, trace = ssh.traced("S4-submit", "grid", grid, "--cluster", "bench")
        ctx.raw["ssh_submit_trace"] = trace
        stderr = _stderr_tail()
        (LOGS / "err-S4-submit.txt").write_text(stderr)
        array_ids = _remote_array(bed, ssh.remote)
        if f"Submitted {n} XP(s)" not in stderr:
            raise BenchError(f"adora did not submit {n} XPs over SSH:\n{stderr[-1000:]}")
        log(f"  submitted in {submit.wall:.2f} s wall ({submit.cpu:.2f} s cpu); arrays "
            f"{array_ids}")
        ctx.raw["ssh_submit"] = {"wall": submit.wall, "cpu": submit.cpu, "arrays": array_ids}
        ctx.rows.append(Row(f"S4. SSH submission {n:,} XPs, +{2 * delay * 1000:.0f} ms RTT",
                            "wall of `adora grid --cluster`", "s", submit.wall, None,
                            ("abs", 3.0),
                            note="first submission from the project folder: SSH connection, "
                                 "array size limit and code snapshot looked for side by side, "
                                 "then one remote command (argv.json, sbatch script and code "
                                 "snapshot on its stdin, sbatch, the submitted XPs' metric "
                                 "files), then the table; Dora cannot submit remotely"))

        # Release the jobs (2 epochs of metrics each): the flag they wait for, and no
        # more throttle on the array.
        ssh.remote.mkdir(parents=True, exist_ok=True)
        (ssh.remote / "release").write_text("go\n")
        for array in array_ids:
            subprocess.run([bed.real["scontrol"], "update", f"JobId={array}",
                            "ArrayTaskThrottle=0"], env=bed.plain_env(), capture_output=True,
                           timeout=60)
        start = time.monotonic()
        last = -1
        while True:
            left = len(bed.active(array_ids))
            if left == 0:
                break
            if time.monotonic() - start > ctx.opts.jobs_timeout:
                raise BenchError(f"{left} remote jobs still queued after "
                                 f"{ctx.opts.jobs_timeout:.0f} s")
            if left != last and int(time.monotonic() - start) % 15 < 3:
                log(f"  {time.monotonic() - start:5.0f} s: {left} jobs pending or running")
                last = left
            time.sleep(3)
        ctx.raw["ssh_jobs_seconds"] = time.monotonic() - start
        log(f"  the {n} jobs ran in {time.monotonic() - start:.0f} s")

        # One refresh from the command line: the first after the jobs ended (final states
        # persisted), then the next one (states known, metrics read again whole).
        walls = []
        for index in range(1):
            out = LOGS / f"out-S4-json-{index}.txt"
            measure, trace = ssh.traced(f"S4-json-{index}", "grid", grid, "--cluster", "bench",
                                        "--json")
            ctx.raw[f"ssh_json_{index}_trace"] = trace
            rows = json.loads(out.read_text())[grid]
            states = {}
            for row in rows:
                states[row.get("state")] = states.get(row.get("state"), 0) + 1
            with_metrics = sum(1 for row in rows if (row.get("metrics") or {}).get("valid"))
            if index == 0:
                log(f"  states {states}, {with_metrics} XPs with metrics")
                ctx.raw["ssh_states"] = {"states": states, "with_metrics": with_metrics}
            walls.append(measure.wall)
        if with_metrics < n:
            raise BenchError(f"only {with_metrics} of {n} XPs show metrics: {states}")
        ctx.raw["ssh_refresh_cli"] = walls
        log(f"  `adora grid {grid} --cluster bench --json`: {[round(w, 2) for w in walls]} s")
        label = f"S4. SSH refresh {n:,} XPs, +{2 * delay * 1000:.0f} ms RTT"
        ctx.rows.append(Row(label, "`adora grid --json` after the jobs", "s", walls[0],
                            None,
                            note="one CLI run once every job ended: connect, evaluate, states "
                                 "(final states recorded), every history read over SFTP"))
        inproc = run_json([str(ctx.adora_py), str(BENCH_DIR / "ssh_probe.py"), "refresh",
                           "--cluster", "bench", "--package", ADORA_PKG, "--grid", grid],
                          cwd=ctx.proj, env=ssh.env, timeout=600)
        ctx.raw["ssh_refresh_watch"] = inproc
        log(f"  GridWatch.refresh() on an open connection: first {inproc['first']:.2f} s, "
            f"then {inproc['next']:.2f} s (SSH commands {inproc['commands']})")
        ctx.rows.append(Row(label, "GridWatch.refresh(), first", "s", inproc["first"], None,
                            note="in one process, connection already open (as `--watch`): "
                                 "states + every history read whole"))
        ctx.rows.append(Row(label, "GridWatch.refresh(), next", "s", inproc["next"], None,
                            note="nothing new: states known final, histories unchanged "
                                 "(one remote `stat` for every history)"))
        ctx.rows.append(Row("S4. relay check", "SFTP stat round trip, relayed", "s", b["stat"],
                            None, note=f"direct: {d['stat'] * 1000:.2f} ms; `true` on an open "
                                       f"connection {b['true'] * 1000:.0f} ms relayed, "
                                       f"{d['true'] * 1000:.0f} ms direct; `ssh host true`: "
                                       f"{probe['ssh_true']['bench'] * 1000:.0f} / "
                                       f"{probe['ssh_true']['direct'] * 1000:.0f} ms"))
    finally:
        if array_ids:
            bed.cancel(array_ids, why="S4 done")
        ssh.close()
