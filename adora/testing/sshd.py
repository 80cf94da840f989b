"""A real OpenSSH server for adora's tests: on localhost, or on a "login node".

:func:`start` runs Debian's ``sshd`` (installed when missing) with its own
configuration, host key and a generated client key authorised for root, key-only,
under one state directory (default ``/tmp/adora-sshd``). It listens on 127.0.0.1 on
a free port kept across restarts, and passes ``SLURM_CONF`` to remote sessions
(``SetEnv``) when given one.

With ``login_node=True`` (default state dir ``/tmp/adora-sshd-login``) the server
runs in a network namespace of its own instead, like a cluster's login node::

    client netns (10.200.0.2) --veth-- login netns (10.200.0.1): sshd on port 22
                                       127.0.0.1:6817/6819 --socat--> unix socket
    host: unix socket --socat--> 127.0.0.1:6817 (slurmctld) / 6819 (slurmdbd)

The addresses exist only inside the two namespaces. Slurm's client commands
(sbatch, squeue, sacct, scancel) work from the login node; srun and salloc do not
(the controller cannot call back). A client reaches the server through
``proxy_command``: ``ip netns exec adora-client socat - TCP:10.200.0.1:22``.

From Python::

    from adora.testing import sshd
    server = sshd.start(slurm_conf=cluster.conf)
    async with asyncssh.connect(**server.connect_kwargs()) as conn:
        await conn.run("squeue", check=True)
    server.kill_sshd(); server.start_sshd()     # drop every connection, then serve again

From a shell::

    python -m adora.testing.sshd start|stop|status [--login-node] [--slurm-conf PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import typing as tp
from pathlib import Path

from adora.testing.slurm_cluster import (
    TestbedError,
    TestbedUnavailableError,
    _base_unavailable_reason,
    _descendants,
    _find_processes,
    _pid_from_file,
    _tail,
    _wait_until,
    install_packages,
    pid_alive,
    spawn_detached,
    terminate,
    which,
)

__all__ = [
    "DEFAULT_LOGIN_STATE_DIR",
    "DEFAULT_STATE_DIR",
    "LoginNodeNetwork",
    "SshdInfo",
    "is_running",
    "main",
    "start",
    "status",
    "stop",
    "unavailable_reason",
]

#: Where a localhost server keeps its files (``$ADORA_SSHD_STATE_DIR``).
DEFAULT_STATE_DIR = Path(os.environ.get("ADORA_SSHD_STATE_DIR", "/tmp/adora-sshd"))
#: Where a login-node server keeps its files (``$ADORA_SSHD_LOGIN_STATE_DIR``).
DEFAULT_LOGIN_STATE_DIR = Path(os.environ.get("ADORA_SSHD_LOGIN_STATE_DIR",
                                              "/tmp/adora-sshd-login"))

_PACKAGES: tuple[str, ...] = ("openssh-server",)
_LOGIN_PACKAGES: tuple[str, ...] = ("openssh-server", "socat", "iproute2")
_BINARIES: tuple[str, ...] = ("sshd", "ssh-keygen")
_LOGIN_BINARIES: tuple[str, ...] = ("sshd", "ssh-keygen", "socat", "ip")


@dataclasses.dataclass(frozen=True)
class LoginNodeNetwork:
    """The two network namespaces of login-node mode and their veth pair.

    Defaults use 10.200.0.0/24, which exists only inside these namespaces.
    """

    login_ns: str = "adora-login"
    client_ns: str = "adora-client"
    login_ip: str = "10.200.0.1"
    client_ip: str = "10.200.0.2"
    prefix_len: int = 24
    login_if: str = "adora-vl"
    client_if: str = "adora-vc"

    def proxy_command(self, port: int = 22) -> tuple[str, ...]:
        """The command that carries a client's connection into the client namespace."""
        return (which("ip") or "ip", "netns", "exec", self.client_ns,
                which("socat") or "socat", "-", f"TCP:{self.login_ip}:{port}")


_netns_probe: str | None | bool = False  # False: not probed yet


def _probe_netns() -> str | None:
    global _netns_probe
    if _netns_probe is not False:
        return tp.cast("str | None", _netns_probe)
    name = f"adora-probe-{os.getpid()}"
    ip = which("ip") or "ip"
    made = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True,
                          check=False)
    if made.returncode != 0:
        _netns_probe = ("network namespaces do not work here (`ip netns add` failed: "
                        f"{made.stderr.strip()})")
    else:
        subprocess.run([ip, "netns", "del", name], capture_output=True, check=False)
        _netns_probe = None
    return _netns_probe


def unavailable_reason(*, login_node: bool = False) -> str | None:
    """Why the test sshd (or its login-node mode) cannot run here, or None if it can."""
    what = "the login-node test sshd" if login_node else "the test sshd"
    reason = _base_unavailable_reason(what, _LOGIN_BINARIES if login_node else _BINARIES)
    if reason is None and login_node and which("ip") is not None:
        reason = _probe_netns()
    return reason


# --------------------------------------------------------------------------- layout


@dataclasses.dataclass(frozen=True)
class _Layout:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    @property
    def client_key(self) -> Path:
        return self.root / "client_key"

    @property
    def authorized_keys(self) -> Path:
        return self.root / "authorized_keys"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def pid_file(self) -> Path:
        return self.root / "sshd.pid"

    @property
    def log(self) -> Path:
        return self.root / "sshd.log"

    @property
    def relay_log(self) -> Path:
        return self.root / "relays.log"

    @property
    def relay_dir(self) -> Path:
        return self.root / "relay"

    @property
    def settings(self) -> Path:
        return self.root / "settings.json"


def _layout(state_dir: Path | str | None, login_node: bool) -> _Layout:
    if state_dir is None:
        state_dir = DEFAULT_LOGIN_STATE_DIR if login_node else DEFAULT_STATE_DIR
    return _Layout(Path(state_dir).absolute())


def _lock(lay: _Layout) -> tp.Any:
    from filelock import FileLock

    lay.root.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lay.root.parent / f".{lay.root.name}.lock"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keygen(path: Path, comment: str) -> None:
    if path.exists() and path.with_name(path.name + ".pub").exists():
        return
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".pub").unlink(missing_ok=True)
    subprocess.run([which("ssh-keygen") or "ssh-keygen", "-q", "-t", "ed25519", "-N", "",
                    "-C", comment, "-f", str(path)], check=True, capture_output=True)
    path.chmod(0o600)


def _sshd_config(lay: _Layout, *, address: str, port: int, slurm_conf: Path | None,
                 max_sessions: int, force_command: str | None = None) -> str:
    lines = [
        "# Generated by adora.testing.sshd.",
        f"Port {port}",
        f"ListenAddress {address}",
        "AddressFamily inet",
        f"HostKey {lay.host_key}",
        f"PidFile {lay.pid_file}",
        f"AuthorizedKeysFile {lay.authorized_keys}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        # The files live under /tmp, whose modes StrictModes rejects.
        "StrictModes no",
        "UseDNS no",
        "X11Forwarding no",
        "PrintMotd no",
        "PrintLastLog no",
        f"MaxSessions {max_sessions}",
        "MaxStartups 100:30:200",
        "LoginGraceTime 30",
        "LogLevel VERBOSE",
        "Subsystem sftp internal-sftp",
    ]
    if slurm_conf is not None:
        lines.append(f"SetEnv SLURM_CONF={slurm_conf}")
    if force_command is not None:
        lines.append(f"ForceCommand {force_command}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- info


@dataclasses.dataclass(frozen=True)
class SshdInfo:
    """How to reach a running test sshd, and handles to stop and start it.

    Pass :meth:`connect_kwargs` to ``asyncssh.connect``; ``known_hosts`` holds the
    server's host key only, so host key verification stays on.
    """

    state_dir: Path
    host: str
    port: int
    username: str
    client_key: Path
    known_hosts: Path
    #: The ``known_hosts`` line of the server's host key.
    host_key_entry: str
    config: Path
    log: Path
    slurm_conf: Path | None
    #: Set in login-node mode: the command that carries the connection (``ProxyCommand``).
    proxy_command: tuple[str, ...] | None = None
    network: LoginNodeNetwork | None = None
    relay_ports: tuple[int, ...] = ()
    already_running: bool = False
    start_seconds: float = 0.0

    @property
    def login_node(self) -> bool:
        return self.network is not None

    def connect_kwargs(self) -> dict[str, tp.Any]:
        """Keyword arguments for ``asyncssh.connect``."""
        kwargs: dict[str, tp.Any] = {
            "host": self.host, "port": self.port, "username": self.username,
            "client_keys": [str(self.client_key)], "known_hosts": str(self.known_hosts),
        }
        if self.proxy_command is not None:
            kwargs["proxy_command"] = list(self.proxy_command)
        return kwargs

    def ssh_command(self, *remote: str) -> list[str]:
        """An OpenSSH ``ssh`` command line that runs ``remote`` on the server."""
        argv = [which("ssh") or "ssh", "-i", str(self.client_key),
                "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-p", str(self.port)]
        if self.proxy_command is not None:
            argv += ["-o", "ProxyCommand=" + " ".join(self.proxy_command)]
        return [*argv, f"{self.username}@{self.host}", *remote]

    def sshd_pid(self) -> int | None:
        """The pid of the listening sshd, or None."""
        return _sshd_pid(_Layout(self.state_dir))

    def is_sshd_running(self) -> bool:
        return self.sshd_pid() is not None

    def stop_sshd(self, *, kill_sessions: bool = True) -> None:
        """Stop the listening sshd (SIGTERM) and, by default, every open session."""
        _stop_sshd(_Layout(self.state_dir), kill_sessions=kill_sessions, sig=signal.SIGTERM)

    def kill_sshd(self) -> None:
        """SIGKILL the sshd and every session: clients see their connections drop."""
        _stop_sshd(_Layout(self.state_dir), kill_sessions=True, sig=signal.SIGKILL)

    def start_sshd(self, *, timeout: float = 30.0) -> None:
        """Start the sshd again (same port, same host key) if it is not running."""
        lay = _Layout(self.state_dir)
        with _lock(lay):
            if _sshd_pid(lay) is None:
                _launch_sshd(lay, self.network, self.port, timeout)

    def restart_sshd(self, *, timeout: float = 30.0) -> None:
        """Stop then start the sshd, dropping open sessions."""
        self.stop_sshd()
        self.start_sshd(timeout=timeout)


# --------------------------------------------------------------------------- processes


def _sshd_pid(lay: _Layout) -> int | None:
    pid = _pid_from_file(lay.pid_file, ("sshd",))
    if pid is not None:
        return pid
    found = _find_processes(("sshd",), str(lay.config))
    return found[0] if found else None


def _stop_sshd(lay: _Layout, *, kill_sessions: bool, sig: signal.Signals) -> None:
    pids = set(_find_processes(("sshd",), str(lay.config)))
    main = _sshd_pid(lay)
    if main is not None:
        pids.add(main)
    if kill_sessions:
        pids.update(_descendants(pids))
    pids.discard(os.getpid())
    if not pids:
        return
    if sig == signal.SIGKILL:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait_until(lambda: not any(pid_alive(p) for p in pids), 10)
    else:
        terminate(sorted(pids), timeout=5)
    lay.pid_file.unlink(missing_ok=True)


def _listening(pid: int, port: int) -> bool:
    """True if the network namespace of ``pid`` has a TCP socket listening on ``port``."""
    try:
        with open(f"/proc/{pid}/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return True
    except (OSError, StopIteration, IndexError, ValueError):
        return False
    return False


def _netns_exec(network: LoginNodeNetwork | None, ns: str) -> list[str]:
    if network is None:
        return []
    return [which("ip") or "ip", "netns", "exec", ns]


def _launch_sshd(lay: _Layout, network: LoginNodeNetwork | None, port: int,
                 timeout: float) -> None:
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # privilege separation
    lay.pid_file.unlink(missing_ok=True)
    sshd = which("sshd") or "/usr/sbin/sshd"  # sshd insists on an absolute path (re-exec)
    argv = [*_netns_exec(network, network.login_ns if network else ""), sshd,
            "-f", str(lay.config), "-E", str(lay.log)]
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise TestbedError(f"sshd did not start ({proc.returncode}): {proc.stderr}\n"
                           + _tail(lay.log))

    def ready() -> bool:
        pid = _sshd_pid(lay)
        return pid is not None and _listening(pid, port)

    if not _wait_until(ready, timeout):
        raise TestbedError(f"sshd did not listen on port {port}\n" + _tail(lay.log))


# --------------------------------------------------------------------------- login node


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([which("ip") or "ip", *args], capture_output=True, text=True,
                          check=False)
    if check and proc.returncode != 0:
        raise TestbedError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def _network_ok(net: LoginNodeNetwork) -> bool:
    for ns, dev, addr in ((net.login_ns, net.login_if, net.login_ip),
                          (net.client_ns, net.client_if, net.client_ip)):
        shown = _ip("-n", ns, "-o", "addr", "show", "dev", dev, check=False)
        if shown.returncode != 0 or f"inet {addr}/" not in shown.stdout:
            return False
        link = _ip("-n", ns, "-o", "link", "show", "dev", dev, check=False)
        if "state UP" not in link.stdout and "LOWER_UP" not in link.stdout:
            return False
    return True


def _teardown_network(net: LoginNodeNetwork) -> None:
    for ns in (net.login_ns, net.client_ns):
        _ip("netns", "del", ns, check=False)


def _setup_network(net: LoginNodeNetwork) -> None:
    if _network_ok(net):
        return
    _teardown_network(net)
    _ip("netns", "add", net.login_ns)
    _ip("netns", "add", net.client_ns)
    # Both ends are created straight inside the namespaces: the host never has them.
    _ip("link", "add", net.login_if, "netns", net.login_ns, "type", "veth",
        "peer", "name", net.client_if, "netns", net.client_ns)
    for ns, dev, addr in ((net.login_ns, net.login_if, net.login_ip),
                          (net.client_ns, net.client_if, net.client_ip)):
        _ip("-n", ns, "addr", "add", f"{addr}/{net.prefix_len}", "dev", dev)
        _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
    if not _network_ok(net):
        raise TestbedError(f"the namespaces {net.login_ns}/{net.client_ns} did not come up")


def _relay_pids(lay: _Layout) -> list[int]:
    return _find_processes(("socat",), str(lay.relay_dir))


def _start_relays(lay: _Layout, net: LoginNodeNetwork, ports: tp.Sequence[int],
                  timeout: float) -> None:
    """Carry the login namespace's 127.0.0.1:PORT to the host's through unix sockets."""
    socat = which("socat") or "socat"
    lay.relay_dir.mkdir(parents=True, exist_ok=True)
    running = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in _relay_pids(lay)}
    for port in ports:
        sock = lay.relay_dir / f"{port}.sock"
        host_side = [c for c, cmd in running.items() if b"UNIX-LISTEN:" + str(sock).encode()
                     in cmd]
        ns_side = [c for c, cmd in running.items() if b"UNIX-CONNECT:" + str(sock).encode()
                   in cmd]
        if not host_side:
            sock.unlink(missing_ok=True)
            spawn_detached([socat, f"UNIX-LISTEN:{sock},fork,unlink-early,mode=600",
                            f"TCP:127.0.0.1:{port}"], log=lay.relay_log)
            if not _wait_until(sock.exists, timeout):
                raise TestbedError(f"the host side of relay {port} did not start\n"
                                   + _tail(lay.relay_log))
        if not ns_side:
            spawn_detached([*_netns_exec(net, net.login_ns), socat,
                            f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr",
                            f"UNIX-CONNECT:{sock}"], log=lay.relay_log)

            def up(port: int = port, sock: Path = sock) -> bool:
                pids = [p for p in _relay_pids(lay)
                        if b"UNIX-CONNECT:" + str(sock).encode()
                        in Path(f"/proc/{p}/cmdline").read_bytes()]
                return any(_listening(p, port) for p in pids)

            if not _wait_until(up, timeout):
                raise TestbedError(f"the login-node side of relay {port} did not start\n"
                                   + _tail(lay.relay_log))


# --------------------------------------------------------------------------- public API


def _load_settings(lay: _Layout) -> dict[str, tp.Any]:
    try:
        return tp.cast("dict[str, tp.Any]", json.loads(lay.settings.read_text()))
    except (OSError, ValueError):
        return {}


def _info(lay: _Layout, settings: dict[str, tp.Any], **extra: tp.Any) -> SshdInfo:
    net = LoginNodeNetwork(**settings["network"]) if settings.get("network") else None
    host = net.login_ip if net else "127.0.0.1"
    port = int(settings["port"])
    slurm_conf = Path(settings["slurm_conf"]) if settings.get("slurm_conf") else None
    entry = lay.known_hosts.read_text().strip() if lay.known_hosts.exists() else ""
    return SshdInfo(
        state_dir=lay.root, host=host, port=port, username="root",
        client_key=lay.client_key, known_hosts=lay.known_hosts, host_key_entry=entry,
        config=lay.config, log=lay.log, slurm_conf=slurm_conf,
        proxy_command=net.proxy_command(port) if net else None, network=net,
        relay_ports=tuple(settings.get("relay_ports", ())), **extra)


def start(state_dir: Path | str | None = None, *, slurm_conf: Path | str | None = None,
          login_node: bool = False, port: int | None = None, max_sessions: int = 10,
          relay_ports: tp.Sequence[int] = (6817, 6819),
          network: LoginNodeNetwork | None = None, timeout: float = 30.0,
          force_command: str | None = None) -> SshdInfo:
    """Start the test sshd (installing openssh-server if needed); idempotent.

    ``slurm_conf`` is passed to remote sessions as ``SLURM_CONF``. ``port`` defaults to
    a free port on 127.0.0.1, chosen once and kept in the state dir (22 in login-node
    mode). ``max_sessions`` is sshd's ``MaxSessions`` (channels per connection; 10 is
    OpenSSH's default, as on most clusters). In login-node mode ``relay_ports`` are the
    TCP ports carried from the login node's 127.0.0.1 to the host's (slurmctld's and
    slurmdbd's). ``force_command`` is sshd's ``ForceCommand``: every session runs it
    instead of what the client asked, which it finds in ``$SSH_ORIGINAL_COMMAND``
    (SFTP sessions too, as ``internal-sftp``), e.g. to put wrappers of Slurm's
    commands first on PATH in a server of a test's own (sshd's PATH wins over
    ``SetEnv``). The state dir defaults to :data:`DEFAULT_STATE_DIR` or
    :data:`DEFAULT_LOGIN_STATE_DIR`.
    """
    began = time.monotonic()
    reason = unavailable_reason(login_node=login_node)
    if reason is not None:
        raise TestbedUnavailableError(reason)
    lay = _layout(state_dir, login_node)
    net = (network or LoginNodeNetwork()) if login_node else None
    with _lock(lay):
        old = _load_settings(lay)
        if port is None:
            port = 22 if net else int(old.get("port") or _free_port())
        settings: dict[str, tp.Any] = {
            "port": port,
            "slurm_conf": str(Path(slurm_conf).absolute()) if slurm_conf else None,
            "network": dataclasses.asdict(net) if net else None,
            "relay_ports": list(relay_ports) if net else [],
            "max_sessions": max_sessions,
        }
        if force_command is not None:  # only then: older settings files still match
            settings["force_command"] = force_command
        lay.root.mkdir(parents=True, exist_ok=True)
        lay.root.chmod(0o700)
        config = _sshd_config(
            lay, address=net.login_ip if net else "127.0.0.1", port=port,
            slurm_conf=Path(settings["slurm_conf"]) if slurm_conf else None,
            max_sessions=max_sessions, force_command=force_command)
        up_to_date = (old == settings and lay.config.exists()
                      and lay.config.read_text() == config)
        if up_to_date and _sshd_pid(lay) is not None and (net is None or _network_ok(net)):
            if net is not None:
                _start_relays(lay, net, relay_ports, timeout)  # restarts any that died
            return _info(lay, settings, already_running=True,
                         start_seconds=time.monotonic() - began)
        install_packages(_LOGIN_PACKAGES if net else _PACKAGES, log=lay.root / "apt.log")
        if not up_to_date:
            _stop_all(lay, old)
        _keygen(lay.host_key, "adora-test-host")
        _keygen(lay.client_key, "adora-test-client")
        lay.authorized_keys.write_text(
            lay.client_key.with_name(lay.client_key.name + ".pub").read_text())
        key_type, key_data = lay.host_key.with_name(lay.host_key.name + ".pub").read_text(
        ).split()[:2]
        if net is not None:
            host_pattern = net.login_ip if port == 22 else f"[{net.login_ip}]:{port}"
        else:
            host_pattern = f"[127.0.0.1]:{port},[localhost]:{port}"
        lay.known_hosts.write_text(f"{host_pattern} {key_type} {key_data}\n")
        lay.config.write_text(config)
        lay.settings.write_text(json.dumps(settings, indent=1))
        if net is not None:
            _setup_network(net)
            _start_relays(lay, net, relay_ports, timeout)
        if _sshd_pid(lay) is None:
            _launch_sshd(lay, net, port, timeout)
        return _info(lay, settings, start_seconds=time.monotonic() - began)


def _stop_all(lay: _Layout, settings: dict[str, tp.Any]) -> bool:
    stopped = _sshd_pid(lay) is not None
    _stop_sshd(lay, kill_sessions=True, sig=signal.SIGTERM)
    relays = _relay_pids(lay)
    if relays:
        terminate(relays, timeout=5)
        stopped = True
    if settings.get("network"):
        _teardown_network(LoginNodeNetwork(**settings["network"]))
    return stopped


def stop(state_dir: Path | str | None = None, *, login_node: bool = False,
         wipe: bool = False) -> bool:
    """Stop the sshd, its sessions and (login node) relays and namespaces.

    Returns True if something was running. Keys are kept unless ``wipe=True``.
    """
    lay = _layout(state_dir, login_node)
    with _lock(lay):
        stopped = _stop_all(lay, _load_settings(lay))
        if wipe:
            import shutil

            shutil.rmtree(lay.root, ignore_errors=True)
    return stopped


def is_running(state_dir: Path | str | None = None, *, login_node: bool = False) -> bool:
    """True when the sshd at ``state_dir`` listens."""
    return _sshd_pid(_layout(state_dir, login_node)) is not None


def status(state_dir: Path | str | None = None, *, login_node: bool = False) -> str:
    """A few lines on what runs: sshd, relays, namespaces."""
    lay = _layout(state_dir, login_node)
    settings = _load_settings(lay)
    pid = _sshd_pid(lay)
    lines = [f"state dir: {lay.root}",
             f"  sshd     {'running, pid ' + str(pid) if pid else 'stopped'}"
             f" (port {settings.get('port', '?')})"]
    if settings.get("network"):
        net = LoginNodeNetwork(**settings["network"])
        lines.append(f"  netns    {net.login_ns} ({net.login_ip}), {net.client_ns} "
                     f"({net.client_ip}): {'up' if _network_ok(net) else 'down'}")
        lines.append(f"  relays   pids {_relay_pids(lay) or 'none'} for ports "
                     f"{settings.get('relay_ports')}")
    if pid and settings:
        lines.append("  connect: " + " ".join(_info(lay, settings).ssh_command()))
    return "\n".join(lines)


def main(argv: tp.Sequence[str] | None = None) -> int:
    """The command line: ``start``, ``stop``, ``status``."""
    parser = argparse.ArgumentParser(prog="python -m adora.testing.sshd",
                                     description="A real sshd for adora's tests.")
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--login-node", action="store_true",
                        help="run sshd in a network namespace of its own")
    parser.add_argument("--slurm-conf", type=Path, default=None,
                        help="SLURM_CONF for remote sessions (default: the test cluster's "
                        "if it exists)")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--wipe", action="store_true", help="stop: delete keys and state")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            slurm_conf = args.slurm_conf
            if slurm_conf is None:
                from adora.testing.slurm_cluster import info as cluster_info

                candidate = cluster_info().conf
                slurm_conf = candidate if candidate.exists() else None
            server = start(args.state_dir, slurm_conf=slurm_conf, login_node=args.login_node,
                           port=args.port)
            how = "already running" if server.already_running else "started"
            print(f"sshd {how} in {server.start_seconds:.1f} s on {server.host}:{server.port}")
            print(" ".join(server.ssh_command()))
        elif args.command == "stop":
            stopped = stop(args.state_dir, login_node=args.login_node, wipe=args.wipe)
            print("stopped" if stopped else "nothing was running")
        elif args.command == "status":
            print(status(args.state_dir, login_node=args.login_node))
            return 0 if is_running(args.state_dir, login_node=args.login_node) else 3
    except TestbedUnavailableError as exc:
        print(f"cannot run the test sshd here: {exc}", file=sys.stderr)
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
