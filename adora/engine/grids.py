"""Finding grid files, importing them with errors that point into them, and grid membership.

Grids are modules ``<grid_package>.<name>`` (``<package>.grids`` by default;
dots in the name are sub-packages). Membership is kept as Dora does, with one
symlink per XP: ``<dir>/grids/<name>/<sig> -> <dir>/xps/<sig>``.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
import typing as tp
from pathlib import Path

from ..errors import GridError
from ..explore import Explorer, grid_error_from
from ..files import map_threads, relative_prefix

if tp.TYPE_CHECKING:
    from ..main import DecoratedMain

__all__ = ["claimed_by_other_grids", "grid_members", "list_grids", "load_explorer",
           "set_membership"]


def grid_package(main: DecoratedMain) -> str:
    return main.dora.grid_package or f"{main.package}.grids"


def _grids_root(main: DecoratedMain) -> Path:
    name = grid_package(main)
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise GridError(f"Cannot import the grid package {name}: {exc}. Create "
                        f"{name.replace('.', '/')}/__init__.py, or set grid_package.") from exc
    if module.__file__ is None:
        raise GridError(f"The grid package {name} has no __init__.py.")
    return Path(module.__file__).parent


def list_grids(main: DecoratedMain) -> list[str]:
    """Names of the grids of ``main``'s grid package (files starting with ``_`` skipped)."""
    root = _grids_root(main)
    names = []
    for folder, _dirs, files in os.walk(root):
        for file in files:
            path = (Path(folder) / file).relative_to(root)
            if file.endswith(".py") and not file.startswith("_"):
                names.append(".".join(path.with_suffix("").parts))
    return sorted(names)


def grid_file(main: DecoratedMain, name: str) -> Path:
    return _grids_root(main) / (name.replace(".", "/") + ".py")


def load_explorer(main: DecoratedMain, name: str) -> tuple[Explorer, str]:
    """Import grid ``name`` and return its explorer and the grid file's path.

    Unknown names list the available grids; a syntax error or an exception at
    import time is reported with its file and line.
    """
    path = grid_file(main, name)
    if not path.exists():
        available = ", ".join(list_grids(main)) or "(none)"
        raise GridError(f"No grid named {name!r} in {grid_package(main)} (no file {path}). "
                        f"Available grids: {available}.")
    module_name = f"{grid_package(main)}.{name}"
    try:
        sys.modules.pop(module_name, None)
        module = importlib.import_module(module_name)
    except SyntaxError as exc:
        raise GridError(f"Syntax error: {exc.msg}", filename=exc.filename or str(path),
                        lineno=exc.lineno) from exc
    except (SystemExit, KeyboardInterrupt) as exc:
        raise grid_error_from(exc, str(path), doing="importing the grid") from exc
    except Exception as exc:
        lineno = None
        for frame, line in traceback.walk_tb(exc.__traceback__):
            if Path(frame.f_code.co_filename) == path:
                lineno = line
        raise GridError(f"Importing the grid failed: {type(exc).__name__}: {exc}",
                        filename=str(path), lineno=lineno) from exc
    explorer = getattr(module, "explorer", None)
    if explorer is None:
        raise GridError("The grid defines no `explorer`: decorate its explore function "
                        "with @Explorer (from adora import Explorer).", filename=str(path))
    if not isinstance(explorer, Explorer):
        raise GridError(f"`explorer` is a {type(explorer).__name__}, not an adora Explorer "
                        "(decorate the function with @Explorer).", filename=str(path))
    return explorer, str(path)


# -- membership ----------------------------------------------------------------------
def grids_dir(main: DecoratedMain) -> Path:
    return main.dora.dir / main.dora._grids


def grid_members(main: DecoratedMain, name: str) -> list[str]:
    """Signatures currently recorded as members of grid ``name``."""
    folder = grids_dir(main) / name
    try:
        return sorted(entry.name for entry in os.scandir(folder))
    except FileNotFoundError:
        return []


def claimed_by_other_grids(main: DecoratedMain, name: str, sigs: tp.Iterable[str]) -> set[str]:
    """The subset of ``sigs`` that some grid other than ``name`` lists as a member."""
    root = grids_dir(main)
    sigs = set(sigs)
    claimed: set[str] = set()
    if not sigs or not root.exists():
        return claimed
    for other in root.iterdir():
        if other.name == name or not other.is_dir():
            continue
        for sig in sigs - claimed:
            if os.path.lexists(other / sig):
                claimed.add(sig)
    return claimed


def set_membership(main: DecoratedMain, name: str, add: tp.Iterable[str],
                   remove: tp.Iterable[str]) -> None:
    """Add and remove member symlinks of grid ``name``."""
    folder = grids_dir(main) / name
    folder.mkdir(parents=True, exist_ok=True)
    xps = main.dora.dir / main.dora.xps
    present = set(os.listdir(folder))
    prefix = relative_prefix(xps, folder)

    base = str(folder)  # strings, not Paths: one link per XP

    def _add(sig: str) -> None:
        try:
            os.symlink(f"{prefix}/{sig}", f"{base}/{sig}")
        except FileExistsError:
            pass

    def _remove(sig: str) -> None:
        try:
            os.unlink(f"{base}/{sig}")
        except FileNotFoundError:
            pass
    map_threads(_add, [sig for sig in add if sig not in present], where=folder)
    map_threads(_remove, [sig for sig in remove if sig in present], where=folder)
