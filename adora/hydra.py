"""`hydra_main`: training code configured with Hydra.

Importing this module imports Hydra; `import adora` does not (``adora.hydra_main``
is resolved lazily). The delta of an XP is computed as Dora 0.1.13 does, so
signatures are the same:

1. the overrides are simplified (last occurrence of each key wins);
2. overrides of config *groups* (``model=big``) enter the delta as they are,
   and the reference config is composed with those group choices only;
3. every leaf that differs between the reference and the XP's config enters
   the delta under its dotted path; keys added with ``+`` enter as a whole.

The ``dora:`` and ``slurm:`` sections of the config set `DoraConfig` and
`SlurmConfig` (unknown keys are errors) and never enter the signature.
"""

from __future__ import annotations

import contextlib
import json
import sys
import typing as tp
import warnings
from importlib.util import find_spec
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from .conf import DoraConfig, SlurmConfig, update_from_dict
from .errors import ArgumentsError, ConfigError
from .main import DecoratedMain, MainFun
from .xp import XP, get_xp, is_xp

__all__ = ["HydraMain", "hydra_main"]


def _compare_config(ref: DictConfig, other: DictConfig,
                    path: tuple[str, ...] = ()) -> tp.Iterator[tuple[str, tp.Any]]:
    # Differences between two configs as (dotted path, value in `other`), in
    # the order Dora yields them: sorted keys of `ref`, then sorted new keys.
    for key in sorted(ref.keys()):  # type: ignore[type-var]
        ref_value = ref[key]
        if key not in other:
            missing = ".".join(path + (str(key),))
            raise ArgumentsError(f"The XP config is missing the key {missing}.")
        other_value = other[key]
        if isinstance(ref_value, DictConfig):
            if not isinstance(other_value, DictConfig):
                raise ArgumentsError(
                    f"Structure of config should be identical between XPs: "
                    f"{'.'.join(path + (str(key),))} is no longer a group.")
            yield from _compare_config(ref_value, other_value, path + (str(key),))
        elif other_value != ref_value:
            yield ".".join(path + (str(key),)), other_value
    for key in sorted(set(other.keys()) - set(ref.keys())):  # type: ignore[type-var]
        yield ".".join(path + (str(key),)), other[key]


def simplify_argv(argv: tp.Sequence[str]) -> list[str]:
    """Keep the last override of each key, in order; every override needs a ``=``."""
    seen: set[str] = set()
    kept: list[str] = []
    for arg in reversed(list(argv)):
        if "=" not in arg:
            raise ArgumentsError(
                f"Invalid Hydra override {arg!r}: overrides look like key=value.",
                argv=argv, reason="missing =")
        key = arg.split("=", 1)[0].strip()
        if key not in seen:
            seen.add(key)
            kept.append(arg)
    return kept[::-1]


def _dump_key(key: tp.Any) -> str:
    if key is None:
        return "null"
    if isinstance(key, (bool, int, float)):
        return str(key)
    if isinstance(key, str):
        if ":" in key:
            raise ValueError(f"Dict keys of Hydra overrides cannot contain ':' ({key!r}).")
        return key
    raise TypeError(f"Unsupported dict key type {type(key)} for key {key!r}")


def hydra_value_as_override(value: tp.Any) -> str:
    """Write a Python value in Hydra's override grammar (JSON-like, as Dora)."""
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float, str)):
        return json.dumps(value)
    if isinstance(value, dict):
        inner = ", ".join(f"{_dump_key(k)}: {hydra_value_as_override(v)}" for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(hydra_value_as_override(v) for v in value) + "]"
    raise TypeError(f"Unsupported value type {type(value)} for value {value!r}")


@contextlib.contextmanager
def _quiet_hydra() -> tp.Iterator[None]:
    # Hydra repeats its version_base migration warnings on every internal
    # compose; the user sees them once, when their app runs.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*version_base")
        yield


class HydraMain(DecoratedMain):
    """`DecoratedMain` for training code configured with Hydra."""

    _slow = True

    def __init__(self, main: MainFun, config_name: str, config_path: str | None,
                 **kwargs: tp.Any) -> None:
        self.config_name = config_name
        self.config_path = config_path
        self.hydra_kwargs = kwargs

        module = main.__module__
        if module == "__main__":
            spec = sys.modules[module].__spec__
            if spec is None or spec.origin is None:
                module_path = sys.argv[0]
                self._job_name = Path(module_path).stem
            else:
                module_path = spec.origin
                self._job_name = spec.name.rsplit(".", 1)[-1]
        else:
            spec = find_spec(module)
            if spec is None or spec.origin is None:
                raise ConfigError(f"Cannot locate the module {module} of the Hydra main.")
            module_path = spec.origin
            self._job_name = module.rsplit(".", 1)[-1]
        self.full_config_path = Path(module_path).parent.resolve()
        if config_path is not None:
            self.full_config_path = self.full_config_path / config_path

        self._base_cfg = self._compose([])
        self._config_groups = self._list_config_groups()
        super().__init__(main, self._get_dora())
        # Hydra resolves a relative config_path against the file of the task
        # function only when its module looks like __main__.
        main.__module__ = "__main__"

    # -- configuration -------------------------------------------------------
    def _get_dora(self) -> DoraConfig:
        dora = DoraConfig()
        if "dora" in self._base_cfg:
            section = OmegaConf.to_container(self._base_cfg.dora, resolve=True)
            update_from_dict(dora, tp.cast(dict, section), what="dora: section of the config")
        dora.exclude = list(dora.exclude) + ["dora.*", "slurm.*"]
        dora.dir = Path(dora.dir)
        return dora

    def get_slurm_config(self) -> SlurmConfig:
        slurm = SlurmConfig()
        if "slurm" in self._base_cfg:
            section = OmegaConf.to_container(self._base_cfg.slurm, resolve=True)
            update_from_dict(slurm, tp.cast(dict, section), what="slurm: section of the config")
        return slurm

    # -- composition ---------------------------------------------------------
    def _init_dir(self) -> tp.Any:
        return initialize_config_dir(str(self.full_config_path), job_name=self._job_name,
                                     **self.hydra_kwargs)

    def _compose(self, overrides: list[str]) -> DictConfig:
        try:
            with _quiet_hydra(), self._init_dir():
                return compose(self.config_name, overrides)
        except (hydra.errors.HydraException, ValueError) as exc:
            if not overrides:
                raise ConfigError(f"Cannot compose the Hydra config {self.config_name!r} "
                                  f"from {self.full_config_path}: {exc}") from exc
            raise ArgumentsError(f"Invalid Hydra overrides {overrides}: {exc}",
                                 argv=overrides, reason=str(exc)) from exc

    def _list_config_groups(self) -> list[str]:
        with _quiet_hydra(), self._init_dir():
            gh = GlobalHydra.instance().hydra
            assert gh is not None
            return list(gh.list_all_config_groups())

    def _get_base_config(self, overrides: list[str]) -> tuple[DictConfig, list[tuple[str, str]]]:
        to_keep: list[str] = []
        delta: list[tuple[str, str]] = []
        for arg in overrides:
            for group in self._config_groups:
                if arg.startswith(f"{group}="):
                    to_keep.append(arg)
                    value = arg.split("=", 1)[1]
                    delta = [(g, v) for g, v in delta if g != group]
                    delta.append((group, value))
        if not to_keep:
            return self._base_cfg, []
        return self._compose(to_keep), delta

    def get_xp(self, argv: tp.Sequence[str]) -> XP:
        argv = simplify_argv(argv)
        cfg = self._compose(argv)
        base, delta = self._get_base_config(argv)
        full_delta: list[tuple[str, tp.Any]] = list(delta)
        full_delta += list(_compare_config(base, cfg))
        return XP(dora=self.dora, cfg=cfg, argv=argv, delta=full_delta)

    def dict_item_to_argv(self, key: str, value: tp.Any) -> str:
        # Config-group choices are names; other values use Hydra's override grammar.
        if key not in self._config_groups:
            value = hydra_value_as_override(value)
        return f"{key}={value}"

    # -- running -------------------------------------------------------------
    def _is_active(self, argv: list[str]) -> bool:
        return "-m" not in argv and "--multirun" not in argv

    def _main(self) -> tp.Any:
        added: list[str] = []
        if is_xp():
            added.append(f"hydra.run.dir={get_xp().folder}")
            from .distrib import rank

            if rank() > 0:
                added.append("hydra.output_subdir=null")
        sys.argv.extend(added)
        try:
            return hydra.main(config_name=self.config_name, config_path=self.config_path,
                              **self.hydra_kwargs)(self.main)()
        finally:
            for arg in added:
                sys.argv.remove(arg)


def hydra_main(config_name: str, config_path: str | None = None,
               **kwargs: tp.Any) -> tp.Callable[[MainFun], HydraMain]:
    """Decorate a Hydra training ``main(cfg)``; keywords (e.g. ``version_base``) go to Hydra."""
    def _decorator(main: MainFun) -> HydraMain:
        return HydraMain(main, config_name=config_name, config_path=config_path, **kwargs)

    return _decorator
