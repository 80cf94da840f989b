"""adora's fast Hydra composition (issue 13) gives what a full ``hydra.compose`` gives.

`adora.hydra._FastComposer` composes each distinct tuple of config-group
overrides once and applies value overrides to a copy with Hydra's own function.
These tests hold it to the full composition on every Hydra case of the parity
corpus (``tests/dora_parity``: the configs node by node, flags included, and the
XPs' signatures, deltas and argvs), and hold every override list it declines to
Dora 0.1.13's recorded answer.
"""

from __future__ import annotations

import json
import typing as tp
from pathlib import Path

import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

from adora.hydra import HydraMain, _FastComposer, simplify_argv

PARITY = Path(__file__).resolve().parent / "dora_parity"
CONF = PARITY / "hydra_project" / "hproj" / "conf"


def _train(cfg: tp.Any) -> None:
    pass


def _hydra_main() -> HydraMain:
    return HydraMain(_train, config_name="config", config_path=str(CONF), version_base="1.3")


@pytest.fixture(scope="module")
def golden() -> list[dict[str, tp.Any]]:
    return tp.cast(list, json.loads((PARITY / "golden_sigs.json").read_text("utf8"))["hydra"])


@pytest.fixture(scope="module")
def fast() -> HydraMain:
    return _hydra_main()


@pytest.fixture(scope="module")
def full() -> HydraMain:
    """The same main with the fast path switched off: every config is a full compose."""
    main = _hydra_main()
    main._fast.compose = lambda overrides, shared=False: None  # type: ignore[method-assign,misc]
    return main


@pytest.fixture(scope="module")
def full_xps(golden: list[dict[str, tp.Any]], full: HydraMain) -> list[tp.Any]:
    """Each case's XP by full composition (or its error), composed once for the module:
    the full compose is what costs here (its ``cfg`` is ``full.compose(argv)``)."""
    return [_attempt(full.get_xp, case["argv"]) for case in golden]


def _shape(node: tp.Any, key: tp.Any = None) -> tp.Any:
    """Everything OmegaConf keeps about a node: type, flags, metadata, raw value, children."""
    meta = node._metadata
    head = (key, type(node).__name__, dict(meta.flags), meta.ref_type, meta.object_type,
            meta.optional, meta.key)
    if isinstance(node, DictConfig):
        if node._is_none() or node._is_missing() or node._is_interpolation():
            return head, node._value()
        return head, [_shape(node._get_node(k), k) for k in node.keys()]
    if isinstance(node, ListConfig):
        if node._is_none() or node._is_missing() or node._is_interpolation():
            return head, node._value()
        return head, [_shape(node._get_node(i), i) for i in range(len(node))]
    return head, node._value()


def _resolved(cfg: DictConfig) -> tp.Any:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:
        return ("error", type(exc).__name__)


def _attempt(fun: tp.Callable[..., tp.Any], *args: tp.Any) -> tp.Any:
    try:
        return fun(*args)
    except Exception as exc:
        return ("error", type(exc).__name__)


def test_corpus_is_large(golden: list[dict[str, tp.Any]]) -> None:
    groups = {"sched", "extras", "preset", "loss@criterion", "model", "optim", "data",
              "data/aug", "hydra/job_logging"}
    used = {arg.split("=", 1)[0].lstrip("+~") for case in golden for arg in case["argv"]}
    assert groups <= used
    assert len(golden) >= 350
    assert sum("sig" in case for case in golden) >= 230


def test_fast_config_equals_full_compose(golden: list[dict[str, tp.Any]], fast: HydraMain,
                                         full: HydraMain, full_xps: list[tp.Any]) -> None:
    """Node by node (types, flags, raw values with their interpolations), and resolved."""
    checked = 0
    for case, full_xp in zip(golden, full_xps):
        try:
            argv = simplify_argv(case["argv"])
        except Exception:
            continue
        got = fast._fast.compose(argv)
        if got is None:  # declined: the caller composes in full, as `full` does
            continue
        # The XP's config is the full compose; where making the XP failed after it
        # (Dora fails there too), compose alone.
        want = full_xp.cfg if not isinstance(full_xp, tuple) else _attempt(full.compose, argv)
        assert not isinstance(want, tuple), (argv, want)
        assert _shape(got) == _shape(want), argv
        assert OmegaConf.to_yaml(got) == OmegaConf.to_yaml(want), argv
        assert _resolved(got) == _resolved(want), argv
        checked += 1
    assert checked >= 240


def test_fast_xps_equal_full_compose_xps(golden: list[dict[str, tp.Any]], fast: HydraMain,
                                         full_xps: list[tp.Any]) -> None:
    for case, b in zip(golden, full_xps):
        a = _attempt(fast.get_xp, case["argv"])
        if isinstance(b, tuple):
            assert a == b, case["argv"]
            continue
        assert not isinstance(a, tuple), (case["argv"], a)
        assert (a.sig, a.delta, a.argv) == (b.sig, b.delta, b.argv), case["argv"]
        assert _shape(a.cfg) == _shape(b.cfg), case["argv"]
        assert (a.sig, a.delta) == (case["sig"], case["delta"]), case["argv"]  # Dora's


def _declined(main: HydraMain, argv: list[str]) -> str | None:
    """Why the fast path declines ``argv`` (None: it does not)."""
    split = main._fast.split(argv)
    if split is None:
        return "override"
    if main._fast.compose(argv) is None:
        return "raises"
    return None


def test_declined_forms_give_doras_signature(golden: list[dict[str, tp.Any]],
                                             fast: HydraMain) -> None:
    """Sweeps, hydra overrides, unparsable and failing overrides: full compose, Dora's answer."""
    declined: dict[str, list[list[str]]] = {}
    for case in golden:
        try:
            argv = simplify_argv(case["argv"])
        except Exception:
            continue
        why = _declined(fast, argv)
        if why is None:
            continue
        declined.setdefault(why, []).append(argv)
        got = _attempt(fast.get_xp, case["argv"])
        if "error" in case:
            assert isinstance(got, tuple), (argv, got)
        else:
            assert not isinstance(got, tuple), (argv, got)
            assert (got.sig, got.delta, got.argv) == (case["sig"], case["delta"],
                                                      case["xp_argv"]), argv
    flat = {arg for argvs in declined.values() for argv in argvs for arg in argv}
    for form in ("hydra.job.name=other", "hydra/job_logging=disabled", "seed=1,2",
                 "sched=step,cosine", "a=["):
        assert form in flat, form
    # Overrides it parses but cannot apply (errors, group choices that do not exist).
    assert ["~seed=1"] in declined["raises"] and ["+model.act=x"] in declined["raises"]


def test_each_group_choice_is_composed_once(tmp_path: Path) -> None:
    main = _hydra_main()
    before = dict(main._fast.stats)
    xps = [main.get_xp([f"optim.lr={i / 1000}", f"model={m}", f"+extra.tag=t{i}", "sched=step"])
           for i in range(40) for m in ("small", "big")]
    assert len({xp.sig for xp in xps}) == 80
    stats = main._fast.stats
    # Two structural configs (model=small and model=big with sched=step); Dora's
    # references are the same tuples, cached too.
    assert stats["full"] - before["full"] == 2
    assert stats["fast"] - before["fast"] == 80
    assert stats["declined"] == before["declined"]


def test_fast_path_keeps_hydra_errors(fast: HydraMain) -> None:
    from adora import ArgumentsError

    for argv in (["nokey=1"], ["+epochs=3"], ["~nokey"], ["model=huge"], ["seed=1,2"]):
        with pytest.raises(ArgumentsError):
            fast.get_xp(argv)
    # A failed fast attempt leaves the cached config untouched.
    assert fast.get_xp([]).sig == "97d170e1"
    assert fast.compose([]) == fast._base_cfg


def test_cached_configs_are_never_handed_out(fast: HydraMain) -> None:
    xp = fast.get_xp(["model=big"])
    xp.cfg.model.hidden = -1
    again = fast.get_xp(["model=big"])
    assert again.cfg.model.hidden == 512 and again.sig == xp.sig


def test_composer_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    main = _hydra_main()
    monkeypatch.setattr(_FastComposer, "max_cached", 3)
    for seed in range(6):
        main.get_xp([f"seed={seed}", f"sched={'step' if seed % 2 else 'cosine'}",
                     f"extras={'heavy' if seed % 3 else 'light'}"])
    assert len(main._fast._structural) <= 3 and len(main._references) <= 3
