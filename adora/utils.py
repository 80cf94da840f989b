"""Helpers training code imports from ``dora.utils`` (demucs' solver does), by the same names.

- `write_and_rename`: write a checkpoint through a temporary file, then rename it, so
  a job killed mid-write never leaves a half-written checkpoint under the real name.
- `try_load`: load a file, or None (with a warning) when it is missing or damaged.
- `reliable_rmtree`: delete a folder; what cannot be deleted is moved aside.
- `import_or_fatal`, `jsonable`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pickle
import shutil
import tempfile
import typing as tp
from pathlib import Path

from .xp import jsonable

__all__ = ["import_or_fatal", "jsonable", "reliable_rmtree", "try_load", "write_and_rename"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def write_and_rename(path: str | os.PathLike[str], mode: str = "wb", suffix: str = ".tmp"
                     ) -> tp.Iterator[tp.IO[tp.Any]]:
    """Open ``path + suffix`` for writing; once the block ends without error, rename it
    to ``path`` (atomic on one file system). On an error the temporary file is removed
    and ``path`` keeps its old content::

        with write_and_rename(xp.folder / "checkpoint.th") as f:
            torch.save(state, f)
    """
    tmp = f"{os.fspath(path)}{suffix}"
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.replace(tmp, path)


def try_load(path: str | os.PathLike[str], load: tp.Callable[[tp.IO[tp.Any]], tp.Any] = pickle.load,
             mode: str = "rb") -> tp.Any:
    """``load(open(path, mode))``, or None if the file is missing or cannot be loaded
    (a warning says why): a damaged checkpoint means starting over, not crashing."""
    try:
        with open(path, mode) as f:
            return load(f)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, ValueError) as exc:
        logger.warning("Could not load %s, ignoring it: %r", path, exc)
        return None


def import_or_fatal(module_name: str) -> tp.Any:
    """Import ``module_name``, or stop the program with a message saying it could not."""
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        from .log import fatal

        logger.debug("Could not import %s", module_name, exc_info=True)
        fatal(f"Failed to import module {module_name}: {exc}")


def reliable_rmtree(path: str | os.PathLike[str]) -> None:
    """Delete the folder ``path``. If some files resist (NFS silly-renames, files held
    open), the folder is renamed to ``<name>_..._trash`` beside it instead, so the path
    is free either way."""
    path = Path(path)
    failed: list[str] = []
    shutil.rmtree(path, onerror=lambda _func, name, _exc: failed.append(name))
    if failed and path.exists():
        trash = tempfile.mkdtemp(dir=path.parent, prefix=f"{path.name}_", suffix="_trash")
        logger.warning("Could not delete %d file(s) of %s (e.g. %s); moved it to %s",
                       len(failed), path, failed[0], trash)
        os.replace(path, trash)
