"""The ``dora`` import name for libraries written for Dora (flashy: ``from dora import get_xp``).

Two cases, decided by what is installed, never by adora overwriting anything:

- dora-search is not installed: ``import dora`` gives an alias of adora, whose
  names are adora's (``dora.get_xp is adora.get_xp``) and whose submodules are
  adora's modules (``dora.distrib is adora.distrib``). A finder placed *last* in
  ``sys.meta_path`` provides it, so it only answers when nothing else does.
- dora-search is installed: ``import dora`` is Dora, untouched. While adora runs
  an XP, that XP is also on Dora's XP stack, so ``dora.get_xp()`` returns it
  (adora's `XP` has the attributes of Dora's: ``sig``, ``folder``, ``cfg``,
  ``link``, ``argv``, ``delta``, ``dora``).

``import adora`` puts a small finder last in ``sys.meta_path`` that loads this
module only when something imports ``dora`` (no cost at start-up).
``ADORA_NO_DORA_ALIAS=1`` turns both off.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types
import typing as tp
from contextlib import contextmanager

if tp.TYPE_CHECKING:
    from .xp import XP

__all__ = ["AliasFinder", "disabled", "install", "real_dora_installed", "sharing_xp"]

ALIAS = "dora"
TARGET = "adora"


def disabled() -> bool:
    """True when ``ADORA_NO_DORA_ALIAS`` asks adora to leave the ``dora`` name alone."""
    return os.environ.get("ADORA_NO_DORA_ALIAS", "") not in ("", "0")


class _AliasLoader:
    # A loader by protocol (importlib.abc would cost ~10 ms at `import adora`).
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        if self.target == TARGET:
            return _top_module()
        # The very module object of adora: one XP stack, one set of classes.
        return importlib.import_module(self.target)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def _top_module() -> types.ModuleType:
    adora = importlib.import_module(TARGET)
    module = types.ModuleType(ALIAS, f"The `dora` name, provided by adora: {adora.__doc__}")
    module.__path__ = []  # a package: `dora.X` comes from the finder, as adora.X
    module.__dict__["__all__"] = list(getattr(adora, "__all__", []))
    module.__dict__["__getattr__"] = lambda name: getattr(adora, name)
    names = set(getattr(adora, "__all__", []))
    module.__dict__["__dir__"] = lambda: sorted(set(dir(adora)) | names)
    module.__dict__["__adora_alias__"] = True
    return module


class AliasFinder:
    """Finds ``dora`` and ``dora.X`` as aliases of ``adora`` and ``adora.X``; last resort.

    A meta path finder by protocol (``find_spec``).
    """

    def find_spec(self, fullname: str, path: tp.Any = None, target: tp.Any = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname == ALIAS:
            return importlib.machinery.ModuleSpec(ALIAS, tp.cast(tp.Any, _AliasLoader(TARGET)),
                                                  is_package=True)
        if not fullname.startswith(ALIAS + "."):
            return None
        parent = sys.modules.get(ALIAS)
        if parent is None or not getattr(parent, "__adora_alias__", False):
            return None  # submodules of a real Dora are Dora's business
        target_name = TARGET + fullname[len(ALIAS):]
        try:
            found = importlib.util.find_spec(target_name)
        except ImportError:
            return None
        if found is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, tp.cast(tp.Any, _AliasLoader(target_name)),
                                              is_package=found.submodule_search_locations
                                              is not None)


def install() -> None:
    """Put the finder last in ``sys.meta_path`` (once); nothing if disabled."""
    if disabled():
        return
    if not any(type(f).__name__ in ("_DoraName", "AliasFinder") for f in sys.meta_path):
        sys.meta_path.append(AliasFinder())


_real: list[bool] = []


def real_dora_installed() -> bool:
    """True when ``import dora`` gives dora-search (not adora's alias). Asked once."""
    if not _real:
        module = sys.modules.get(ALIAS)
        if module is not None:
            _real.append(not getattr(module, "__adora_alias__", False))
        else:
            try:
                spec = importlib.util.find_spec(ALIAS)
            except (ImportError, ValueError):
                spec = None
            _real.append(spec is not None and not isinstance(spec.loader, _AliasLoader))
    return _real[0]


@contextmanager
def sharing_xp(xp: XP) -> tp.Iterator[None]:
    """While adora runs ``xp``, an installed Dora's ``get_xp()`` returns it too."""
    stack: list[tp.Any] | None = None
    if not disabled() and real_dora_installed():
        try:
            dora_xp = importlib.import_module(ALIAS + ".xp")
            stack = dora_xp._context._xps
        except Exception:  # an unusable Dora install must not stop adora's XP
            stack = None
    if stack is None:
        yield
        return
    stack.append(xp)
    try:
        yield
    finally:
        if stack and stack[-1] is xp:
            stack.pop()
