"""``adora run -d``: start the workers of one XP on this machine for DDP.

Each worker is ``python -m adora -P <pkg> --main-module <mod> run -- <argv>`` with
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1`` and a free
``MASTER_PORT``; `adora.distrib.init` then joins them. Rank 0 writes to this
terminal, rank ``r > 0`` to ``<xp folder>/worker_<r>.log``. When one worker fails,
the others are stopped and the command fails naming that worker and its log;
Ctrl-C (or SIGTERM) stops them all.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import typing as tp
from dataclasses import dataclass
from pathlib import Path

from .errors import AdoraError

if tp.TYPE_CHECKING:
    from .main import DecoratedMain

__all__ = ["DDPWorkerError", "default_num_workers", "free_port", "start_ddp_workers",
           "worker_env", "worker_log"]

logger = logging.getLogger(__name__)


class DDPWorkerError(AdoraError):
    """A DDP worker of ``adora run -d`` failed; the others were stopped."""

    def __init__(self, message: str, rank: int, exit_code: int) -> None:
        super().__init__(message)
        self.rank = rank
        self.exit_code = exit_code if exit_code > 0 else 1


def default_num_workers() -> int:
    """The number of visible GPUs (``torch.cuda.device_count()``), at least 1."""
    try:
        import torch
    except ImportError:
        return 1
    return max(1, int(torch.cuda.device_count()))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def worker_env(base: tp.Mapping[str, str], rank: int, world_size: int, port: int
               ) -> dict[str, str]:
    """The environment of worker ``rank``. Pure."""
    env = dict(base)
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return env


def worker_log(folder: Path, rank: int) -> Path:
    """Where worker ``rank > 0`` writes its output."""
    return folder / f"worker_{rank}.log"


@dataclass
class _Worker:
    rank: int
    proc: subprocess.Popen[bytes]
    log: Path | None


class _Stop(Exception):
    pass


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _stop_all(workers: list[_Worker], grace: float) -> None:
    # SIGTERM, then SIGKILL to whoever is still there after `grace` seconds.
    alive = [w for w in workers if w.proc.poll() is None]
    for worker in alive:
        try:
            worker.proc.terminate()
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for worker in alive:
        try:
            worker.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait()


def start_ddp_workers(main: DecoratedMain, argv: tp.Sequence[str],
                      num_workers: int | None = None, *, grace: float = 10.0,
                      poll: float = 0.2, log: tp.Callable[[str], None] | None = None) -> int:
    """Run the XP of ``argv`` as ``num_workers`` local processes; return 0 when all succeed.

    ``num_workers`` defaults to `default_num_workers`. Raises `DDPWorkerError` when a
    worker fails (after stopping the others), `KeyboardInterrupt` on Ctrl-C or
    SIGTERM (after stopping them all).
    """
    say = log or (lambda message: print(f"adora: {message}", file=sys.stderr, flush=True))
    world_size = default_num_workers() if num_workers is None else num_workers
    if world_size < 1:
        raise AdoraError(f"--ddp-workers must be at least 1, got {world_size}.")
    xp = main.get_xp(argv)
    main.init_xp(xp)
    xp.rendezvous_file.unlink(missing_ok=True)
    port = free_port()
    cmd = [sys.executable, "-m", "adora", "-P", main.package, "--main-module",
           main.main_module, "run", "--", *argv]
    say(f"Starting {world_size} DDP worker(s) for XP {xp.sig} (port {port}).")

    def on_term(signum: int, frame: tp.Any) -> None:
        raise _Stop()

    old_term = signal.signal(signal.SIGTERM, on_term)
    workers: list[_Worker] = []
    # One waiter thread per worker reports exits in the order they happen, so the
    # worker that failed first is the one named (the others often fail because of it).
    exits: queue.Queue[tuple[_Worker, int]] = queue.Queue()
    failed: tuple[_Worker, int] | None = None
    try:
        for rank in range(world_size):
            env = worker_env(os.environ, rank, world_size, port)
            if rank == 0:
                worker = _Worker(rank, subprocess.Popen(cmd, env=env), None)
            else:
                path = worker_log(xp.folder, rank)
                with open(path, "wb") as out:
                    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT)
                worker = _Worker(rank, proc, path)
            workers.append(worker)
            threading.Thread(target=lambda w=worker: exits.put((w, w.proc.wait())),
                             name=f"adora-ddp-wait-{rank}", daemon=True).start()
        remaining = len(workers)
        while remaining and failed is None:
            try:
                worker, code = exits.get(timeout=poll)
            except queue.Empty:
                continue
            remaining -= 1
            if code != 0:
                failed = (worker, code)
    except (KeyboardInterrupt, _Stop):
        say("Interrupted: stopping all DDP workers.")
        _stop_all(workers, grace)
        raise KeyboardInterrupt from None
    except BaseException:
        _stop_all(workers, grace)
        raise
    finally:
        signal.signal(signal.SIGTERM, old_term)
    if failed is not None:
        worker, code = failed
        others = [w.rank for w in workers if w is not worker and w.proc.poll() is None]
        _stop_all(workers, grace)
        where = f"its log: {worker.log}" if worker.log is not None else \
            "its output is above"
        stopped = f"; stopped worker(s) {', '.join(map(str, others))}" if others else ""
        raise DDPWorkerError(f"DDP worker of rank {worker.rank} {_describe(code)} "
                             f"({where}){stopped}.", worker.rank, code)
    say(f"All {world_size} DDP worker(s) completed successfully.")
    return 0
