"""One SSH connection per cluster (asyncssh), shared by every command and file transfer.

- Commands are argument vectors; each argument is quoted for the remote shell
  (`shlex.join`), so values with spaces, quotes, ``$()``, backticks, ``;`` or
  newlines reach the remote program literally.
- Channels are multiplexed on the one connection, at most ``max_sessions`` at
  a time (sshd refuses more than 10 by default).
- A dropped connection is noticed by the next call, which reconnects; callers
  (the poller) turn the failures in between into *stale* states and back off.
- Host keys are always verified; an unknown key is refused with its
  fingerprint and how to check and add it.
"""

from __future__ import annotations

import logging
import shlex
import typing as tp

import anyio

from .backends.base import FileStamp
from .clusters import ClusterConfig
from .errors import BackendError, CommandTimeoutError, ConfigError
from .slurm.transport import CommandResult

if tp.TYPE_CHECKING:
    import asyncssh

__all__ = ["STAT_ARGV", "SSHConnection", "SSHConnectionError", "parse_stat"]

logger = logging.getLogger(__name__)


class SSHConnectionError(BackendError):
    """The cluster could not be reached (or the connection dropped)."""


class SSHConnection:
    """A lazily opened, automatically reopened asyncssh connection to one cluster.

    Implements the `CommandRunner` protocol, so the Slurm client runs over it.
    """

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock = anyio.Lock()
        self._sessions = anyio.Semaphore(max(1, config.max_sessions))
        # SFTP requests share one channel: many may be in flight at once. A read keeps
        # a file open on the server for its three round trips: 256 of them stay far
        # below sshd's usual 1,024 descriptors.
        self._sftp_requests = anyio.Semaphore(256)
        self._sftp_lock = anyio.Lock()
        self.connects = 0
        self.count: dict[str, int] = {}

    @property
    def where(self) -> str:
        port = f":{self.config.port}" if self.config.port else ""
        return f"{self.config.host}{port} (cluster {self.config.name})"

    async def connection(self) -> asyncssh.SSHClientConnection:
        conn = self._conn
        if conn is not None and not conn.is_closed():
            return conn  # open: no lock (hundreds of SFTP reads ask at once)
        import asyncssh

        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            self._conn, self._sftp = None, None
            kwargs = self.config.connect_kwargs()
            try:
                self._conn = await asyncssh.connect(**kwargs)
            except asyncssh.HostKeyNotVerifiable as exc:
                raise ConfigError(await self._host_key_message(kwargs, exc)) from exc
            except asyncssh.PermissionDenied as exc:
                raise ConfigError(
                    f"SSH authentication to {self.where} failed ({exc.reason}). Check `user` "
                    "and `identity_file` in the cluster's configuration, or your ssh-agent."
                ) from exc
            except (OSError, asyncssh.Error, TimeoutError) as exc:
                raise SSHConnectionError(f"Cannot connect to {self.where}: {exc}") from exc
            self.connects += 1
            return self._conn

    async def _host_key_message(self, kwargs: dict[str, tp.Any], exc: Exception) -> str:
        import asyncssh

        known = kwargs.get("known_hosts") or "~/.ssh/known_hosts"
        fingerprint = "unknown"
        try:
            probe = {k: v for k, v in kwargs.items()
                     if k in ("host", "port", "tunnel", "proxy_command")}
            key = await asyncssh.get_server_host_key(**probe)
            if key is not None:
                fingerprint = key.get_fingerprint("sha256")
        except (OSError, asyncssh.Error):
            pass
        port = self.config.port or 22
        return (f"The SSH host key of {self.where} is not trusted ({exc}). The server presents "
                f"the key {fingerprint}. Check this fingerprint with the cluster's admins; if "
                f"it is right, add the key to {known} (for instance with `ssh-keyscan -p {port} "
                f"{self.config.host} >> {known}`). adora never trusts unknown keys.")

    def _broken(self) -> None:
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            conn.abort()

    async def run(self, argv: tp.Sequence[str], *, timeout: float = 60.0,
                  input: str | bytes | None = None) -> CommandResult:
        """Run ``argv`` on the cluster; every argument reaches it literally.

        ``input`` goes to the command's stdin; bytes are sent as they are (an archive).
        """
        import asyncssh

        argv = [str(a) for a in argv]
        self.count[argv[0]] = self.count.get(argv[0], 0) + 1
        command = shlex.join(argv)
        # Binary input: a binary session (no encoding); the output is decoded below.
        encoding = {"encoding": None} if isinstance(input, bytes) else {}
        async with self._sessions:
            conn = await self.connection()
            try:
                result = await conn.run(command, check=False, timeout=timeout, input=input,
                                        **encoding)
            except asyncssh.TimeoutError as exc:
                raise CommandTimeoutError(argv, None, message=f"`{argv[0]}` on {self.where} "
                                          f"did not answer in {timeout:.0f} s") from exc
            except asyncssh.ChannelOpenError as exc:
                self._broken()
                raise SSHConnectionError(f"SSH channel to {self.where} refused: {exc}") from exc
            except (OSError, asyncssh.Error) as exc:
                self._broken()
                raise SSHConnectionError(f"Connection to {self.where} lost: {exc}") from exc
        stderr = _text(result.stderr)
        status = result.exit_status
        if status is None or status < 0:  # asyncssh: -1 when no exit status came
            why = (f"killed by signal {result.exit_signal[0]}" if result.exit_signal
                   else "the connection closed before it ended")
            stderr = stderr or f"`{argv[0]}` on {self.where} gave no exit status ({why})"
            status = 255
        return CommandResult(argv, status, _text(result.stdout), stderr)

    async def shell(self, lines: tp.Sequence[str], *, timeout: float = 60.0) -> CommandResult:
        """Run trusted shell lines (e.g. the cluster's ``activate``) under ``bash -c``."""
        return await self.run(["bash", "-c", "\n".join(lines)], timeout=timeout)

    # -- files -----------------------------------------------------------------------------
    async def sftp(self) -> asyncssh.SFTPClient:
        import asyncssh

        conn = await self.connection()
        if self._sftp is not None:
            return self._sftp
        async with self._sftp_lock:  # one SFTP channel, however many readers ask at once
            if self._sftp is None:
                try:
                    self._sftp = await conn.start_sftp_client()
                except (OSError, asyncssh.Error) as exc:
                    self._broken()
                    raise SSHConnectionError(f"SFTP to {self.where} failed: {exc}") from exc
            return self._sftp

    async def read_file(self, path: str, offset: int, *, known: FileStamp | None = None,
                        stamp: FileStamp | None = None) -> tuple[bytes, FileStamp] | None:
        """Remote bytes from ``offset`` (only new bytes), or None if the file is absent.

        ``stamp``: the file's stamp, just learnt (`stat_many`); the bytes up to its size
        are read without asking for it again. Three round trips (open, read, close),
        the stat a fourth when ``stamp`` is not given.
        """
        import asyncssh

        async with self._sftp_requests:
            sftp = await self.sftp()
            try:
                if stamp is None:
                    attrs = await sftp.stat(path)
                    stamp = _stamp(attrs)
                if stamp.size <= offset or stamp == known:
                    return b"", stamp
                async with sftp.open(path, "rb") as f:
                    # A size to read: asyncssh would otherwise ask for the file's end.
                    data = await f.read(stamp.size - offset, offset)
                return (data if isinstance(data, bytes) else data.encode()), stamp
            except asyncssh.SFTPNoSuchFile:
                return None
            except asyncssh.SFTPError as exc:
                raise BackendError(f"Reading {path} on {self.where}: {exc}") from exc
            except (OSError, asyncssh.Error) as exc:
                self._broken()
                raise SSHConnectionError(f"Connection to {self.where} lost: {exc}") from exc

    async def stat(self, path: str) -> FileStamp | None:
        """Size and mtime of one remote file or folder (one SFTP request), None if absent."""
        import asyncssh

        async with self._sftp_requests:
            sftp = await self.sftp()
            try:
                attrs = await sftp.stat(path)
            except asyncssh.SFTPNoSuchFile:
                return None
            except asyncssh.SFTPError as exc:
                raise BackendError(f"Looking for {path} on {self.where}: {exc}") from exc
            except (OSError, asyncssh.Error) as exc:
                self._broken()
                raise SSHConnectionError(f"Connection to {self.where} lost: {exc}") from exc
        return _stamp(attrs)

    async def stat_many(self, paths: tp.Sequence[str]) -> dict[str, FileStamp]:
        """Size and mtime of many remote files in one command (absent files are left out).

        The paths go to ``xargs`` on stdin, NUL-separated: no command line limit
        (a remote shell takes at most 128 KiB as one argument), any character.
        """
        if not paths:
            return {}
        result = await self.run(["xargs", "-0", *STAT_ARGV],
                                input="".join(f"{path}\0" for path in paths), timeout=120)
        return parse_stat(result.stdout)

    async def aclose(self) -> None:
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            conn.close()
            await conn.wait_closed()


#: ``stat`` printing what `parse_stat` reads (GNU coreutils, as on Linux clusters): one
#: NUL-terminated ``size mtime path`` record per file found, whatever the path holds.
STAT_ARGV = ("stat", "--printf=%s %Y %n\\0", "--")


def parse_stat(text: str) -> dict[str, FileStamp]:
    """Stamps by path from the output of `STAT_ARGV`. Pure."""
    stamps: dict[str, FileStamp] = {}
    for record in text.split("\0"):
        parts = record.split(" ", 2)
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].lstrip("-").isdigit():
            continue
        stamps[parts[2]] = FileStamp(int(parts[0]), int(parts[1]) * 10**9, 0)
    return stamps


def _stamp(attrs: tp.Any) -> FileStamp:
    # SFTP attributes -> the stamp local reads use (size, mtime in ns).
    return FileStamp(attrs.size or 0, int((attrs.mtime or 0) * 1e9), 0)


def _text(value: tp.Any) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
