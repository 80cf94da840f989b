"""The Slurm and SSH test beds for the benchmarks (run in the adora venv; prints one JSON line).

    python benchmarks/testbed.py slurm                        # start (idempotent) the cluster
    python benchmarks/testbed.py sshd-start --state-dir D --slurm-conf C
    python benchmarks/testbed.py sshd-stop --state-dir D

``slurm`` uses the running ``adora.testing.slurm_cluster``; when one of its daemons is
down it first waits up to a minute (other sessions' tests stop the controller
for a few seconds on purpose), then starts it. It is never stopped here.
``sshd-start`` starts a private ``adora.testing.sshd`` in its own state directory
(its own port and keys), so stopping it never affects another session's sshd.
Failures are reported as ``{"error": "..."}`` with exit status 0, for the harness
to skip with that reason.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def slurm(wait: float = 60.0) -> dict[str, object]:
    from adora.testing import slurm_cluster

    reason = slurm_cluster.unavailable_reason()
    if reason is not None:
        return {"error": reason}
    # Other sessions' tests stop the controller for a few seconds on purpose: give a
    # cluster that exists the time to come back before starting anything.
    ran_before = slurm_cluster.info().conf.exists()
    deadline = time.monotonic() + (wait if ran_before else 0)
    while not slurm_cluster.is_running() and time.monotonic() < deadline:
        time.sleep(1)
    try:
        if slurm_cluster.is_running():
            info = slurm_cluster.info()
            already = True
        else:
            info = slurm_cluster.start()
            already = bool(getattr(info, "already_running", False))
    except Exception as exc:  # TestbedError and friends: the reason to skip
        return {"error": f"the test cluster did not start: {exc}"}
    return {"conf": str(info.conf), "env": dict(info.env),
            "already_running": already,
            "max_array_size": info.max_array_size, "cpus": info.cpus,
            "partitions": list(info.partitions)}


def sshd_start(state_dir: str, slurm_conf: str) -> dict[str, object]:
    from adora.testing import sshd

    reason = sshd.unavailable_reason()
    if reason is not None:
        return {"error": reason}
    try:
        info = sshd.start(state_dir, slurm_conf=slurm_conf)
    except Exception as exc:
        return {"error": f"the test sshd did not start: {exc}"}
    return {"host": info.host, "port": info.port, "username": info.username,
            "client_key": str(info.client_key), "known_hosts": str(info.known_hosts),
            "host_key_entry": info.host_key_entry,
            "already_running": info.already_running}


def sshd_stop(state_dir: str) -> dict[str, object]:
    from adora.testing import sshd

    return {"stopped": sshd.stop(state_dir)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["slurm", "sshd-start", "sshd-stop"])
    parser.add_argument("--state-dir")
    parser.add_argument("--slurm-conf")
    opts = parser.parse_args()
    if opts.what == "slurm":
        out = slurm()
    elif opts.what == "sshd-start":
        out = sshd_start(opts.state_dir, opts.slurm_conf)
    else:
        out = sshd_stop(opts.state_dir)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
