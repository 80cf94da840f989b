"""Finding the user's training package and its decorated ``main``, as Dora does.

Order: ``-P/--package``, then ``$ADORA_PACKAGE`` (or Dora's ``$DORA_PACKAGE``),
then the single sub-folder of the current directory that is a package holding
the main module (``--main-module``, ``$ADORA_MAIN_MODULE``, ``$DORA_MAIN_MODULE``,
default ``train``).
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path

from .errors import PackageNotFoundError
from .main import DecoratedMain

__all__ = ["find_package", "load_main", "resolve_main_module"]

_HOW_TO = ("Pass -P/--package PACKAGE (before the command), set ADORA_PACKAGE, or run "
           "adora from the folder that contains your package; --main-module or "
           "ADORA_MAIN_MODULE names the module holding `main` (default: train).")


def resolve_main_module(main_module: str | None = None) -> str:
    return (main_module or os.environ.get("ADORA_MAIN_MODULE")
            or os.environ.get("DORA_MAIN_MODULE") or "train")


def find_package(main_module: str, root: Path | None = None) -> str:
    """The one sub-folder of ``root`` that is a package with ``<main_module>.py``."""
    root = Path.cwd() if root is None else root
    candidates = sorted(
        child.name for child in root.iterdir()
        if child.is_dir() and (child / "__init__.py").exists()
        and (child / f"{main_module}.py").exists())
    if not candidates:
        raise PackageNotFoundError(
            f"Could not find a training package in {root}: no sub-folder with __init__.py "
            f"and {main_module}.py. {_HOW_TO}")
    if len(candidates) > 1:
        raise PackageNotFoundError(
            f"Found several training packages in {root}: {', '.join(candidates)}. "
            f"Choose one with -P/--package or ADORA_PACKAGE.")
    return candidates[0]


def load_main(package: str | None = None, main_module: str | None = None) -> DecoratedMain:
    """Import ``<package>.<main_module>`` and return its decorated ``main``."""
    main_module = resolve_main_module(main_module)
    if package is None:
        package = os.environ.get("ADORA_PACKAGE") or os.environ.get("DORA_PACKAGE")
    if package is None:
        package = find_package(main_module)
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    module_name = f"{package}.{main_module}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name in (package, module_name):
            raise PackageNotFoundError(
                f"Cannot import {module_name}: no module named {exc.name!r} "
                f"(searched from {cwd}). {_HOW_TO}") from exc
        raise PackageNotFoundError(
            f"Importing {module_name} failed: {exc}.\n{traceback.format_exc()}") from exc
    except Exception as exc:
        raise PackageNotFoundError(
            f"Importing {module_name} failed with {type(exc).__name__}: {exc}\n"
            f"{traceback.format_exc()}") from exc
    main = getattr(module, "main", None)
    if main is None:
        raise PackageNotFoundError(f"{module_name} has no `main` function.")
    if not isinstance(main, DecoratedMain):
        raise PackageNotFoundError(
            f"{module_name}.main is not decorated: use @adora.argparse_main(...) or "
            "@adora.hydra_main(...).")
    return main
