"""Configuration dataclasses, with Dora's field names and defaults.

`DoraConfig` says where experiments live and what enters their signature,
`SlurmConfig` what resources a job asks for, `SubmitRules` when a grid
resubmits an experiment. Field names match Dora 0.1.13 so that training code
and grid files written for Dora keep working.
"""

from __future__ import annotations

import dataclasses
import typing as tp
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from .errors import ConfigError, UnknownFieldError

__all__ = ["DoraConfig", "ShepConfig", "SlurmConfig", "SubmitRules", "update_from_args",
           "update_from_dict", "update_from_hydra"]


@dataclass
class SlurmConfig:
    """Resources for one job, with Dora's fields (see the README for the sbatch mapping).

    ``gpus`` is the total number of GPUs; above 8 it must be a multiple of 8 and
    spans ``gpus // 8`` nodes. ``gpus=0`` is a CPU job (no ``--gres``). ``time``
    is in minutes, ``mem_per_gpu`` in GB. ``partition=None`` uses the cluster's
    default partition (Dora defaulted to a FAIR-specific name).
    """

    gpus: int = 1
    mem_per_gpu: float | None = 40
    time: int = 1200
    cpus_per_gpu: int = 10
    cpus_per_task: int | None = None
    partition: str | None = None
    comment: str | None = None
    setup: list[str] = field(default_factory=list)
    max_num_timeout: int = 20
    constraint: str = ""
    one_task_per_node: bool = False
    array_parallelism: int = 256
    exclude: str | None = None
    qos: str | None = None
    account: str | None = None
    dependents: int = 0
    container_chdir: bool = False
    force_chdir: bool | None = None
    srun_args: list[str] = field(default_factory=list)
    python: str | None = None
    nodelist: str | list[str] | None = None

    def replace(self, **changes: tp.Any) -> SlurmConfig:
        """Return a copy with ``changes`` applied; unknown fields raise `ConfigError`."""
        new = dataclasses.replace(self)
        update_from_dict(new, changes, what="SlurmConfig")
        return new


@dataclass
class SubmitRules:
    """When `adora grid` submits again an experiment that already has a job.

    ``retry``: failed, cancelled, timed-out or out-of-memory jobs.
    ``replace``: pending or running jobs (cancelled, then resubmitted).
    ``replace_done``: completed jobs.
    ``update`` is accepted for Dora compatibility and has no effect.
    """

    retry: bool = False
    update: bool = False
    replace: bool = False
    replace_done: bool = False


@dataclass
class ShepConfig:
    """File names inside the output folder, kept from Dora for layout compatibility."""

    job_file: str = "job.pkl"
    json_job_file: str = "job.json"
    by_id: str = "by_id"
    orphans: str = "orphans"
    submitit_folder: str = "submitit"
    latest_submitit: str = "latest"
    arrays: str = "arrays"


def _absolute(value: tp.Any) -> Path | None:
    if value is None:
        return None
    from .git_save import to_absolute_path

    return Path(to_absolute_path(value))


@dataclass
class DoraConfig:
    """Where experiments live and what makes their signature.

    ``dir`` holds ``xps/<sig>/`` folders (made absolute, relative to the directory
    the command started from). ``exclude`` lists fnmatch patterns of argument
    names left out of the signature (e.g. ``num_workers``). ``git_save`` runs
    every submitted job from a snapshot of the code. ``shared`` is an optional
    team-wide folder where ``.argv.json`` files are also written.
    """

    dir: Path = Path("./outputs")
    exclude: list[str] = field(default_factory=list)
    git_save: bool = False
    post_git_save_commands: list[str] = field(default_factory=list)
    local_code: bool = False
    shared: Path | None = None
    grid_package: str | None = None

    history: str = "history.json"
    xps: str = "xps"

    shep: ShepConfig = field(default_factory=ShepConfig)
    rendezvous_file: str = "rendezvous.txt"
    use_rendezvous: bool = False
    _grids: str = "grids"
    _codes: str = "codes"

    def __setattr__(self, name: str, value: tp.Any) -> None:
        if name in ("dir", "shared"):
            value = _absolute(value)
        super().__setattr__(name, value)

    def is_excluded(self, arg_name: str) -> bool:
        """True if ``arg_name`` matches one of the ``exclude`` patterns."""
        excluded = self.excluded_names()
        known = excluded.get(arg_name)
        if known is None:
            known = excluded[arg_name] = any(fnmatch(arg_name, p) for p in self.exclude)
        return known

    def excluded_names(self) -> dict[str, bool]:
        """`is_excluded` of the names seen so far (a grid asks the same few names for
        every XP); emptied when ``exclude`` changes."""
        key = tuple(self.exclude)
        cache = self.__dict__.get("_excluded")
        if cache is None or cache[0] != key:
            cache = self.__dict__["_excluded"] = (key, {})
        return tp.cast("dict[str, bool]", cache[1])

    def xps_dir(self) -> Path:
        """``dir / xps``, built once (every XP folder is under it)."""
        cache = self.__dict__.get("_xps_dir")
        if cache is None or cache[0] is not self.dir or cache[1] != self.xps:
            cache = self.__dict__["_xps_dir"] = (self.dir, self.xps, self.dir / self.xps)
        return tp.cast(Path, cache[2])


def update_from_dict(data: tp.Any, values: tp.Mapping[str, tp.Any], *, what: str = "") -> None:
    """Set the fields of dataclass ``data`` from ``values``; unknown keys raise `ConfigError`."""
    names = {f.name for f in dataclasses.fields(data)}
    for key, value in values.items():
        if key not in names:
            known = ", ".join(sorted(n for n in names if not n.startswith("_")))
            raise UnknownFieldError(
                f"Unknown {what or type(data).__name__} field {key!r}. Known fields: {known}."
            )
        setattr(data, key, value)


def update_from_args(data: tp.Any, args: tp.Any) -> None:
    """Set each field of ``data`` that ``args`` (an argparse `Namespace`) has and is not
    None, as Dora's ``update_from_args`` (e.g. ``SlurmConfig`` from command-line flags)."""
    for name in [f.name for f in dataclasses.fields(data)]:
        value = getattr(args, name, None)
        if value is not None:
            setattr(data, name, value)


def update_from_hydra(data: tp.Any, cfg: tp.Any) -> None:
    """Set the fields of ``data`` from a Hydra/OmegaConf config section (resolved);
    a key ``data`` has no field for raises `UnknownFieldError` (an `AttributeError`)."""
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(values, dict):
        raise ConfigError(f"Expected a mapping to update {type(data).__name__}, got {values!r}.")
    update_from_dict(data, {str(k): v for k, v in values.items()})
