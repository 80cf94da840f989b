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

Composition is the costly part (tens of ms per ``hydra.compose``), and Dora pays
it twice per XP. adora composes what changes only (`_FastComposer`):

* each override is parsed once with Hydra's own parser and sorted the way
  Hydra's defaults list sorts it: a *group* override (its key is a config group
  of the repository and its value not a dict) changes which files are merged; any
  other override is a *value* override, which Hydra applies to the merged config
  afterwards, in order, with ``ConfigLoaderImpl._apply_overrides_to_config``;
* the config of each distinct tuple of group overrides is composed once, by
  Hydra, and kept;
* an XP's config is a deep copy of that config, to which adora applies the value
  overrides with the same Hydra function Hydra itself calls: struct mode, ``+``,
  ``++``, ``~``, type checks and interpolations behave as in a full compose,
  because it is the same code on the same merged config.

It declines (full compose instead) sweeps, overrides of the ``hydra`` node or
its groups (they may move the search path or reach the config through
interpolations), values interpolating ``hydra``, and any override list whose fast
evaluation raises: errors always come from a full compose, hence are Hydra's.
"""

from __future__ import annotations

import contextlib
import copy
import json
import pickle
import sys
import threading
import typing as tp
import warnings
from importlib.util import find_spec
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf import base as _omegaconf_base
from omegaconf.errors import MissingMandatoryValue
from omegaconf.grammar_parser import parse as _omegaconf_parse

from .conf import DoraConfig, SlurmConfig, update_from_dict
from .errors import ArgumentsError, ConfigError
from .main import DecoratedMain, MainFun
from .xp import XP, get_xp, is_xp

__all__ = ["HydraMain", "hydra_main"]


_NOT_PLAIN = object()


def _plain_value(node: tp.Any) -> tp.Any:
    # The raw value of a value node whose value is itself: not an interpolation,
    # not missing, not None (those take OmegaConf's resolving path); else _NOT_PLAIN.
    value = node.__dict__.get("_val", _NOT_PLAIN)
    if value is None or (isinstance(value, str) and ("${" in value or value == "???")):
        return _NOT_PLAIN
    return value


def _plain_content(node: tp.Any) -> tp.Any:
    # The children of a container that is neither None, missing nor an
    # interpolation (dict for DictConfig, list for ListConfig); else None.
    content = node.__dict__.get("_content")
    return content if isinstance(content, (dict, list)) else None


def _plain_list(content: list[tp.Any]) -> list[tp.Any] | None:
    values = [_plain_value(item) for item in content]
    return None if any(v is _NOT_PLAIN for v in values) else values


def _compare_config(ref: DictConfig, other: DictConfig,
                    path: tuple[str, ...] = ()) -> tp.Iterator[tuple[str, tp.Any]]:
    # Differences between two configs as (dotted path, value in `other`), in
    # the order Dora yields them: sorted keys of `ref`, then sorted new keys.
    # Plain nodes (no interpolation, None or ???) are read raw: the same values
    # OmegaConf's resolving accessors give, without their cost. Every other node
    # takes Dora's own steps (`ref[key]`, `key in other`, `other[key]`, `!=`).
    ref_content = _plain_content(ref)
    other_content = _plain_content(other)
    for key in sorted(ref.keys()):  # type: ignore[type-var]
        if ref_content is not None and other_content is not None:
            ref_node = ref_content.get(key)
            other_node = other_content.get(key)
            if ref_node is not None and other_node is not None:
                ref_kind = type(ref_node)
                if ref_kind is DictConfig and type(other_node) is DictConfig \
                        and _plain_content(ref_node) is not None \
                        and _plain_content(other_node) is not None:
                    yield from _compare_config(ref_node, other_node, path + (str(key),))
                    continue
                if ref_kind is ListConfig and type(other_node) is ListConfig:
                    ref_items = _plain_content(ref_node)
                    other_items = _plain_content(other_node)
                    if ref_items is not None and other_items is not None:
                        ref_list = _plain_list(ref_items)
                        other_list = _plain_list(other_items)
                        if ref_list is not None and other_list is not None:
                            if ref_list != other_list:
                                yield ".".join(path + (str(key),)), other[key]
                            continue
                elif not isinstance(ref_node, (DictConfig, ListConfig)) \
                        and not isinstance(other_node, (DictConfig, ListConfig)):
                    ref_value = _plain_value(ref_node)
                    other_value = _plain_value(other_node)
                    if ref_value is not _NOT_PLAIN and other_value is not _NOT_PLAIN:
                        if other_value != ref_value:
                            yield ".".join(path + (str(key),)), other_value
                        continue
        ref_value = ref[key]
        # `key not in other` then `other[key]`, resolving the node once.
        try:
            found = other_content.get(key) if other_content is not None else None
            if found is None and key not in other:
                raise MissingMandatoryValue("absent")
            other_value = other[key]
        except MissingMandatoryValue:
            missing = ".".join(path + (str(key),))
            raise ArgumentsError(f"The XP config is missing the key {missing}.") from None
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


_PARSED: dict[tuple[str, str, str], tp.Any] = {}


def _memo_parse(value: str, parser_rule: str = "configValue",
                lexer_mode: str = "DEFAULT_MODE") -> tp.Any:
    # OmegaConf parses an interpolation (ANTLR, ~0.3 ms) each time it resolves
    # it; the delta of an XP resolves every interpolation of two configs. A parse
    # tree is a pure function of its text and is only read by the resolver (its
    # tokens keep their own input stream), so the same tree serves again.
    key = (value, parser_rule, lexer_mode)
    tree = _PARSED.get(key)
    if tree is None:
        tree = _omegaconf_parse(value, parser_rule, lexer_mode)  # errors are not kept
        if len(_PARSED) >= 4096:
            _PARSED.clear()
        _PARSED[key] = tree
    return tree


@contextlib.contextmanager
def _parse_once() -> tp.Iterator[None]:
    """Within the block, OmegaConf's resolution parses each interpolation text once."""
    if _omegaconf_base.parse is _memo_parse:  # re-entered (collision checks)
        yield
        return
    _omegaconf_base.parse = _memo_parse
    try:
        yield
    finally:
        _omegaconf_base.parse = _omegaconf_parse


@contextlib.contextmanager
def _quiet_hydra() -> tp.Iterator[None]:
    # Hydra repeats its version_base migration warnings on every internal
    # compose; the user sees them once, when their app runs.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*version_base")
        yield


class _FastComposer:
    """Hydra composition with each distinct set of config-group choices composed once.

    ``compose(overrides)`` returns a new config equal to ``hydra.compose`` of the
    same overrides (`tests/test_hydra_fast.py` checks it on the whole parity
    corpus), or None when the fast path declines the overrides: the caller then
    composes in full. See the module docstring for what it declines and why.
    """

    #: Structural configs kept (one per distinct tuple of group overrides).
    max_cached = 512

    def __init__(self, full: tp.Callable[[list[str]], DictConfig],
                 group_exists: tp.Callable[[str], bool]) -> None:
        self._full = full
        self._group_exists = group_exists
        self._parser = OverridesParser.create()
        self._parsed: dict[str, tuple[str, Override] | None] = {}
        self._structural: dict[tuple[str, ...], DictConfig] = {}
        #: The pickled bytes of each structural config: unpickling is the cheapest copy.
        self._frozen: dict[tuple[str, ...], bytes | None] = {}
        self._is_group: dict[str, bool] = {}
        #: Counters, for tests and benchmarks: full composes, fast ones, declined lists.
        self.stats = {"full": 0, "fast": 0, "declined": 0}

    def _classify(self, arg: str) -> tuple[str, Override] | None:
        # ("group" | "value", parsed override), or None to decline the override.
        if arg in self._parsed:
            return self._parsed[arg]
        kind: tuple[str, Override] | None = None
        try:
            override = self._parser.parse_overrides([arg])[0]
        except Exception:  # the full compose reports Hydra's own error
            override = None
        if (override is not None and not override.is_sweep_override()
                and not override.is_hydra_override()
                and not ("${" in arg and "hydra" in arg)):
            key = override.key_or_group
            is_group = self._is_group.get(key)
            if is_group is None:
                is_group = self._is_group[key] = bool(self._group_exists(key))
            # As Hydra's defaults list: a dict value is a value override even on a group key.
            if is_group and not isinstance(override.value(), dict):
                kind = ("group", override)
            else:
                kind = ("value", override)
        self._parsed[arg] = kind
        return kind

    def split(self, overrides: tp.Sequence[str]
              ) -> tuple[tuple[str, ...], list[Override]] | None:
        """(group overrides, parsed value overrides), or None to decline."""
        groups: list[str] = []
        values: list[Override] = []
        for arg in overrides:
            kind = self._classify(arg)
            if kind is None:
                return None
            if kind[0] == "group":
                groups.append(arg)
            else:
                values.append(kind[1])
        return tuple(groups), values

    def structural(self, groups: tuple[str, ...]) -> DictConfig:
        """The config Hydra composes for these group overrides (shared: never modify it)."""
        cfg = self._structural.get(groups)
        if cfg is None:
            cfg = self._full(list(groups))
            self.stats["full"] += 1
            if len(self._structural) >= self.max_cached:
                oldest = next(iter(self._structural))
                self._structural.pop(oldest)
                self._frozen.pop(oldest, None)
            self._structural[groups] = cfg
        return cfg

    def copy(self, groups: tuple[str, ...]) -> DictConfig:
        """A new config equal to ``structural(groups)``, flags and node types included."""
        base = self.structural(groups)
        if groups not in self._frozen:
            try:
                self._frozen[groups] = pickle.dumps(base, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:  # objects that do not pickle (allow_objects): deep copies
                self._frozen[groups] = None
        frozen = self._frozen[groups]
        if frozen is None:
            return copy.deepcopy(base)
        return tp.cast(DictConfig, pickle.loads(frozen))

    def compose(self, overrides: tp.Sequence[str], *, shared: bool = False
                ) -> DictConfig | None:
        """The config of ``overrides``, or None if the fast path declines them.

        With ``shared``, a config without value overrides may be the cached one
        itself (for read-only uses, such as Dora's reference config).
        """
        split = self.split(overrides)
        if split is None:
            self.stats["declined"] += 1
            return None
        groups, values = split
        try:
            if shared and not values:
                return self.structural(groups)
            cfg = self.copy(groups)
            # What Hydra does after merging the defaults list, on a config in the
            # same state (struct mode on the root; compose only adds and removes
            # the `hydra` node, which value overrides here never reach).
            ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        except Exception:
            self.stats["declined"] += 1
            return None  # the full compose gives Hydra's own error (or its answer)
        self.stats["fast"] += 1
        return cfg


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

        self._lock = threading.RLock()
        self._base_cfg = self._compose([])
        self._config_groups = self._list_config_groups()
        self._fast = _FastComposer(self._compose, self._group_exists())
        self._fast._structural[()] = self._base_cfg
        #: Dora's reference configs (composed from its group overrides), read-only.
        self._references: dict[tuple[str, ...], DictConfig] = {(): self._base_cfg}
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

    def _group_exists(self) -> tp.Callable[[str], bool]:
        # The repository Hydra's defaults list asks (search path of the primary
        # config included): a key is a group exactly when Hydra thinks so.
        with _quiet_hydra(), self._init_dir():
            gh = GlobalHydra.instance().hydra
            assert gh is not None
            loader = gh.config_loader
            _, repo = loader._parse_overrides_and_create_caching_repo(  # type: ignore[attr-defined]
                self.config_name, [])
        return tp.cast(tp.Callable[[str], bool], repo.group_exists)

    def compose(self, overrides: tp.Sequence[str]) -> DictConfig:
        """The config ``hydra.compose`` gives for ``overrides``, composing only what changes."""
        with self._lock:
            cfg = self._fast.compose(list(overrides))
            if cfg is None:
                cfg = self._compose(list(overrides))
                self._fast.stats["full"] += 1
            return cfg

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
        key = tuple(to_keep)
        base = self._references.get(key)
        if base is None:
            base = self._fast.compose(to_keep, shared=True)
            if base is None:
                base = self._compose(to_keep)
                self._fast.stats["full"] += 1
            if len(self._references) >= _FastComposer.max_cached:
                self._references.pop(next(iter(self._references)))
            self._references[key] = base
        return base, delta

    def get_xp(self, argv: tp.Sequence[str]) -> XP:
        argv = simplify_argv(argv)
        with self._lock, _parse_once():
            cfg = self.compose(argv)
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
