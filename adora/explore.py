"""The grid language: `Explorer`, `Launcher`, and `Sheep`, the handle of one XP in a grid.

A grid file defines ``explorer``, a function of a `Launcher` decorated with
`Explorer` (or a subclass, whose hooks choose the table's metric columns)::

    import treetable as tt
    from adora import Explorer

    class MyExplorer(Explorer):
        def get_grid_metrics(self):
            return [tt.group("valid", [tt.leaf("loss", ".4f")])]

    @MyExplorer
    def explorer(launcher):
        launcher.slurm_(gpus=1, partition="debug")
        for lr in [0.1, 0.01]:
            launcher(lr=lr)

Calling the launcher only *records* an XP (into a `Herd`); the engine then
decides what to submit. The same XP asked twice is recorded once (the first
call wins, with its Slurm config), as in Dora.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import sys
import typing as tp
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .conf import SlurmConfig, update_from_dict
from .errors import (
    ConfigError,
    GridError,
    GridInterruptedError,
    JobArrayError,
    SignatureCollisionError,
)
from .jobs import JobRecord
from .states import JobState

if tp.TYPE_CHECKING:
    from .backends.base import JobStatus
    from .main import DecoratedMain
    from .xp import XP

__all__ = ["Explorer", "Herd", "Launcher", "ProcessException", "Sheep", "group", "leaf"]


class ProcessException(RuntimeError):
    """Dora's name for an error while evaluating a grid's XP (kept for code that catches
    it); adora raises `adora.errors.GridError` with the grid file and line instead."""


@dataclass
class Column:
    """A metric column (leaf) or group of columns, compatible with ``treetable`` nodes."""

    key: str | None
    groups: list[Column] | None = None
    display: str | None = None
    format: str = ""
    align: str | None = None


def leaf(key: str, format: str = "", **kwargs: tp.Any) -> Column:
    """A metric column showing ``history`` key ``key`` with format spec ``format``."""
    return Column(key=key, format=format, display=kwargs.get("display"), align=kwargs.get("align"))


def group(key: str, groups: list[tp.Any], **kwargs: tp.Any) -> Column:
    """A group of columns reading the nested dict under ``key``."""
    return Column(key=key, groups=list(groups), display=kwargs.get("display"))


class Sheep:
    """One XP of a grid and its current job (Dora's name for it).

    ``state()`` is None when the XP has no job; ``is_done()`` is True when it
    has no job or its job ended. ``status`` carries what the backend said last
    (including whether that is stale).
    """

    def __init__(self, xp: XP, job: JobRecord | None = None) -> None:
        self.xp = xp
        self.job = job
        self.status: JobStatus | None = None

    @property
    def job_state(self) -> JobState | None:
        if self.job is None:
            return None
        if self.job.final is not None:
            return self.job.final
        if self.status is not None:
            return self.status.state
        return JobState.UNKNOWN  # not asked yet, or an unfinished submission

    @property
    def stale(self) -> bool:
        return bool(self.status is not None and self.status.stale)

    def state(self, mode: str = "standard") -> str | None:
        state = self.job_state
        return None if state is None else state.value

    def is_done(self, mode: str = "standard") -> bool:
        state = self.job_state
        return state is None or state.is_final

    @property
    def current_job_id(self) -> str | None:
        """The job running (or last run) for this XP: with dependent jobs, the link of
        the chain the state shown is of."""
        if self.job is None:
            return None
        # The status's, or for a chain that ended, the link kept with its final state.
        link = self.status.job_id if self.status is not None else \
            self.job.extra.get("final_job_id")
        if link and link in self.job.dependents:
            return str(link)
        return self.job.job_id

    @property
    def log(self) -> Path | None:
        """The main log of the current job, if it has one."""
        if self.job is None or not self.job.log:
            return None
        return Path(self.job.log_of(self.current_job_id) or self.job.log)

    def __repr__(self) -> str:
        out = f"Sheep({self.xp.sig}, state={self.state()}, "
        if self.job is not None:
            out += f"sid={self.current_job_id}, "
        return out + f"argv={self.xp.argv})"


def _call_site(filename: str | None) -> tuple[str | None, int | None]:
    # The innermost frame of the grid file: where the user called the launcher.
    if filename is None:
        return None, None
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == filename:
            return filename, frame.f_lineno
        frame = frame.f_back  # type: ignore[assignment]
    return None, None


@dataclass
class Herd:
    """What evaluating a grid produced: its XPs in order, their Slurm configs and arrays."""

    sheeps: OrderedDict[str, Sheep] = field(default_factory=OrderedDict)
    slurm_configs: dict[str, SlurmConfig] = field(default_factory=dict)
    #: Groups of sigs; each group is a job array (Dora: one group per launcher call
    #: outside ``job_array()``). adora merges compatible groups when submitting.
    job_arrays: list[list[str]] = field(default_factory=list)
    explicit_arrays: set[int] = field(default_factory=set)
    where: dict[str, tuple[str | None, int | None]] = field(default_factory=dict)
    grid_file: str | None = None
    _array_launcher: Launcher | None = None

    def add(self, xp: XP, slurm: SlurmConfig) -> Sheep:
        where = _call_site(self.grid_file)
        existing = self.sheeps.get(xp.sig)
        if existing is not None:
            if xp.delta is not None and existing.xp.delta is not None \
                    and sorted(existing.xp.delta) != sorted(xp.delta):
                first = self.where.get(xp.sig, (None, None))
                raise SignatureCollisionError(
                    xp.sig, xp.delta, existing.xp.delta,
                    where=f"launched at line {where[1]} and at line {first[1]} of the grid")
            return existing
        sheep = Sheep(xp)
        self.sheeps[xp.sig] = sheep
        self.slurm_configs[xp.sig] = slurm
        self.where[xp.sig] = where
        if self._array_launcher is None:
            self.job_arrays.append([])
        self.job_arrays[-1].append(xp.sig)
        return sheep


def _copy_config(slurm: SlurmConfig) -> SlurmConfig:
    # A copy that shares nothing mutable; far cheaper than deepcopy, which ran for
    # every launcher call of large grids.
    new = copy.copy(slurm)
    for f in dataclasses.fields(new):
        value = getattr(new, f.name)
        if isinstance(value, (list, dict)):
            setattr(new, f.name, copy.deepcopy(value))
    return new


class Launcher:
    """Passed to the grid's explore function; each call asks for one XP.

    ``bind``/``slurm`` return modified copies, ``bind_``/``slurm_`` modify in
    place. Arguments become training argv as in Dora: a dict becomes
    ``--key=value`` (``True`` → ``--key``; Hydra: ``key=value``), a str is
    kept verbatim, lists are flattened.
    """

    def __init__(self, main: DecoratedMain, slurm: SlurmConfig, herd: Herd,
                 argv: tp.Sequence[str] = (), *, _shared: bool = False) -> None:
        self._main = main
        self._herd = herd
        # Copy on write: copies of a launcher (one per XP in a big grid) share its
        # Slurm config until one of them changes it. A config that may be shared
        # (with another launcher, or with the herd once an XP used it) is never
        # changed in place.
        self._slurm = slurm if _shared else _copy_config(slurm)
        self._owns_slurm = not _shared
        self._argv = list(argv)

    def _copy(self) -> Launcher:
        self._owns_slurm = False
        return Launcher(self._main, self._slurm, self._herd, self._argv, _shared=True)

    def bind(self, *args: tp.Any, **kwargs: tp.Any) -> Launcher:
        """A copy of this launcher with more training arguments."""
        return self._copy().bind_(*args, **kwargs)

    def bind_(self, *args: tp.Any, **kwargs: tp.Any) -> Launcher:
        """Add training arguments to this launcher, in place."""
        for arg in args:
            self._argv += self._main.value_to_argv(arg)
        self._argv += self._main.value_to_argv(kwargs)
        return self

    def slurm(self, **kwargs: tp.Any) -> Launcher:
        """A copy of this launcher with Slurm settings changed."""
        return self._copy().slurm_(**kwargs)

    def slurm_(self, **kwargs: tp.Any) -> Launcher:
        """Change Slurm settings in place; an unknown field is an error."""
        slurm = self._slurm if self._owns_slurm else _copy_config(self._slurm)
        update_from_dict(slurm, kwargs, what="SlurmConfig")
        self._slurm, self._owns_slurm = slurm, True
        return self

    def __call__(self, *args: tp.Any, **kwargs: tp.Any) -> Sheep:
        """Ask for the XP with this launcher's arguments plus ``args``/``kwargs``."""
        launcher = self.bind(*args, **kwargs)
        array = self._herd._array_launcher
        if array is not None and array._slurm != launcher._slurm:
            raise JobArrayError("All XPs of a job array must share one Slurm config: do not "
                                "change it inside `with launcher.job_array():`.")
        xp = self._main.get_xp(launcher._argv)
        return self._herd.add(xp, launcher._slurm)  # shared: launcher no longer owns it

    @contextmanager
    def job_array(self) -> tp.Iterator[None]:
        """Launch every XP of the block as one Slurm job array (one Slurm config)."""
        if self._herd._array_launcher is not None:
            raise JobArrayError("Job arrays cannot be nested.")
        self._herd._array_launcher = self._copy()
        self._herd.job_arrays.append([])
        self._herd.explicit_arrays.add(len(self._herd.job_arrays) - 1)
        try:
            yield
        finally:
            self._herd._array_launcher = None


Explore = tp.Callable[[Launcher], None]


class Explorer:
    """Wraps a grid's explore function; subclass it to choose the table's columns."""

    def __init__(self, explore: Explore) -> None:
        self.explore = explore

    def __call__(self, launcher: Launcher) -> None:
        self.explore(launcher)

    def get_grid_metrics(self) -> list[tp.Any]:
        """Metric columns: `leaf`/`group` (or ``treetable``'s ``tt.leaf``/``tt.group``)."""
        return []

    def get_grid_meta(self) -> list[tp.Any]:
        """The columns describing each XP (index, name, state, sig, job id, elapsed time)."""
        return [leaf("index", align=">"), leaf("name"), leaf("state"),
                leaf("sig", align=">"), leaf("sid", align=">"),
                leaf("elapsed", align=">")]

    def get_colors(self) -> list[str]:
        return ["0", "38;5;245"]

    def process_sheep(self, sheep: Sheep, history: list[dict[str, tp.Any]]) -> dict[str, tp.Any]:
        """Metrics of one XP for the table; preferred over `process_history` when overridden."""
        raise NotImplementedError

    def process_history(self, history: list[dict[str, tp.Any]]) -> dict[str, tp.Any]:
        """Default: the number of epochs, and the latest value of every metric."""
        out: dict[str, tp.Any] = {"epoch": len(history)}
        for metrics in history:
            out.update(metrics)
        return out


def evaluate(main: DecoratedMain, explorer: Explorer, slurm: SlurmConfig,
             grid_file: str | None = None) -> Herd:
    """Run the explore function and collect its XPs; errors point into the grid file."""
    herd = Herd(grid_file=grid_file)
    launcher = Launcher(main, slurm, herd)
    # The cyclic garbage collector would scan the growing herd again and again (a
    # quarter of the evaluation of 100,000 XPs); grid code makes little cyclic garbage.
    collecting = gc.isenabled()
    gc.disable()
    try:
        explorer(launcher)
    except GridError:
        raise
    except (Exception, SystemExit, KeyboardInterrupt) as exc:
        # sys.exit() and KeyboardInterrupt too: the grid runs in a worker thread, where
        # they would otherwise surface as raw tracebacks.
        raise grid_error_from(exc, grid_file) from exc
    finally:
        if collecting:
            gc.enable()
    return herd


def grid_error_from(exc: BaseException, grid_file: str | None, *,
                    doing: str = "evaluating the grid") -> GridError:
    """A `GridError` for ``exc`` raised while evaluating a grid, located in ``grid_file``.

    `KeyboardInterrupt` gives a `GridInterruptedError` (exit status 130).
    """
    import traceback

    lineno = None
    if grid_file is not None:
        for frame, line in traceback.walk_tb(exc.__traceback__):
            if frame.f_code.co_filename == grid_file:
                lineno = line
    if isinstance(exc, KeyboardInterrupt):
        return GridInterruptedError(f"interrupted while {doing} (KeyboardInterrupt); nothing "
                                    "was submitted.", filename=grid_file, lineno=lineno)
    if isinstance(exc, SystemExit):
        return GridError(f"the grid called sys.exit({exc.code!r}) while {doing}: a grid must "
                         "not exit. Raise an exception to stop it with an error, or return "
                         "from the explore function.", filename=grid_file, lineno=lineno)
    what = str(exc) if isinstance(exc, (ConfigError, SignatureCollisionError)) \
        or type(exc).__module__.startswith("adora") else f"{type(exc).__name__}: {exc}"
    return GridError(what, filename=grid_file, lineno=lineno)
