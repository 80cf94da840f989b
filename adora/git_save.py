"""Paths relative to where the user started the command, even from a code snapshot.

When a job runs from a snapshot of the code (git_save), its working directory
is the snapshot. `to_absolute_path` still resolves relative paths (data
folders, the output ``dir``) against the directory the user started from.
"""

from __future__ import annotations

import os
import sys
import typing as tp
from pathlib import Path

__all__ = ["ORIGINAL_DIR_ENV", "original_dir", "to_absolute_path"]

#: Environment variable holding the directory the user started from.
ORIGINAL_DIR_ENV = "_ADORA_ORIGINAL_DIR"
_DORA_ORIGINAL_DIR_ENV = "_DORA_ORIGINAL_DIR"

AnyPath = tp.TypeVar("AnyPath", str, Path)


def original_dir() -> Path | None:
    """The directory the user started from, if running from a snapshot."""
    value = os.environ.get(ORIGINAL_DIR_ENV) or os.environ.get(_DORA_ORIGINAL_DIR_ENV)
    return Path(value) if value else None


def to_absolute_path(path: AnyPath) -> AnyPath:
    """Make ``path`` absolute relative to the directory the user started from.

    Falls back on Hydra's original working directory when a Hydra app runs
    (Hydra changes directory to the XP folder), then on the current directory.
    The return type is the type given (`str` or `Path`).
    """
    klass = type(path)
    p = Path(path)
    if p.is_absolute():
        return klass(p)  # type: ignore[return-value]
    base = original_dir()
    if base is None and "hydra" in sys.modules:
        try:
            from hydra.utils import get_original_cwd

            base = Path(get_original_cwd())
        except (ImportError, ValueError):
            base = None  # Hydra imported but no app running
    if base is None:
        base = Path(os.getcwd())
    return klass(base / p)  # type: ignore[return-value]
