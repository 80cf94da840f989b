"""Pytest fixtures for the real test beds: a Slurm cluster, an sshd, a login node.

Wire them in from the root ``conftest.py``::

    pytest_plugins = ["adora.testing.pytest_fixtures"]

Every fixture skips the test, with the reason from ``unavailable_reason()``, on a
machine that cannot run the test bed (not Linux, not root, no apt-get). Session
fixtures stop at the end of the session only what they started themselves, and only
when no other test session on this machine still uses the test beds (a shared flock on
``/tmp/adora-testbeds.users``): a cluster started beforehand
(``python -m adora.testing.slurm_cluster start``) keeps running, which saves its ~1 s
start and ~2 s stop on every run. Set ``ADORA_KEEP_TESTBED=1`` to leave everything
running after the session; under pytest-xdist nothing is stopped (other workers may
still use it).
"""

from __future__ import annotations

import os
import typing as tp

import pytest

from adora.testing import slurm_cluster as _slurm
from adora.testing import sshd as _sshd

__all__ = ["login_node", "slurm_cluster", "slurm_env", "sshd_server"]


def _keep_running() -> bool:
    return bool(os.environ.get("ADORA_KEEP_TESTBED") or os.environ.get("PYTEST_XDIST_WORKER")
                or _others_use_the_testbeds())


_USERS_LOCK = "/tmp/adora-testbeds.users"
_users_fd: int | None = None


def _use_the_testbeds() -> None:
    # Each test session holds a shared lock while it may use the test beds: a session
    # that ends stops what it started only if no other session (another checkout's
    # tests, run at the same time on this machine) still holds it.
    global _users_fd
    if _users_fd is None:
        import fcntl

        _users_fd = os.open(_USERS_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(_users_fd, fcntl.LOCK_SH)


def _others_use_the_testbeds() -> bool:
    if _users_fd is None:
        return False
    import fcntl

    try:  # exclusive only if we are the last user (flock converts our shared lock)
        fcntl.flock(_users_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(_users_fd, fcntl.LOCK_SH)
    return False


@pytest.fixture(scope="session")
def slurm_cluster() -> tp.Iterator[_slurm.ClusterInfo]:
    """A running single-node Slurm cluster (``debug`` default and ``learnfair`` partitions).

    Also makes sure slurmctld runs again after the session if a test left it stopped.
    """
    reason = _slurm.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    _use_the_testbeds()
    info = _slurm.start()
    yield info
    if info.already_running or _keep_running():
        _slurm.start()  # bring back whatever a test left stopped
    else:
        _slurm.stop()


@pytest.fixture
def slurm_env(slurm_cluster: _slurm.ClusterInfo,
              monkeypatch: pytest.MonkeyPatch) -> _slurm.ClusterInfo:
    """The cluster, with its variables (``SLURM_CONF``) set in ``os.environ`` for the test."""
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    return slurm_cluster


@pytest.fixture(scope="session")
def sshd_server(slurm_cluster: _slurm.ClusterInfo) -> tp.Iterator[_sshd.SshdInfo]:
    """A real sshd on 127.0.0.1 whose sessions see the cluster (``SLURM_CONF``).

    Connect with ``asyncssh.connect(**sshd_server.connect_kwargs())``. A test that kills
    the sshd should call ``sshd_server.start_sshd()`` when done.
    """
    reason = _sshd.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    was_running = _sshd.is_running()
    info = _sshd.start(slurm_conf=slurm_cluster.conf)
    yield info
    if was_running or _keep_running():
        info.start_sshd()
    else:
        _sshd.stop()


@pytest.fixture(scope="session")
def login_node(slurm_cluster: _slurm.ClusterInfo) -> tp.Iterator[_sshd.SshdInfo]:
    """An sshd on a "login node": its own network namespace, reached by ``proxy_command``.

    Slurm's client commands there reach the cluster through relays of its RPC ports.
    """
    reason = _sshd.unavailable_reason(login_node=True)
    if reason is not None:
        pytest.skip(reason)
    was_running = _sshd.is_running(login_node=True)
    info = _sshd.start(slurm_conf=slurm_cluster.conf, login_node=True,
                       relay_ports=slurm_cluster.rpc_ports)
    yield info
    if was_running or _keep_running():
        info.start_sshd()
    else:
        _sshd.stop(login_node=True)
