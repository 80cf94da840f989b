"""Backends run jobs: local processes, Slurm on this host, Slurm over SSH.

All implement `Backend` (``base.py``); the engine only talks to that protocol.
"""

from __future__ import annotations

import typing as tp
from pathlib import Path

from ..errors import ConfigError
from .base import Backend, JobStatus, LaunchSpec, SubmitRequest

__all__ = ["Backend", "JobStatus", "LaunchSpec", "SubmitRequest", "get_backend"]

BACKENDS = ("auto", "local", "slurm")


def slurm_available() -> bool:
    """True when this host can submit to Slurm (``sbatch`` found, Slurm backend present)."""
    import importlib.util
    import shutil

    return bool(shutil.which("sbatch")) and \
        importlib.util.find_spec("adora.backends.slurm") is not None


def get_backend(name: str | None, *, root: Path, **options: tp.Any) -> Backend:
    """Instantiate a backend by name; ``auto`` picks Slurm when ``sbatch`` is on PATH.

    ``root`` is the output directory (``DoraConfig.dir``) the backend keeps its files in.
    """
    name = name or "auto"
    if name == "auto":
        name = "slurm" if slurm_available() else "local"
    if name == "local":
        from .local import LocalBackend

        return LocalBackend(root, **options)
    if name == "slurm":
        from .slurm import SlurmBackend

        return SlurmBackend(root, **options)
    raise ConfigError(f"Unknown backend {name!r}: choose one of {', '.join(BACKENDS)}.")
