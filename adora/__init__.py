"""adora: Dora-compatible grid searches, on local processes, Slurm, or Slurm over SSH.

Layers, each calling only the ones below it:

- the user API Dora users know: `argparse_main` / `hydra_main`, `get_xp`,
  `XP`, the metrics `Link`, `Explorer` and `Launcher` for grid files;
- the engine: evaluate a grid, plan (pure), act on a backend, poll, tail;
- the backends: local processes, Slurm through submitit, Slurm over SSH;
- the command line (`adora ...`), a thin layer over the engine.

Importing adora imports neither torch nor Hydra: ``adora.hydra_main`` loads
Hydra on first use.
"""

from __future__ import annotations

import os
import sys
import typing as tp

from .backends.slurm_job import register_preemption_callback
from .conf import DoraConfig, SlurmConfig, SubmitRules
from .errors import (
    AdoraError,
    ArgumentsError,
    BackendError,
    CommandError,
    CommandTimeoutError,
    ConfigError,
    GridError,
    HistoryError,
    LockedError,
    PackageNotFoundError,
    SignatureCollisionError,
    XPNotFoundError,
)
from .explore import Explorer, Launcher, Sheep
from .git_save import to_absolute_path
from .link import Link
from .main import ArgparseMain, DecoratedMain, argparse_main
from .xp import XP, get_xp, is_xp

__version__ = "0.1.0"



class _DoraName:
    # `import dora` finds adora when dora-search is not installed: a finder last in
    # sys.meta_path, loading adora.dora_alias only when something asks for `dora`.
    def find_spec(self, name: str, path: tp.Any = None, target: tp.Any = None) -> tp.Any:
        if name != "dora" and not name.startswith("dora."):
            return None
        from .dora_alias import AliasFinder

        return AliasFinder().find_spec(name, path, target)


if not any(type(f).__name__ in ("_DoraName", "AliasFinder") for f in sys.meta_path) \
        and os.environ.get("ADORA_NO_DORA_ALIAS", "") in ("", "0"):
    sys.meta_path.append(_DoraName())

__all__ = [
    "AdoraError",
    "ArgparseMain",
    "ArgumentsError",
    "BackendError",
    "CommandError",
    "CommandTimeoutError",
    "ConfigError",
    "DecoratedMain",
    "DoraConfig",
    "Explorer",
    "GridError",
    "GridResult",
    "GridWatcher",
    "HistoryError",
    "HydraMain",
    "Launcher",
    "Link",
    "LockedError",
    "PackageNotFoundError",
    "RunGridArgs",
    "Sheep",
    "SignatureCollisionError",
    "SlurmConfig",
    "Snapshot",
    "SubmitRules",
    "XP",
    "XPNotFoundError",
    "XPSnapshot",
    "__version__",
    "argparse_main",
    "get_xp",
    "hydra_main",
    "is_xp",
    "load_explorer",
    "load_main",
    "register_preemption_callback",
    "run_grid",
    "run_grid_sync",
    "to_absolute_path",
    "watch_grid",
    "watch_results",
]

_LAZY = {
    "hydra_main": "hydra",
    "HydraMain": "hydra",
    "GridResult": "api",
    "run_grid": "api",
    "run_grid_sync": "api",
    "RunGridArgs": "api",
    "load_main": "api",
    "load_explorer": "api",
    "watch_grid": "api",
    "watch_results": "api",
    "GridWatcher": "api",
    "Snapshot": "api",
    "XPSnapshot": "api",
}


#: Modules reachable as attributes of the package, as ``import dora; dora.distrib`` is.
_SUBMODULES = frozenset({"conf", "distrib", "executor", "explore", "git_save", "grid", "hydra",
                         "link", "log", "main", "names", "run", "share", "shep", "utils", "xp"})


def __getattr__(name: str) -> tp.Any:
    # Hydra and the async engine are heavy: load them on first use.
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'adora' has no attribute {name!r}")


if tp.TYPE_CHECKING:
    from .api import (
        GridResult,
        GridWatcher,
        RunGridArgs,
        Snapshot,
        XPSnapshot,
        load_explorer,
        load_main,
        run_grid,
        run_grid_sync,
        watch_grid,
        watch_results,
    )
    from .hydra import HydraMain, hydra_main
