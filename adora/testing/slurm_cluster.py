"""A real single-node Slurm cluster on localhost, for adora's tests and CI.

Everything lives under one state directory (default ``/tmp/adora-slurm``):
configuration, spool, logs, the MUNGE key and socket, and a MariaDB data
directory for accounting. Daemons are started in the order that works without
systemd::

    munged -> mariadbd -> slurmdbd -> (sacctmgr add cluster) -> slurmctld -> slurmd

The node ``localhost`` claims 128 CPUs, 500 GB of memory and 8 fake GPUs (character
devices, so a ``--gres=gpu:2`` job gets ``CUDA_VISIBLE_DEVICES=0,1``), in two
partitions, ``debug`` (the default) and ``learnfair``. ``/etc/slurm/slurm.conf`` is
made a symlink to the state configuration so Slurm's commands work without
``SLURM_CONF``.

Starting needs Linux, root and, the first time, ``apt-get`` (the Debian packages are
installed when missing). :func:`unavailable_reason` says why the cluster cannot run
here, for tests to skip with that reason.

From Python::

    from adora.testing import slurm_cluster
    info = slurm_cluster.start()            # idempotent: a no-op when running
    subprocess.run(["sbatch", "--wrap", "true"], env={**os.environ, **info.env})
    with info.controller_stopped():         # slurmctld down, for "stale" tests
        ...
    slurm_cluster.stop()

From a shell::

    python -m adora.testing.slurm_cluster start|stop|status|env [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import typing as tp
from pathlib import Path

__all__ = [
    "DAEMONS",
    "DEFAULT_STATE_DIR",
    "MESSAGE_TIMEOUT",
    "PACKAGES",
    "ClusterInfo",
    "TestbedError",
    "TestbedUnavailableError",
    "cancel_all_jobs",
    "client_conf",
    "controller_stopped",
    "daemon_pids",
    "info",
    "install_packages",
    "is_running",
    "main",
    "pid_alive",
    "start",
    "start_controller",
    "start_daemon",
    "stop",
    "stop_controller",
    "stop_daemon",
    "terminate",
    "unavailable_reason",
]

#: Where the cluster keeps everything unless told otherwise (``$ADORA_SLURM_STATE_DIR``).
DEFAULT_STATE_DIR = Path(os.environ.get("ADORA_SLURM_STATE_DIR", "/tmp/adora-slurm"))

#: The Debian packages the cluster needs (installed with ``--no-install-recommends``).
PACKAGES: tuple[str, ...] = (
    "munge", "slurm-client", "slurmctld", "slurmd", "slurmdbd", "mariadb-server",
)

#: The daemons, in start order.
DAEMONS: tuple[str, ...] = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")

#: Executables that must exist for the cluster to start (else the packages are installed).
_BINARIES: tuple[str, ...] = (
    "munged", "mungekey", "mariadbd", "mariadb-install-db", "mariadb", "slurmdbd",
    "slurmctld", "slurmd", "sbatch", "sacct", "sacctmgr", "sinfo", "scontrol", "squeue",
)

_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_APT_LOCK = Path("/tmp/adora-apt.lock")
_POLICY_RC = Path("/usr/sbin/policy-rc.d")
_ETC_SLURM_CONF = Path("/etc/slurm/slurm.conf")

CLUSTER_NAME = "adora"
NODE_NAME = "localhost"
PARTITIONS: tuple[str, ...] = ("debug", "learnfair")
MAX_ARRAY_SIZE = 10001
#: slurm.conf's MessageTimeout: also how long a client retries a controller that is down.
MESSAGE_TIMEOUT = 30
NODE_CPUS = 128
NODE_MEMORY_MB = 512000
NODE_GPUS = 8
#: cred_expire of slurmctld: a requeued job may start again this many seconds (+1) later.
CTLD_CRED_EXPIRE = 10
#: cred_expire of slurmd: how old a job or step credential may be when slurmd checks it.
SLURMD_CRED_EXPIRE = 600


class TestbedError(RuntimeError):
    """The test cluster (or test sshd) could not be set up, started or stopped."""

    __test__ = False  # not a pytest test class, despite the name


class TestbedUnavailableError(TestbedError):
    """This machine cannot run the test cluster at all (not Linux, not root, no apt)."""

    __test__ = False


# --------------------------------------------------------------------------- system helpers


def which(name: str) -> str | None:
    """``shutil.which`` that also looks in the sbin folders, which root's PATH may lack."""
    path = os.environ.get("PATH", "") + os.pathsep + _SEARCH_PATH
    return shutil.which(name, path=path)


def _missing_binaries(binaries: tp.Iterable[str]) -> list[str]:
    return [name for name in binaries if which(name) is None]


def _base_unavailable_reason(what: str, binaries: tp.Iterable[str]) -> str | None:
    if os.environ.get("ADORA_NO_TESTBED"):
        return f"{what}: disabled by ADORA_NO_TESTBED"
    if not sys.platform.startswith("linux"):
        return f"{what} needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return (f"{what} needs root (it installs Debian packages and runs daemons as "
                f"root); this process runs as uid {os.geteuid()}")
    missing = _missing_binaries(binaries)
    if missing and which("apt-get") is None:
        return (f"{what} needs {', '.join(missing)}, which are not installed, and there "
                "is no apt-get to install them (a Debian-like system is needed)")
    return None


def unavailable_reason() -> str | None:
    """Why the Slurm test cluster cannot run on this machine, or None if it can.

    Tests skip with this text: ``pytest.skip(reason)``. Set ``ADORA_NO_TESTBED=1``
    to disable the cluster on purpose.
    """
    return _base_unavailable_reason("the Slurm test cluster", _BINARIES)


def _installed_packages(packages: tp.Sequence[str]) -> set[str]:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", *packages],
        capture_output=True, text=True, check=False)
    installed = set()
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] == "ii":
            installed.add(parts[0].split(":")[0])
    return installed


def _apt_lists_present() -> bool:
    lists = Path("/var/lib/apt/lists")
    return any(lists.glob("*_Packages*")) if lists.is_dir() else False


def install_packages(packages: tp.Sequence[str], *, log: Path | None = None) -> bool:
    """Install the Debian ``packages`` that are missing; True if anything was installed.

    Uses ``apt-get install --no-install-recommends`` with a temporary
    ``/usr/sbin/policy-rc.d`` that forbids postinst scripts to start daemons, and
    runs ``apt-get update`` first when there are no package lists (or when the
    install fails for want of fresh ones). Serialised across processes by a lock.
    """
    from filelock import FileLock

    if not set(packages) - _installed_packages(packages):
        return False
    with FileLock(str(_APT_LOCK)):
        missing = [p for p in packages if p not in _installed_packages(packages)]
        if not missing:
            return False
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive",
               "PATH": os.environ.get("PATH", "") + os.pathsep + _SEARCH_PATH}
        outputs: list[str] = []

        def apt(*args: str) -> bool:
            proc = subprocess.run(["apt-get", *args], env=env, capture_output=True,
                                  text=True, stdin=subprocess.DEVNULL, check=False)
            outputs.append(f"$ apt-get {' '.join(args)}\n{proc.stdout}{proc.stderr}")
            return proc.returncode == 0

        install_args = ("install", "-y", "-q", "--no-install-recommends",
                        "-o", "Dpkg::Options::=--force-confdef",
                        "-o", "Dpkg::Options::=--force-confold", *missing)
        made_policy = False
        if not _POLICY_RC.exists():
            _POLICY_RC.write_text("#!/bin/sh\n# adora test bed: no daemon starts in postinst\n"
                                  "exit 101\n")
            _POLICY_RC.chmod(0o755)
            made_policy = True
        try:
            ok = False
            if _apt_lists_present():
                ok = apt(*install_args)
            if not ok:
                ok = apt("update", "-q") and apt(*install_args)
        finally:
            if made_policy:
                _POLICY_RC.unlink(missing_ok=True)
        text = "\n".join(outputs)
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("a") as f:
                f.write(text)
        if not ok:
            raise TestbedError(f"could not install {' '.join(missing)}:\n{_tail_text(text)}")
        return True


def _proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:"):
                    return line.split()[1]
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
        return None
    return None


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs; a zombie counts as dead (PID 1 may reap it seconds later)."""
    return _proc_state(pid) not in (None, "Z", "X")


def _read_proc(pid: int, what: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{what}", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _comm(pid: int) -> str:
    return _read_proc(pid, "comm").decode(errors="replace").strip()


def _ppid(pid: int) -> int | None:
    data = _read_proc(pid, "stat").decode(errors="replace")
    # The command name is in parentheses and may hold spaces: split after the last ')'.
    try:
        return int(data.rsplit(")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return None


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _descendants(roots: tp.Iterable[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        parent = _ppid(pid)
        if parent is not None:
            children.setdefault(parent, []).append(pid)
    found: list[int] = []
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def _find_processes(comms: tp.Collection[str], marker: str) -> list[int]:
    """Live processes named one of ``comms`` whose command line or environment has ``marker``."""
    needle = marker.encode()
    me = os.getpid()
    found = []
    for pid in _all_pids():
        if pid == me or _comm(pid) not in comms or not pid_alive(pid):
            continue
        if needle in _read_proc(pid, "cmdline") or needle in _read_proc(pid, "environ"):
            found.append(pid)
    return found


def terminate(pids: tp.Iterable[int], *, timeout: float = 10.0) -> list[int]:
    """SIGTERM ``pids``, then SIGKILL what still runs after ``timeout``; returns the killed.

    Waits until each process is gone or a zombie (not merely until ``kill -0`` fails,
    which a zombie still passes).
    """
    pids = [pid for pid in pids if pid_alive(pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    stubborn = [pid for pid in pids if pid_alive(pid)]
    for pid in stubborn:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(p) for p in stubborn):
        time.sleep(0.05)
    left = [pid for pid in stubborn if pid_alive(pid)]
    if left:
        raise TestbedError(f"processes {left} survive SIGKILL")
    return stubborn


def _tail_text(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return f"--- last lines of {path} ---\n{_tail_text(text, lines)}"


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect((host, port))
        except OSError:
            return False
        return True


def _wait_until(check: tp.Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def spawn_detached(argv: tp.Sequence[str], *, log: Path, env: dict[str, str] | None = None,
                   timeout: float = 30.0) -> None:
    """Run ``argv`` detached from this process (its own session, reparented to init).

    For programs that do not daemonise themselves; output goes to ``log``.
    """
    setsid = which("setsid") or "setsid"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        subprocess.run([setsid, "-f", *argv], stdin=subprocess.DEVNULL, stdout=out,
                       stderr=subprocess.STDOUT, env=env, timeout=timeout, check=True,
                       close_fds=True)


# --------------------------------------------------------------------------- layout and config


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Every path of a cluster under its state directory."""

    root: Path
    ctld_port: int = 6817
    slurmd_port: int = 6818
    dbd_port: int = 6819
    db_port: int = 3307

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def conf(self) -> Path:
        return self.etc / "slurm.conf"

    @property
    def slurmd_conf(self) -> Path:
        """slurmd's own copy of slurm.conf (another ``cred_expire``; see :func:`_slurmd_conf`)."""
        return self.etc / "slurmd.conf"

    @property
    def dbd_conf(self) -> Path:
        return self.etc / "slurmdbd.conf"

    @property
    def gres_conf(self) -> Path:
        return self.etc / "gres.conf"

    @property
    def my_cnf(self) -> Path:
        return self.etc / "mariadb.cnf"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def munge_key(self) -> Path:
        return self.root / "munge" / "munge.key"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "run" / "munge.socket"

    @property
    def db_dir(self) -> Path:
        return self.root / "mysql"

    @property
    def db_socket(self) -> Path:
        return self.root / "mysql" / "mysqld.sock"

    @property
    def gpu_dir(self) -> Path:
        return self.root / "fakegpu"

    @property
    def ctld_spool(self) -> Path:
        return self.root / "spool" / "slurmctld"

    @property
    def slurmd_spool(self) -> Path:
        return self.root / "spool" / "slurmd"

    def pid_file(self, daemon: str) -> Path:
        return self.run / f"{daemon}.pid"

    def log_file(self, daemon: str) -> Path:
        return self.log / f"{daemon}.log"

    def out_file(self, daemon: str) -> Path:
        """Where a daemon's own stdout/stderr go at launch (before it opens its log)."""
        return self.log / f"{daemon}.out"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def daemon_env(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        env["PATH"] = os.environ.get("PATH", "") + os.pathsep + _SEARCH_PATH
        return env


_DB_USER = "slurm"
_DB_PASS = "adora-test"
_DB_NAME = "slurm_acct_db"


def _slurm_conf(lay: _Layout) -> str:
    lines = [
        "# Generated by adora.testing.slurm_cluster; rewritten at every start.",
        f"ClusterName={CLUSTER_NAME}",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={lay.ctld_port}",
        f"SlurmdPort={lay.slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # A requeued job waits cred_expire seconds before it may start again (default 120).
        # slurmd reads its own copy with a longer cred_expire: see _slurmd_conf.
        f"AuthInfo=socket={lay.munge_socket},cred_expire={CTLD_CRED_EXPIRE}",
        f"StateSaveLocation={lay.ctld_spool}",
        f"SlurmdSpoolDir={lay.slurmd_spool}",
        f"SlurmctldPidFile={lay.pid_file('slurmctld')}",
        f"SlurmdPidFile={lay.pid_file('slurmd')}",
        f"SlurmctldLogFile={lay.log_file('slurmctld')}",
        f"SlurmdLogFile={lay.log_file('slurmd')}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "AccountingStorageType=accounting_storage/slurmdbd",
        "AccountingStorageHost=localhost",
        f"AccountingStoragePort={lay.dbd_port}",
        # slurmdbd connections ignore AuthInfo: without this they look for /run/munge.
        f"AccountingStoragePass={lay.munge_socket}",
        "AccountingStorageTRES=gres/gpu",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "MailProg=/bin/true",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        # Lets the node claim more CPUs, memory and GPUs than the machine has.
        "SlurmdParameters=config_overrides",
        # sched_interval: the main scheduling loop every 3 s instead of 60. A requeued
        # job may start again once its hold ends (cred_expire), but the backfill passes
        # over it: it waited up to a minute for the main loop (37 s in
        # test_scontrol_requeue_resumes: requeued at :03, held until :14, started at :40).
        "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=3,"
        "default_queue_depth=1000,bf_interval=5",
        f"MessageTimeout={MESSAGE_TIMEOUT}",
        "MinJobAge=300",
        # Room for a 100,000-XP grid held in the queue (benchmarks/bench_scale.py) next
        # to what the test suite leaves for MinJobAge; held array tasks count one each.
        "MaxJobCount=250000",
        f"MaxArraySize={MAX_ARRAY_SIZE}",
        "ReturnToService=2",
        "KillWait=5",
        "InactiveLimit=0",
        "GresTypes=gpu",
        f"NodeName={NODE_NAME} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} "
        f"RealMemory={NODE_MEMORY_MB} Gres=gpu:{NODE_GPUS} State=UNKNOWN",
    ]
    for i, name in enumerate(PARTITIONS):
        default = " Default=YES" if i == 0 else ""
        lines.append(f"PartitionName={name}{default} Nodes={NODE_NAME} MaxTime=INFINITE "
                     "State=UP")
    return "\n".join(lines) + "\n"


def _slurmd_conf(lay: _Layout) -> str:
    """slurm.conf for slurmd: the same but for ``cred_expire`` (Slurm 22.05).

    ``AuthInfo=cred_expire`` does two jobs, each in one daemon: slurmctld holds a
    requeued job for cred_expire + 1 seconds (job_mgr.c: ``begin_time = now +
    cred_lifetime + 1``), and slurmd refuses to launch a job or step whose credential
    is older than cred_expire ("Job credential expired", slurm_cred_verify). Ten
    seconds keep the requeue tests quick, but on a loaded machine an array task's
    ``srun`` can take longer than that between slurmctld signing the step credential
    and slurmd checking it, and the task fails. Each daemon uses the value from its
    own configuration, so slurmd gets a long window and slurmctld keeps the short
    hold. The restarted job's credential is newer than the revocation slurmd keeps
    for the old run, which slurmd accepts as reissued (slurm_cred_handle_reissue).
    slurmctld logs at each registration that the node's slurm.conf differs (a hash
    check that DebugFlags=NO_CONF_HASH would silence); that is expected.
    """
    old = f"cred_expire={CTLD_CRED_EXPIRE}\n"
    text = _slurm_conf(lay)
    assert text.count(old) == 1
    return text.replace(old, f"cred_expire={SLURMD_CRED_EXPIRE}\n")


def _gres_conf(lay: _Layout) -> str:
    return (f"AutoDetect=off\nName=gpu File={lay.gpu_dir}/nvidia[0-{NODE_GPUS - 1}]\n")


def _dbd_conf(lay: _Layout) -> str:
    return "\n".join([
        "# Generated by adora.testing.slurm_cluster.",
        "AuthType=auth/munge",
        f"AuthInfo=socket={lay.munge_socket}",
        "DbdHost=localhost",
        "DbdAddr=127.0.0.1",
        f"DbdPort={lay.dbd_port}",
        "SlurmUser=root",
        "DebugLevel=info",
        f"LogFile={lay.log_file('slurmdbd')}",
        f"PidFile={lay.pid_file('slurmdbd')}",
        "StorageType=accounting_storage/mysql",
        "StorageHost=127.0.0.1",
        f"StoragePort={lay.db_port}",
        f"StorageUser={_DB_USER}",
        f"StoragePass={_DB_PASS}",
        f"StorageLoc={_DB_NAME}",
    ]) + "\n"


def _my_cnf(lay: _Layout) -> str:
    return "\n".join([
        "# Generated by adora.testing.slurm_cluster.",
        "[mysqld]",
        "user=root",
        f"datadir={lay.db_dir / 'data'}",
        f"socket={lay.db_socket}",
        f"pid-file={lay.pid_file('mariadbd')}",
        f"log-error={lay.log_file('mariadbd')}",
        "bind-address=127.0.0.1",
        f"port={lay.db_port}",
        "skip-name-resolve",
        "skip-log-bin",
        "performance_schema=OFF",
        "innodb_buffer_pool_size=128M",
        "innodb_log_file_size=64M",
        "innodb_lock_wait_timeout=900",
        "innodb_flush_log_at_trx_commit=2",
        "innodb_doublewrite=0",
        "[client]",
        f"socket={lay.db_socket}",
        f"port={lay.db_port}",
        "user=root",
    ]) + "\n"


def _write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    try:
        if path.read_text() == text:
            if stat.S_IMODE(path.stat().st_mode) != mode:
                path.chmod(mode)
            return False
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    return True


def _prepare_tree(lay: _Layout) -> bool:
    """Create the folders, keys, fake GPUs and configuration; True if the config changed."""
    for folder in (lay.etc, lay.log, lay.run, lay.munge_socket.parent, lay.db_dir,
                   lay.gpu_dir, lay.ctld_spool, lay.slurmd_spool):
        folder.mkdir(parents=True, exist_ok=True)
    # munged refuses key and socket folders that others may write to.
    for folder in (lay.root, lay.munge_key.parent, lay.munge_socket.parent):
        folder.chmod(0o755)
    if not lay.munge_key.exists():
        subprocess.run([which("mungekey") or "mungekey", "-c", "-k", str(lay.munge_key)],
                       check=True, capture_output=True)
    lay.munge_key.chmod(0o600)
    for i in range(NODE_GPUS):
        dev = lay.gpu_dir / f"nvidia{i}"
        if not dev.is_char_device():
            dev.unlink(missing_ok=True)
            # Regular files (or count-only gres) leave the node INVAL: it must be a device.
            os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    # slurmd.conf is left out: a change there restarts slurmd alone (see start()).
    changed = False
    changed |= _write_if_changed(lay.conf, _slurm_conf(lay))
    changed |= _write_if_changed(lay.gres_conf, _gres_conf(lay))
    # slurmdbd insists on mode 600, owned by SlurmUser (root).
    changed |= _write_if_changed(lay.dbd_conf, _dbd_conf(lay), 0o600)
    changed |= _write_if_changed(lay.my_cnf, _my_cnf(lay))
    return changed


def _link_etc_conf(lay: _Layout) -> None:
    """Point ``/etc/slurm/slurm.conf`` at the state configuration (keeping any real one)."""
    link = _ETC_SLURM_CONF
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        if os.readlink(link) == str(lay.conf):
            return
        link.unlink()
    elif link.exists():
        link.rename(link.with_name("slurm.conf.adora-orig"))
    tmp = link.with_name("slurm.conf.adora-tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(lay.conf)
    tmp.replace(link)


# --------------------------------------------------------------------------- daemons


_DAEMON_COMMS: dict[str, tuple[str, ...]] = {
    "munged": ("munged",),
    "mariadbd": ("mariadbd",),
    "slurmdbd": ("slurmdbd",),
    "slurmctld": ("slurmctld", "slurmscriptd"),
    "slurmd": ("slurmd",),
}


def _pid_from_file(path: Path, comms: tp.Collection[str]) -> int | None:
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) and _comm(pid) in comms else None


def _daemon_main_pid(lay: _Layout, daemon: str) -> int | None:
    """The running main process of ``daemon`` for this state dir, or None."""
    pid = _pid_from_file(lay.pid_file(daemon), (_DAEMON_COMMS[daemon][0],))
    if pid is not None:
        return pid
    found = _find_processes((_DAEMON_COMMS[daemon][0],), str(lay.root))
    return found[0] if found else None


def _slurmd_up_to_date(lay: _Layout) -> bool:
    """True when slurmd runs with its own configuration file, as it is now."""
    pid = _daemon_main_pid(lay, "slurmd")
    if pid is None:
        return False
    args = _read_proc(pid, "cmdline").split(b"\0")
    try:
        current = lay.slurmd_conf.read_text() == _slurmd_conf(lay)
    except OSError:
        return False
    return current and os.fsencode(lay.slurmd_conf) in args


def daemon_pids(state_dir: Path | str = DEFAULT_STATE_DIR) -> dict[str, int | None]:
    """The pid of each daemon of the cluster at ``state_dir`` (None when not running)."""
    lay = _layout(state_dir)
    return {daemon: _daemon_main_pid(lay, daemon) for daemon in DAEMONS}


def _all_daemon_processes(lay: _Layout, daemon: str) -> list[int]:
    """The daemon, its helper (slurmscriptd) and their descendants; not the jobs."""
    pids = set(_find_processes(_DAEMON_COMMS[daemon], str(lay.root)))
    main_pid = _daemon_main_pid(lay, daemon)
    if main_pid is not None:
        pids.add(main_pid)
    pids.update(_descendants(pids))
    pids.discard(os.getpid())
    return sorted(pids)


def _job_processes(lay: _Layout) -> list[int]:
    """The slurmstepd of running jobs and everything under them (they outlive slurmd)."""
    steps = _find_processes(("slurmstepd",), str(lay.root))
    pids = set(steps) | set(_descendants(steps))
    pids.discard(os.getpid())
    return sorted(pids)


def _run(argv: tp.Sequence[str], lay: _Layout, *, timeout: float = 30.0,
         check: bool = False) -> subprocess.CompletedProcess[str]:
    exe = which(argv[0]) or argv[0]
    try:
        proc = subprocess.run([exe, *argv[1:]], env=lay.daemon_env(), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise TestbedError(f"{' '.join(argv)} took more than {timeout} s") from exc
    if check and proc.returncode != 0:
        raise TestbedError(f"{' '.join(argv)} failed ({proc.returncode}):\n"
                           f"{proc.stdout}{proc.stderr}")
    return proc


def _failure(lay: _Layout, daemon: str, what: str) -> TestbedError:
    parts = [f"{daemon} {what} (state dir {lay.root})"]
    for path in (lay.log_file(daemon), lay.out_file(daemon)):
        if path.exists() and path.stat().st_size:
            parts.append(_tail(path))
    return TestbedError("\n".join(parts))


def _start_munged(lay: _Layout, timeout: float) -> None:
    lay.munge_socket.unlink(missing_ok=True)
    Path(str(lay.munge_socket) + ".lock").unlink(missing_ok=True)
    with lay.out_file("munged").open("ab") as out:
        proc = subprocess.run(
            [which("munged") or "munged", f"--key-file={lay.munge_key}",
             f"--socket={lay.munge_socket}", f"--pid-file={lay.pid_file('munged')}",
             f"--log-file={lay.log_file('munged')}",
             f"--seed-file={lay.root / 'munge' / 'munged.seed'}", "--force"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
            check=False, env=lay.daemon_env())
    if proc.returncode != 0 or not _wait_until(lay.munge_socket.exists, timeout):
        raise _failure(lay, "munged", "did not start")


def _start_mariadbd(lay: _Layout, timeout: float) -> None:
    data = lay.db_dir / "data"
    if not (data / "mysql").is_dir():
        shutil.rmtree(data, ignore_errors=True)
        proc = _run(["mariadb-install-db", f"--defaults-file={lay.my_cnf}",
                     "--auth-root-authentication-method=socket", "--skip-test-db"],
                    lay, timeout=120)
        with lay.out_file("mariadbd").open("a") as out:
            out.write(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise _failure(lay, "mariadbd", "could not initialise its data directory")
        (lay.db_dir / ".users-created").unlink(missing_ok=True)
    lay.db_socket.unlink(missing_ok=True)
    spawn_detached([which("mariadbd") or "mariadbd", f"--defaults-file={lay.my_cnf}"],
                   log=lay.out_file("mariadbd"), env=lay.daemon_env())


def _wait_mariadbd(lay: _Layout, timeout: float) -> None:
    _wait_port(lay, "mariadbd", lay.db_port, timeout, also=lay.db_socket.exists)
    marker = lay.db_dir / ".users-created"
    if not marker.exists():
        sql = (f"CREATE USER IF NOT EXISTS '{_DB_USER}'@'127.0.0.1' IDENTIFIED BY '{_DB_PASS}';"
               f"CREATE USER IF NOT EXISTS '{_DB_USER}'@'localhost' IDENTIFIED BY '{_DB_PASS}';"
               f"GRANT ALL ON {_DB_NAME}.* TO '{_DB_USER}'@'127.0.0.1';"
               f"GRANT ALL ON {_DB_NAME}.* TO '{_DB_USER}'@'localhost';"
               "FLUSH PRIVILEGES;")
        proc = _run(["mariadb", f"--defaults-file={lay.my_cnf}", "-e", sql], lay)
        if proc.returncode != 0:
            raise TestbedError(f"could not create the slurm database user:\n{proc.stderr}")
        marker.touch()


def _start_slurm_daemon(lay: _Layout, daemon: str, timeout: float) -> None:
    argv = {
        "slurmdbd": ["slurmdbd"],
        "slurmctld": ["slurmctld", "-f", str(lay.conf)],
        "slurmd": ["slurmd", "-N", NODE_NAME, "-f", str(lay.slurmd_conf)],
    }[daemon]
    with lay.out_file(daemon).open("ab") as out:
        proc = subprocess.run([which(argv[0]) or argv[0], *argv[1:]], env=lay.daemon_env(),
                              stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False)
    if proc.returncode != 0:
        raise _failure(lay, daemon, f"exited with status {proc.returncode} at start")


def _wait_port(lay: _Layout, daemon: str, port: int, timeout: float,
               also: tp.Callable[[], bool] | None = None) -> None:
    """Wait until ``daemon`` runs and ``port`` accepts connections; fail fast if it died."""
    deadline = time.monotonic() + timeout
    grace = time.monotonic() + 3  # the pid file may appear a moment after the fork
    while True:
        alive = _daemon_main_pid(lay, daemon) is not None
        if alive and _port_open(port) and (also is None or also()):
            return
        now = time.monotonic()
        if now > deadline:
            raise _failure(lay, daemon, f"did not listen on port {port} in {timeout:.0f} s")
        if now > grace and not alive:
            raise _failure(lay, daemon, "died at start")
        time.sleep(0.05)


def _register_cluster(lay: _Layout, timeout: float) -> None:
    marker = lay.db_dir / ".cluster-registered"
    if marker.exists():
        return
    deadline = time.monotonic() + timeout
    while True:
        listed = _run(["sacctmgr", "-i", "-n", "-P", "list", "cluster", "format=cluster"], lay)
        if listed.returncode == 0 and CLUSTER_NAME in listed.stdout.split():
            marker.touch()
            return
        if listed.returncode == 0:
            added = _run(["sacctmgr", "-i", "add", "cluster", CLUSTER_NAME], lay)
            if added.returncode == 0:
                marker.touch()
                return
            err = added.stdout + added.stderr
        else:
            err = listed.stdout + listed.stderr
        if time.monotonic() > deadline:
            raise TestbedError(f"sacctmgr could not register cluster {CLUSTER_NAME}:\n{err}\n"
                               + _tail(lay.log_file("slurmdbd")))
        time.sleep(0.2)


def _node_state(lay: _Layout) -> str:
    try:
        proc = _run(["sinfo", "-h", "-N", "-n", NODE_NAME, "-o", "%T"], lay, timeout=15)
    except TestbedError:  # a controller that does not answer
        return ""
    if proc.returncode != 0:
        return ""
    states = proc.stdout.split()
    return states[0] if states else ""


def _wait_node_idle(lay: _Layout, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    resumed = False
    state = ""
    while time.monotonic() < deadline:
        state = _node_state(lay)
        if state in ("idle", "mixed", "allocated", "completing"):
            return
        if not resumed and ("drain" in state or state in ("down", "down*")):
            # A node left DOWN/DRAINED by an earlier crash; ReturnToService=2 handles most.
            _run(["scontrol", "update", f"nodename={NODE_NAME}", "state=resume"], lay)
            resumed = True
        if time.monotonic() > deadline - timeout + 3:
            for daemon in ("slurmctld", "slurmd"):
                if _daemon_main_pid(lay, daemon) is None:
                    raise _failure(lay, daemon, "died at start")
        time.sleep(0.1)
    raise TestbedError(f"node {NODE_NAME} is {state or 'unknown'} instead of idle after "
                       f"{timeout:.0f} s\n{_tail(lay.log_file('slurmd'))}\n"
                       f"{_tail(lay.log_file('slurmctld'))}")


def _sacct_window() -> tuple[str, str]:
    now = datetime.datetime.now()
    fmt = "%Y-%m-%dT%H:%M:%S"
    return ((now - datetime.timedelta(days=1)).strftime(fmt),
            (now + datetime.timedelta(days=1)).strftime(fmt))


def _wait_sacct(lay: _Layout, timeout: float) -> None:
    start, end = _sacct_window()
    deadline = time.monotonic() + timeout
    while True:
        proc = _run(["sacct", "-a", "-n", "-X", "-S", start, "-E", end, "-o", "JobID"], lay,
                    timeout=15)
        if proc.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise TestbedError(f"sacct does not answer:\n{proc.stderr}\n"
                               + _tail(lay.log_file("slurmdbd")))
        time.sleep(0.1)


def _cancel_orphan_jobs(lay: _Layout, timeout: float) -> list[str]:
    """Cancel jobs the controller believes run but whose slurmstepd is gone.

    After :func:`stop` (which kills the jobs) or a reboot, the saved controller state
    still lists them as RUNNING, holding CPUs and GPUs forever: Slurm itself only
    purges them when the node's boot time changed. Returns the cancelled job ids.
    """
    alive = set()
    for pid in _find_processes(("slurmstepd",), str(lay.root)):
        match = re.search(rb"\[(\d+)\.", _read_proc(pid, "cmdline"))
        if match:
            alive.add(match.group(1).decode())
    listed = _run(["squeue", "-h", "-t", "RUNNING,SUSPENDED,STOPPED", "-o", "%A"], lay)
    orphans = sorted(set(listed.stdout.split()) - alive, key=int)
    if not orphans:
        return []
    _run(["scancel", *orphans], lay)

    def gone() -> bool:
        left = _run(["squeue", "-h", "-t", "RUNNING,COMPLETING", "-o", "%A"], lay)
        return left.returncode == 0 and not set(left.stdout.split()) & set(orphans)

    _wait_until(gone, timeout, interval=0.1)
    return orphans


def _start_one(lay: _Layout, daemon: str, timeout: float) -> bool:
    """Start ``daemon`` unless it runs, and wait until it is ready; True if started."""
    if _daemon_main_pid(lay, daemon) is not None:
        return False
    try:
        _launch_and_wait(lay, daemon, timeout)
    except TestbedError as exc:
        if "--- last lines of" in str(exc):
            raise
        raise _failure(lay, daemon, f"failed to start: {exc}") from exc
    return True


def _launch_and_wait(lay: _Layout, daemon: str, timeout: float) -> None:
    port = {"mariadbd": lay.db_port, "slurmdbd": lay.dbd_port, "slurmctld": lay.ctld_port,
            "slurmd": lay.slurmd_port}.get(daemon)
    if port is not None and _port_open(port):
        raise TestbedError(f"cannot start {daemon}: port {port} is taken by another process "
                           "(another Slurm or database on this machine?)")
    # Leftovers (slurmstepd of an earlier slurmd, a lone slurmscriptd) would get in the way.
    leftovers = _all_daemon_processes(lay, daemon)
    if leftovers:
        terminate(leftovers, timeout=5)
    if daemon == "munged":
        _start_munged(lay, timeout)
    elif daemon == "mariadbd":
        _start_mariadbd(lay, timeout)
        _wait_mariadbd(lay, timeout)
    elif daemon == "slurmdbd":
        _start_slurm_daemon(lay, daemon, timeout)
        _wait_port(lay, daemon, lay.dbd_port, timeout)
        _register_cluster(lay, timeout)
    elif daemon == "slurmctld":
        # Without slurmdbd up, slurmctld dies with "we have no TRES from it".
        _start_slurm_daemon(lay, daemon, timeout)
        _wait_port(lay, daemon, lay.ctld_port, timeout)
        slurmd = _daemon_main_pid(lay, "slurmd")
        if slurmd is not None:
            # A running slurmd re-registers on SIGHUP; otherwise the node stays "unknown"
            # for ~4 s until the controller's next ping.
            with contextlib.suppress(ProcessLookupError):
                os.kill(slurmd, signal.SIGHUP)
    elif daemon == "slurmd":
        _start_slurm_daemon(lay, daemon, timeout)
        _wait_node_idle(lay, timeout)
    else:  # pragma: no cover - guarded by DAEMONS
        raise ValueError(daemon)


def _stop_one(lay: _Layout, daemon: str, timeout: float) -> bool:
    pids = _all_daemon_processes(lay, daemon)
    if not pids:
        return False
    terminate(pids, timeout=timeout)
    return True


# --------------------------------------------------------------------------- public API


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    """How to use a running test cluster.

    ``env`` holds the variables a Slurm command needs (``SLURM_CONF``); they are
    optional on the machine that runs the cluster, where ``/etc/slurm/slurm.conf``
    points at the same file.
    """

    state_dir: Path
    conf: Path
    cluster_name: str
    node_name: str
    partitions: tuple[str, ...]
    default_partition: str
    max_array_size: int
    cpus: int
    memory_mb: int
    gpus: int
    ctld_port: int
    slurmd_port: int
    dbd_port: int
    db_port: int
    munge_socket: Path
    log_dir: Path
    #: True when :func:`start` found everything already running and did nothing.
    already_running: bool = False
    #: Seconds :func:`start` took.
    start_seconds: float = 0.0
    #: Whether :func:`start` had to install Debian packages.
    installed_packages: bool = False

    @property
    def env(self) -> dict[str, str]:
        """Environment variables for Slurm commands: ``{"SLURM_CONF": ...}``."""
        return {"SLURM_CONF": str(self.conf)}

    @property
    def rpc_ports(self) -> tuple[int, int]:
        """The ports a client's commands talk to: slurmctld's and slurmdbd's."""
        return (self.ctld_port, self.dbd_port)

    def log_file(self, daemon: str) -> Path:
        """The log of ``daemon`` (one of :data:`DAEMONS`)."""
        return self.log_dir / f"{daemon}.log"

    def stop_controller(self, *, timeout: float = 30.0) -> None:
        """Stop slurmctld only (squeue/sbatch then fail; sacct still answers)."""
        stop_controller(self.state_dir, timeout=timeout)

    def start_controller(self, *, timeout: float = 60.0) -> None:
        """Start slurmctld again and wait until the node is back to idle."""
        start_controller(self.state_dir, timeout=timeout)

    def controller_stopped(self) -> contextlib.AbstractContextManager[None]:
        """A context in which slurmctld is down; it is started again on exit."""
        return controller_stopped(self.state_dir)

    def is_running(self) -> bool:
        """True when every daemon runs."""
        return is_running(self.state_dir)

    def cancel_all_jobs(self, *, timeout: float = 30.0) -> list[str]:
        """Cancel every job and wait for an empty queue (see :func:`cancel_all_jobs`)."""
        return cancel_all_jobs(self.state_dir, timeout=timeout)


def _layout(state_dir: Path | str) -> _Layout:
    return _Layout(Path(state_dir).absolute())


def _lock(lay: _Layout) -> tp.Any:
    from filelock import FileLock

    lay.root.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lay.root.parent / f".{lay.root.name}.lock"))


def _info(lay: _Layout, **extra: tp.Any) -> ClusterInfo:
    return ClusterInfo(
        state_dir=lay.root, conf=lay.conf, cluster_name=CLUSTER_NAME, node_name=NODE_NAME,
        partitions=PARTITIONS, default_partition=PARTITIONS[0], max_array_size=MAX_ARRAY_SIZE,
        cpus=NODE_CPUS, memory_mb=NODE_MEMORY_MB, gpus=NODE_GPUS, ctld_port=lay.ctld_port,
        slurmd_port=lay.slurmd_port, dbd_port=lay.dbd_port, db_port=lay.db_port,
        munge_socket=lay.munge_socket, log_dir=lay.log, **extra)


def info(state_dir: Path | str = DEFAULT_STATE_DIR) -> ClusterInfo:
    """The :class:`ClusterInfo` of the cluster at ``state_dir``, running or not."""
    return _info(_layout(state_dir))


def is_running(state_dir: Path | str = DEFAULT_STATE_DIR) -> bool:
    """True when all five daemons of the cluster at ``state_dir`` run."""
    lay = _layout(state_dir)
    return all(_daemon_main_pid(lay, daemon) is not None for daemon in DAEMONS)


def start(state_dir: Path | str = DEFAULT_STATE_DIR, *, fresh: bool = False,
          timeout: float = 90.0) -> ClusterInfo:
    """Start the cluster at ``state_dir`` (installing packages if needed) and wait for it.

    Idempotent: when everything already runs with the same configuration this returns
    at once; daemons that are down are started in order. ``fresh=True`` stops the
    cluster and wipes its state (job ids start again at 1). ``timeout`` bounds each
    daemon's readiness wait. Raises :class:`TestbedUnavailableError` when the machine
    cannot run it, :class:`TestbedError` with the tail of the daemon's log when a
    daemon fails to start.
    """
    began = time.monotonic()
    reason = unavailable_reason()
    if reason is not None:
        raise TestbedUnavailableError(reason)
    lay = _layout(state_dir)
    with _lock(lay):
        if fresh:
            for daemon in reversed(DAEMONS):
                _stop_one(lay, daemon, timeout=10)
            shutil.rmtree(lay.root, ignore_errors=True)
        if (not fresh and is_running(lay.root) and lay.conf.exists()
                and lay.conf.read_text() == _slurm_conf(lay) and _slurmd_up_to_date(lay)):
            _link_etc_conf(lay)
            return _info(lay, already_running=True, start_seconds=time.monotonic() - began)
        lay.log.mkdir(parents=True, exist_ok=True)
        installed = install_packages(PACKAGES, log=lay.log / "apt.log")
        if _prepare_tree(lay):
            # New configuration: daemons still running from an older one must go.
            for daemon in reversed(DAEMONS):
                _stop_one(lay, daemon, timeout=10)
        slurmd_was_running = _daemon_main_pid(lay, "slurmd") is not None
        _write_if_changed(lay.slurmd_conf, _slurmd_conf(lay))
        if slurmd_was_running and not _slurmd_up_to_date(lay):
            # Only slurmd's own configuration changed (or an older test bed started it
            # with slurm.conf): restart slurmd alone. Running jobs keep running (their
            # slurmstepd outlive slurmd) and the other daemons are not disturbed.
            _stop_one(lay, "slurmd", timeout=10)
        _link_etc_conf(lay)
        for daemon in DAEMONS:
            _start_one(lay, daemon, timeout)
        if not slurmd_was_running:
            _cancel_orphan_jobs(lay, timeout)
        _wait_sacct(lay, timeout)
        return _info(lay, start_seconds=time.monotonic() - began, installed_packages=installed)


def stop(state_dir: Path | str = DEFAULT_STATE_DIR, *, wipe: bool = False,
         timeout: float = 15.0) -> list[str]:
    """Stop every daemon of the cluster (SIGTERM, then SIGKILL); returns those stopped.

    Running jobs are killed first (SIGKILL: slurmstepd ignores SIGTERM). ``wipe=True``
    also deletes the state dir (database and controller state together, so job ids
    never collide).
    """
    lay = _layout(state_dir)
    stopped: list[str] = []
    with _lock(lay):
        jobs = _job_processes(lay)
        for pid in jobs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait_until(lambda: not any(pid_alive(p) for p in jobs), 10)
        # slurmd and slurmctld go together, then the accounting chain, then munged.
        for group in (("slurmd", "slurmctld"), ("slurmdbd",), ("mariadbd", "munged")):
            pids: list[int] = []
            for daemon in group:
                found = _all_daemon_processes(lay, daemon)
                if found:
                    stopped.append(daemon)
                    pids.extend(found)
            if pids:
                terminate(pids, timeout=timeout)
        if wipe:
            shutil.rmtree(lay.root, ignore_errors=True)
    return stopped


def stop_daemon(daemon: str, state_dir: Path | str = DEFAULT_STATE_DIR, *,
                timeout: float = 15.0) -> bool:
    """Stop one daemon (one of :data:`DAEMONS`); False if it was not running."""
    if daemon not in DAEMONS:
        raise ValueError(f"unknown daemon {daemon!r}; expected one of {DAEMONS}")
    lay = _layout(state_dir)
    with _lock(lay):
        return _stop_one(lay, daemon, timeout)


def start_daemon(daemon: str, state_dir: Path | str = DEFAULT_STATE_DIR, *,
                 timeout: float = 60.0) -> bool:
    """Start one daemon again and wait until it is ready; False if it was running.

    The daemons it depends on must run (use :func:`start` to bring up everything).
    """
    if daemon not in DAEMONS:
        raise ValueError(f"unknown daemon {daemon!r}; expected one of {DAEMONS}")
    lay = _layout(state_dir)
    with _lock(lay):
        needed = [d for d in DAEMONS[:DAEMONS.index(daemon)]
                  if _daemon_main_pid(lay, d) is None]
        if needed:
            raise TestbedError(f"cannot start {daemon} alone: {', '.join(needed)} not running "
                               f"(start the whole cluster with start())")
        started = _start_one(lay, daemon, timeout)
        if daemon == "slurmctld" and _daemon_main_pid(lay, "slurmd") is not None:
            # Wait for slurmd to re-register, so callers find a usable cluster.
            _wait_node_idle(lay, timeout)
        return started


def stop_controller(state_dir: Path | str = DEFAULT_STATE_DIR, *,
                    timeout: float = 30.0) -> bool:
    """Stop slurmctld only (it saves its state); False if it was not running."""
    return stop_daemon("slurmctld", state_dir, timeout=timeout)


def start_controller(state_dir: Path | str = DEFAULT_STATE_DIR, *,
                     timeout: float = 60.0) -> bool:
    """Start slurmctld again and wait until the node is idle; False if it was running."""
    return start_daemon("slurmctld", state_dir, timeout=timeout)


@contextlib.contextmanager
def controller_stopped(state_dir: Path | str = DEFAULT_STATE_DIR) -> tp.Iterator[None]:
    """Run the body with slurmctld down; start it again afterwards, even on error."""
    stop_controller(state_dir)
    try:
        yield
    finally:
        start_controller(state_dir)


def cancel_all_jobs(state_dir: Path | str = DEFAULT_STATE_DIR, *,
                    timeout: float = 30.0) -> list[str]:
    """Cancel every queued or running job and wait until the queue is empty.

    For tests that need the node's CPUs and GPUs free. Returns the cancelled job ids.
    """
    lay = _layout(state_dir)
    listed = _run(["squeue", "-h", "-o", "%A"], lay, check=True, timeout=timeout)
    ids = sorted(set(listed.stdout.split()), key=int)
    if ids:
        _run(["scancel", *ids], lay, timeout=timeout)

    def empty() -> bool:
        left = _run(["squeue", "-h", "-o", "%A"], lay, timeout=timeout)
        return left.returncode == 0 and not left.stdout.strip()

    if not _wait_until(empty, timeout, interval=0.1):
        raise TestbedError(f"jobs still queued {timeout:.0f} s after scancel")
    return ids


def client_conf(dest: Path | str, *, message_timeout: int,
                state_dir: Path | str = DEFAULT_STATE_DIR) -> Path:
    """Write a copy of the cluster's slurm.conf for clients, with another ``MessageTimeout``.

    With the controller down, every squeue/sbatch/scancel retries for MessageTimeout
    seconds (30 here) before failing with "Unable to contact slurm controller"; a
    client pointed at this copy (``SLURM_CONF=dest``) gives up after
    ``message_timeout`` seconds instead. The daemons keep their own setting.
    """
    lay = _layout(state_dir)
    lines = [line for line in _slurm_conf(lay).splitlines()
             if not line.startswith("MessageTimeout=")]
    lines.append(f"MessageTimeout={message_timeout}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(lines) + "\n")
    return dest


def _status_text(lay: _Layout) -> tuple[str, bool]:
    lines = [f"state dir: {lay.root}"]
    all_up = True
    for daemon in DAEMONS:
        pid = _daemon_main_pid(lay, daemon)
        all_up &= pid is not None
        lines.append(f"  {daemon:<10} {'running, pid ' + str(pid) if pid else 'stopped'}")
    if _daemon_main_pid(lay, "slurmctld") is not None:
        proc = _run(["sinfo", "-o", "%P %a %D %T %G"], lay, timeout=15)
        lines.append(proc.stdout.rstrip() or proc.stderr.rstrip())
    return "\n".join(lines), all_up


def main(argv: tp.Sequence[str] | None = None) -> int:
    """The command line: ``start``, ``stop``, ``status``, ``env`` and controller helpers."""
    parser = argparse.ArgumentParser(prog="python -m adora.testing.slurm_cluster",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["start", "stop", "status", "env",
                                            "stop-controller", "start-controller"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--fresh", action="store_true", help="start: wipe the state first")
    parser.add_argument("--wipe", action="store_true", help="stop: delete the state dir")
    args = parser.parse_args(argv)
    lay = _layout(args.state_dir)
    try:
        if args.command == "start":
            result = start(lay.root, fresh=args.fresh)
            how = "already running" if result.already_running else "started"
            print(f"Slurm test cluster {how} in {result.start_seconds:.1f} s"
                  f"{' (packages installed)' if result.installed_packages else ''}")
            print(f"export SLURM_CONF={result.conf}")
        elif args.command == "stop":
            began = time.monotonic()
            stopped = stop(lay.root, wipe=args.wipe)
            print(f"stopped {', '.join(stopped) or 'nothing'} in "
                  f"{time.monotonic() - began:.1f} s")
        elif args.command == "status":
            text, all_up = _status_text(lay)
            print(text)
            return 0 if all_up else 3
        elif args.command == "env":
            for key, value in lay.env.items():
                print(f"export {key}={value}")
        elif args.command == "stop-controller":
            stop_controller(lay.root)
        elif args.command == "start-controller":
            start_controller(lay.root)
    except TestbedUnavailableError as exc:
        print(f"cannot run the Slurm test cluster here: {exc}", file=sys.stderr)
        return 2
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # output piped into head & co.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
