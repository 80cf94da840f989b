"""Remote clusters, configured in TOML.

Read from the user's ``~/.config/adora/clusters.toml`` (or
``$ADORA_CLUSTERS_FILE``), one table per cluster, and from the project's
``pyproject.toml`` under ``[tool.adora.clusters.NAME]`` (the project wins)::

    [clusters.mycluster]             # in clusters.toml ("[mycluster]" also works)
    host = "login.example.org"
    user = "me"                      # default: from ~/.ssh/config, else local user
    port = 22
    identity_file = "~/.ssh/id_ed25519"
    known_hosts = "~/.ssh/known_hosts"   # host keys are always verified
    proxy_jump = "bastion.example.org"   # or proxy_command = ["ssh", "-W", "%h:%p", "gw"]
    workdir = "/scratch/me/myproject"    # code snapshots and XP folders live here
    activate = ["source ~/venvs/adora/bin/activate"]   # makes `python -m adora` work
    python = "python"
    setup = ["module load cuda"]

``~/.ssh/config`` is honoured for what it sets (asyncssh reads it) unless
these fields say otherwise.
"""

from __future__ import annotations

import os
import sys
import typing as tp
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ClusterConfig", "load_cluster", "user_clusters_file"]


@dataclass
class ClusterConfig:
    """How to reach a remote Slurm cluster and where adora works on it."""

    name: str
    host: str
    workdir: str
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    proxy_jump: str | None = None
    proxy_command: list[str] | str | None = None
    activate: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)
    python: str = "python"
    #: Most concurrent channels on the one connection (sshd allows 10 by default).
    max_sessions: int = 8
    connect_timeout: float = 20.0
    #: Slurm commands per second sent to the cluster (token bucket).
    rate: float = 5.0

    def connect_kwargs(self) -> dict[str, tp.Any]:
        """Keyword arguments for ``asyncssh.connect``."""
        kwargs: dict[str, tp.Any] = {"host": self.host,
                                     "connect_timeout": self.connect_timeout}
        if self.user:
            kwargs["username"] = self.user
        if self.port:
            kwargs["port"] = self.port
        if self.identity_file:
            kwargs["client_keys"] = [os.path.expanduser(self.identity_file)]
        if self.known_hosts:
            kwargs["known_hosts"] = os.path.expanduser(self.known_hosts)
        if self.proxy_jump:
            kwargs["tunnel"] = self.proxy_jump
        if self.proxy_command:
            kwargs["proxy_command"] = self.proxy_command
        return kwargs


def user_clusters_file() -> Path:
    env = os.environ.get("ADORA_CLUSTERS_FILE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME")
    return (Path(base) if base else Path.home() / ".config") / "adora" / "clusters.toml"


def _read_toml(path: Path) -> dict[str, tp.Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def _table(value: tp.Any, path: Path, key: str) -> dict[str, tp.Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: `{key}` must be a table ([{key}]), not "
                          f"{_article(_toml_type(value))} ({value!r}).")
    return value


def _article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _toml_type(value: tp.Any) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
             dict: "table"}
    return names.get(type(value), type(value).__name__)


def _tables(path: Path, project: bool) -> dict[str, dict[str, tp.Any]]:
    data = _read_toml(path)
    if project:
        tables: dict[str, tp.Any] = data
        for key in ("tool", "tool.adora", "tool.adora.clusters"):
            tables = _table(tables.get(key.rsplit(".", 1)[-1], {}), path, key)
        prefix = "tool.adora.clusters."
    elif "clusters" in data:
        tables, prefix = _table(data["clusters"], path, "clusters"), "clusters."
    else:
        return {k: v for k, v in data.items() if isinstance(v, dict)}
    return {name: _table(value, path, prefix + name) for name, value in tables.items()}


#: Field types of a cluster table (beyond the dataclass's annotations, which are strings).
_STRINGS = ("host", "workdir", "user", "identity_file", "known_hosts", "proxy_jump", "python")
_STRING_LISTS = ("activate", "setup", "proxy_command")  # a string, or an array of strings
_POSITIVE_INTS = {"port": 65535, "max_sessions": None}
_POSITIVE_NUMBERS = ("connect_timeout", "rate")


def _check_types(name: str, merged: dict[str, tp.Any], where: str) -> None:
    def bad(key: str, expected: str) -> ConfigError:
        value = merged[key]
        return ConfigError(f"Cluster {name!r} ({where}): `{key}` must be {expected}, not "
                           f"the {_toml_type(value)} {value!r}.")

    for key, value in merged.items():
        if key in _STRINGS and not isinstance(value, str):
            raise bad(key, "a string")
        if key in _STRING_LISTS and not (isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value))):
            raise bad(key, "a string or an array of strings")
        if key in _POSITIVE_INTS:
            top = _POSITIVE_INTS[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1 \
                    or (top is not None and value > top):
                raise bad(key, f"an integer from 1 to {top}" if top else
                          "a positive integer")
        if key in _POSITIVE_NUMBERS and (isinstance(value, bool) or not isinstance(
                value, (int, float)) or not 0 < value < float("inf")):
            raise bad(key, "a positive number")


def available_clusters(project_root: Path | None = None) -> dict[str, Path]:
    """Cluster names and the file that defines each."""
    out = {name: user_clusters_file() for name in _tables(user_clusters_file(), False)}
    pyproject = (project_root or Path.cwd()) / "pyproject.toml"
    out.update({name: pyproject for name in _tables(pyproject, True)})
    return out


def load_cluster(name: str, project_root: Path | None = None) -> ClusterConfig:
    """The configuration of cluster ``name``; clear errors for unknown names and fields."""
    pyproject = (project_root or Path.cwd()) / "pyproject.toml"
    sources = [(user_clusters_file(), _tables(user_clusters_file(), False)),
               (pyproject, _tables(pyproject, True))]
    merged: dict[str, tp.Any] = {}
    where: list[str] = []
    for path, tables in sources:
        if name in tables:
            merged.update(tables[name])
            where.append(str(path))
    if not merged:
        known = sorted(available_clusters(project_root))
        raise ConfigError(
            f"Unknown cluster {name!r}. Define it in {user_clusters_file()} as [clusters.{name}] "
            f"or in pyproject.toml as [tool.adora.clusters.{name}]. "
            f"Known clusters: {', '.join(known) or '(none)'}.")
    allowed = {f.name for f in fields(ClusterConfig)} - {"name"}
    unknown = sorted(set(merged) - allowed)
    if unknown:
        raise ConfigError(f"Cluster {name!r} ({', '.join(where)}): unknown field(s) "
                          f"{', '.join(unknown)}. Known fields: {', '.join(sorted(allowed))}.")
    _check_types(name, merged, ", ".join(where))
    for required in ("host", "workdir"):
        if not merged.get(required):
            raise ConfigError(f"Cluster {name!r} ({', '.join(where)}) needs `{required}`.")
    for key in ("activate", "setup"):
        if isinstance(merged.get(key), str):
            merged[key] = [merged[key]]
    return ClusterConfig(name=name, **merged)
