"""Helpers of the benchmark harness: measured subprocesses, environments, tool discovery.

Standard library only, so that ``python benchmarks/run.py`` works with any
Python 3.10+; adora and Dora run in their own virtualenvs as subprocesses.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import typing as tp
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
#: Everything the harness generates ($ADORA_BENCH_WORK moves it, e.g. for two runs at once).
WORK = Path(os.environ.get("ADORA_BENCH_WORK") or BENCH_DIR / ".work").resolve()
#: Outputs of the measured commands (deleted at the end unless --keep).
LOGS = WORK / "logs"


class BenchError(RuntimeError):
    """A benchmark could not run; the message says why."""


@dataclass
class Measure:
    """Cost of one command: wall time, CPU of its process tree, peak RSS of one process."""

    wall: float
    user: float
    sys: float
    maxrss_kb: int
    returncode: int

    @property
    def cpu(self) -> float:
        return self.user + self.sys


def log(*parts: tp.Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


def run_measured(cmd: tp.Sequence[str], *, cwd: Path, env: dict[str, str],
                 stdout: Path | None = None, timeout: float = 600.0,
                 check: bool = True) -> Measure:
    """Run ``cmd`` and measure it with ``wait4``: the rusage covers the process and
    every descendant it waited for (``ru_maxrss`` is the largest single process)."""
    LOGS.mkdir(parents=True, exist_ok=True)
    out = open(stdout, "wb") if stdout is not None else subprocess.DEVNULL
    err_path = LOGS / "last-stderr.txt"
    err = open(err_path, "wb")
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, start_new_session=True)
        timer = threading.Timer(timeout, _kill_group, (proc.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if stdout is not None:
            tp.cast(tp.IO[bytes], out).close()
        err.close()
    measure = Measure(wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss, proc.returncode)
    if check and proc.returncode != 0:
        tail = err_path.read_text(errors="replace").strip().splitlines()[-20:]
        raise BenchError(f"{' '.join(cmd)} (in {cwd}) exited with {proc.returncode}:\n"
                         + "\n".join(tail))
    return measure


def _kill_group(pid: int) -> None:
    # Only the process group of a command this harness started (start_new_session).
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def median_measure(measures: list[Measure]) -> dict[str, float]:
    return {
        "wall": statistics.median(m.wall for m in measures),
        "cpu": statistics.median(m.cpu for m in measures),
        "maxrss_mb": max(m.maxrss_kb for m in measures) / 1024,
        "runs": len(measures),
        "wall_all": [round(m.wall, 4) for m in measures],
    }


def base_env() -> dict[str, str]:
    """The environment of every measured command, the same for both tools.

    Bytecode caching is on (as after any ``pip install``; this sandbox sets
    PYTHONDONTWRITEBYTECODE=1, which would make every start-up recompile the
    sources), with the caches under ``.work/pycache`` so nothing is written
    next to the sources. Each command is run once untimed first.
    """
    env = dict(os.environ)
    for var in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV",
                "DORA_PACKAGE", "DORA_MAIN_MODULE", "ADORA_PACKAGE", "ADORA_MAIN_MODULE"):
        env.pop(var, None)
    env["PYTHONPYCACHEPREFIX"] = str(WORK / "pycache")
    env["PYTHONWARNINGS"] = "ignore"
    env["COLUMNS"] = "200"
    env["TERM"] = "dumb"
    return env


# -- the tools ---------------------------------------------------------------------------
def adora_python() -> Path:
    """Python of the adora project venv (``$ADORA_PYTHON``, else ``<repo>/.venv``)."""
    explicit = os.environ.get("ADORA_PYTHON")
    if explicit:
        return Path(explicit)
    venv = REPO / ".venv" / "bin" / "python"
    if venv.exists():
        return venv
    return Path(sys.executable)


def console_script(python: Path, name: str) -> list[str]:
    """The console script ``name`` next to ``python`` (what users type), else ``-m``."""
    script = python.parent / name
    if script.exists():
        return [str(script)]
    return [str(python), "-m", name]


def dora_python(explicit: str | None = None) -> Path:
    """Python of a venv with dora-search 0.1.13.

    Order: ``--dora-python``/``$DORA_PYTHON``; ``adora.testing.dora_venv`` (the
    project's cached side venv); else a venv built here under ``.work/dora-venv``.
    """
    explicit = explicit or os.environ.get("DORA_PYTHON")
    if explicit:
        return Path(explicit)
    proc = subprocess.run([str(adora_python()), "-m", "adora.testing.dora_venv"],
                          capture_output=True, text=True, cwd=REPO, env=base_env())
    if proc.returncode == 0 and proc.stdout.strip():
        return Path(proc.stdout.strip().splitlines()[-1])
    log("adora.testing.dora_venv unavailable (" + (proc.stderr.strip()[-300:] or "no output")
        + "); building a venv under benchmarks/.work/dora-venv")
    return _build_own_dora_venv(WORK / "dora-venv")


def _build_own_dora_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    marker = venv / ".ready"
    if marker.exists():
        return python
    env = base_env()
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(python), "-m", "pip", "install", "-q", "torch==2.13.0"],
             [str(python), "-m", "pip", "install", "-q", "dora-search==0.1.13", "hydra-core"]]
    for step in steps:
        if step[0] == sys.executable and python.exists():
            continue
        proc = subprocess.run(step, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise BenchError(f"Cannot build the Dora venv: {' '.join(step)}:\n"
                             f"{proc.stderr[-2000:]}")
    marker.write_text("ok")
    return python


FAKE_SLURM = {
    # Slurm with no jobs at all: every query answers empty, nothing can be submitted.
    "sacct": 'echo "JobID|State|NodeList"\n',
    "squeue": "exit 0\n",
    "sbatch": 'echo "sbatch: error: fake Slurm of the benchmarks, no submission" >&2\nexit 1\n',
    "srun": 'echo "srun: error: fake Slurm of the benchmarks" >&2\nexit 1\n',
    "scancel": "exit 0\n",
    "sinfo": "exit 0\n",
}


def fake_slurm_bin(root: Path) -> Path:
    """A folder of fake Slurm commands, put first on PATH for Dora.

    Dora's dry run needs no Slurm, but this machine may have a real cluster
    that Dora must not touch (orphan checks call squeue/scancel).
    """
    root.mkdir(parents=True, exist_ok=True)
    for name, body in FAKE_SLURM.items():
        path = root / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
    return root


def fake_slurm_completed_bin(root: Path) -> Path:
    """Fake Slurm where every submission works and every job is COMPLETED.

    ``sbatch`` hands out increasing job ids (``Submitted batch job N``, which is
    what submitit parses); ``sacct`` answers COMPLETED for every ``-j ID`` asked.
    It lets Dora really schedule a grid, then re-run it on finished jobs.
    """
    bin_dir, state = root / "bin", root / "state"
    bin_dir.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    (state / "next_id").write_text("1000")
    scripts = {
        "sbatch": (f'f="{state}/next_id"\nn=$(( $(cat "$f") + 1 ))\necho "$n" > "$f"\n'
                   'echo "Submitted batch job $n"\n'),
        "sacct": ('echo "JobID|State|NodeList"\nprev=""\nfor a in "$@"; do\n'
                  '  [ "$prev" = "-j" ] && echo "$a|COMPLETED|localhost"\n  prev="$a"\n'
                  'done\nexit 0\n'),
        "squeue": "exit 0\n", "srun": "exit 0\n", "scancel": "exit 0\n", "sinfo": "exit 0\n",
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
    return bin_dir


def with_path(env: dict[str, str], folder: Path) -> dict[str, str]:
    env = dict(env)
    env["PATH"] = f"{folder}{os.pathsep}{env.get('PATH', '')}"
    return env


def version_of(python: Path, module: str, env: dict[str, str]) -> str:
    code = ("import importlib.metadata as m, sys; "
            f"print(m.version({module!r}))")
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env)
    return proc.stdout.strip() or "?"


def run_json(cmd: tp.Sequence[str], *, cwd: Path, env: dict[str, str],
             timeout: float = 900.0) -> tp.Any:
    """Run a helper script that prints one JSON document on its last stdout line."""
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} exited with {proc.returncode}:\n"
                         f"{proc.stderr.strip()[-3000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise BenchError(f"{' '.join(cmd)} printed nothing.\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


# -- the local runner of adora ------------------------------------------------------------
def wait_runner_idle(outputs: Path, timeout: float = 60.0) -> bool:
    """Wait until no adora local runner holds its lock under ``outputs`` (it exits when idle).

    The runner is detached by adora; the harness never signals it, it only waits.
    """
    lock = outputs / ".adora" / "local" / "runner.lock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not lock.exists():
            return True
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            time.sleep(0.5)
            continue
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return True
        finally:
            os.close(fd)
    return False


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def machine_description() -> str:
    import platform

    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    distro = ""
    try:
        info = dict(line.split("=", 1) for line in
                    Path("/etc/os-release").read_text().splitlines() if "=" in line)
        distro = info.get("PRETTY_NAME", "").strip('"')
    except OSError:
        pass
    return (f"{os.cpu_count()} cores / {mem} {distro}, "
            f"Python {platform.python_version()}").strip()


def load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
