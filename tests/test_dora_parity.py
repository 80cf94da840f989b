"""adora computes the same XP signatures, deltas, names and launcher argvs as Dora 0.1.13.

The answers of Dora itself are recorded in ``tests/dora_parity/golden_sigs.json``
by ``tests/dora_parity/record_dora_sigs.py`` (see its docstring to re-record),
over two projects that both tools import: ``argparse_project/aproj`` (1,200+
argparse argvs) and ``hydra_project/hproj`` (Hydra groups, nested keys,
``+``/``++`` additions, dict and list values, repeated keys). The test marked
``dora`` asks Dora live, in the side venv of `adora.testing.dora_venv`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import typing as tp
from pathlib import Path

import pytest

PARITY = Path(__file__).resolve().parent / "dora_parity"
GOLDEN = PARITY / "golden_sigs.json"
RECORD = PARITY / "record_dora_sigs.py"
PROJECT_DIRS = [PARITY / "argparse_project", PARITY / "hydra_project"]
RERECORD = ("If Dora's answer is the one that changed (cases.py or the projects were edited), "
            "re-record with `$(.venv/bin/python -m adora.testing.dora_venv) "
            "tests/dora_parity/record_dora_sigs.py`.")
MAX_SHOWN = 8


# -- loading the two projects ---------------------------------------------------

def _load_cases() -> tp.Any:
    # Loaded under a private name: "cases" is too common to put on sys.path.
    spec = importlib.util.spec_from_file_location("_adora_dora_parity_cases",
                                                  PARITY / "cases.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _forget(prefixes: tuple[str, ...]) -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in prefixes:
            del sys.modules[name]


class Projects(tp.NamedTuple):
    argparse: tp.Any  # adora's ArgparseMain of aproj
    argparse_dash: tp.Any  # same with use_underscore=False
    hydra: tp.Any  # adora's HydraMain of hproj
    cases: tp.Any  # the cases module


@pytest.fixture(scope="module")
def projects() -> tp.Iterator[Projects]:
    added = [str(d) for d in PROJECT_DIRS if str(d) not in sys.path]
    sys.path[:0] = added
    _forget(("aproj", "hproj"))
    try:
        from aproj.train_adora import main, main_dash
        from hproj.train_adora import main as hydra_main

        yield Projects(main, main_dash, hydra_main, _load_cases())
    finally:
        _forget(("aproj", "hproj"))
        for folder in added:
            sys.path.remove(folder)


@pytest.fixture(scope="module")
def golden() -> dict[str, tp.Any]:
    return tp.cast(dict, json.loads(GOLDEN.read_text(encoding="utf8")))


# -- what adora answers, in the golden file's format ----------------------------

def xp_case(main: tp.Any, argv: list[str], hydra: bool) -> dict[str, tp.Any]:
    case: dict[str, tp.Any] = {"argv": list(argv)}
    try:
        xp = main.get_xp(list(argv))
    except (Exception, SystemExit) as exc:
        case["error"] = type(exc).__name__
        return case
    case["sig"] = xp.sig
    case["delta"] = xp.delta
    case["name"] = main.get_name(xp)
    if hydra:
        case["xp_argv"] = list(xp.argv)
    return case


def conversion_case(projects: Projects, style: str, value: tp.Any) -> dict[str, tp.Any]:
    main = {"argparse": projects.argparse, "argparse_dash": projects.argparse_dash,
            "hydra": projects.hydra}[style]
    case: dict[str, tp.Any] = {"style": style, "input": repr(value)}
    try:
        case["argv"] = main.value_to_argv(value)
    except Exception as exc:
        case["error"] = type(exc).__name__
    return case


class AdoraAnswers:
    """adora's answers for every golden case, each kind computed once (Hydra is slow)."""

    def __init__(self, projects: Projects, golden: dict[str, tp.Any]) -> None:
        self.projects = projects
        self.golden = golden
        self._cache: dict[str, list[dict[str, tp.Any]]] = {}

    def __getitem__(self, kind: str) -> list[dict[str, tp.Any]]:
        if kind not in self._cache:
            projects, golden = self.projects, self.golden
            if kind == "argparse":
                answers = [xp_case(projects.argparse, c["argv"], False)
                           for c in golden["argparse"]]
            elif kind == "hydra":
                answers = [xp_case(projects.hydra, c["argv"], True) for c in golden["hydra"]]
            else:
                answers = [conversion_case(projects, style, value)
                           for style, value in projects.cases.value_to_argv_cases()]
            self._cache[kind] = answers
        return self._cache[kind]


@pytest.fixture(scope="module")
def adora_answers(projects: Projects, golden: dict[str, tp.Any]) -> AdoraAnswers:
    return AdoraAnswers(projects, golden)


# -- comparing ------------------------------------------------------------------

def _js(value: tp.Any) -> str:
    # Exact comparison: key order of dicts matters (it enters the signature),
    # and NaN equals NaN once written as JSON.
    return json.dumps(value, ensure_ascii=False)


def _delta_diff(dora: list[tp.Any], adora: list[tp.Any]) -> str:
    dora_items = [_js(item) for item in dora or []]
    adora_items = [_js(item) for item in adora or []]
    only_dora = [i for i in dora_items if i not in adora_items]
    only_adora = [i for i in adora_items if i not in dora_items]
    if not only_dora and not only_adora:
        return "      same items, different order"
    lines = [f"      - only in Dora's:  {item}" for item in only_dora]
    lines += [f"      + only in adora's: {item}" for item in only_adora]
    return "\n".join(lines)


def mismatches(dora_cases: list[dict[str, tp.Any]], adora_cases: list[dict[str, tp.Any]],
               fields: tuple[str, ...]) -> list[str]:
    """Human-readable description of every case where adora and Dora disagree on ``fields``."""
    problems = []
    assert len(dora_cases) == len(adora_cases)
    for index, (dora, adora) in enumerate(zip(dora_cases, adora_cases)):
        assert dora["argv"] == adora["argv"]
        head = f"case #{index} argv={_js(dora['argv'])}"
        if "error" in dora or "error" in adora:
            if ("error" in dora) != ("error" in adora):
                problems.append(f"{head}\n    Dora:  {dora.get('error') or 'accepted it'}\n"
                                f"    adora: {adora.get('error') or 'accepted it'}")
            continue
        lines = []
        for field in fields:
            if _js(dora[field]) != _js(adora[field]):
                lines.append(f"    {field}: Dora {_js(dora[field])}\n"
                             f"    {' ' * len(field)}  adora {_js(adora[field])}")
                if field == "delta":
                    lines.append(_delta_diff(dora["delta"], adora["delta"]))
        if lines:
            problems.append("\n".join([head, *lines]))
    return problems


def report(problems: list[str], total: int, what: str) -> str:
    shown = "\n".join(problems[:MAX_SHOWN])
    more = f"\n... and {len(problems) - MAX_SHOWN} more." if len(problems) > MAX_SHOWN else ""
    return (f"adora disagrees with Dora 0.1.13 on {len(problems)}/{total} {what} cases:\n"
            f"{shown}{more}\n{RERECORD}")


def assert_same(dora_cases: list[dict[str, tp.Any]], adora_cases: list[dict[str, tp.Any]],
                fields: tuple[str, ...], what: str) -> None:
    problems = mismatches(dora_cases, adora_cases, fields)
    if problems:
        pytest.fail(report(problems, len(dora_cases), what), pytrace=False)


# -- the tests ------------------------------------------------------------------

def test_golden_file_matches_the_cases(projects: Projects, golden: dict[str, tp.Any]) -> None:
    cases = projects.cases
    assert golden["meta"]["dora"] == "0.1.13"
    assert [c["argv"] for c in golden["argparse"]] == cases.argparse_cases(), RERECORD
    assert [c["argv"] for c in golden["hydra"]] == cases.hydra_cases(), RERECORD
    assert [(c["style"], c["input"]) for c in golden["value_to_argv"]] == [
        (style, repr(value)) for style, value in cases.value_to_argv_cases()], RERECORD
    # Enough coverage to mean something: over a thousand argvs, hundreds of sigs.
    argparse_sigs = {c["sig"] for c in golden["argparse"] if "sig" in c}
    hydra_sigs = {c["sig"] for c in golden["hydra"] if "sig" in c}
    assert len(golden["argparse"]) >= 1000 and len(argparse_sigs) >= 500
    assert len(hydra_sigs) >= 80


def test_argparse_sig_and_delta_match_dora(golden: dict[str, tp.Any],
                                           adora_answers: AdoraAnswers) -> None:
    assert_same(golden["argparse"], adora_answers["argparse"], ("sig", "delta"), "argparse")


def test_hydra_sig_and_delta_match_dora(golden: dict[str, tp.Any],
                                        adora_answers: AdoraAnswers) -> None:
    assert_same(golden["hydra"], adora_answers["hydra"], ("sig", "delta", "xp_argv"), "Hydra")


def test_names_match_dora(golden: dict[str, tp.Any],
                          adora_answers: AdoraAnswers) -> None:
    assert_same(golden["argparse"], adora_answers["argparse"], ("name",), "argparse name")
    assert_same(golden["hydra"], adora_answers["hydra"], ("name",), "Hydra name")


def test_value_to_argv_matches_dora(golden: dict[str, tp.Any],
                                    adora_answers: AdoraAnswers) -> None:
    problems = []
    for dora, adora in zip(golden["value_to_argv"], adora_answers["value_to_argv"]):
        if ("error" in dora) != ("error" in adora) or dora.get("argv") != adora.get("argv"):
            problems.append(f"{dora['style']} value_to_argv({dora['input']})\n"
                            f"    Dora:  {dora.get('argv', dora.get('error'))}\n"
                            f"    adora: {adora.get('argv', adora.get('error'))}")
    if problems:
        pytest.fail(report(problems, len(golden["value_to_argv"]), "value_to_argv"),
                    pytrace=False)


def test_hydra_failed_comparison_leaves_no_state(projects: Projects,
                                                 golden: dict[str, tp.Any]) -> None:
    # Dora's comparison keeps its path in a mutable default argument: after a
    # config whose structure changed (mapping=null) every later delta of the
    # process is prefixed with "mapping.". adora must refuse the XP and go on.
    from adora.errors import AdoraError

    with pytest.raises(AdoraError):
        projects.hydra.get_xp(["mapping=null"])
    expected = next(c for c in golden["hydra"] if c["argv"] == ["seed=1", "seed=2", "seed=3"])
    assert xp_case(projects.hydra, expected["argv"], True) == expected


def test_parity_check_catches_a_broken_signature(projects: Projects, golden: dict[str, tp.Any],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The parity tests have teeth: a signature computed without sorting the
    # delta (or with a different JSON encoding) is reported.
    import hashlib

    import adora.xp

    def unsorted_sig(delta: tp.Any) -> str:
        return hashlib.sha1(json.dumps(delta).encode("utf8")).hexdigest()[:8]

    def spaced_sig(delta: tp.Any) -> str:
        text = json.dumps(sorted(delta), separators=(",", ":"))
        return hashlib.sha1(text.encode("utf8")).hexdigest()[:8]

    sample = golden["argparse"][:300]
    for broken in (unsorted_sig, spaced_sig):
        monkeypatch.setattr(adora.xp, "get_sig", broken)
        answers = [xp_case(projects.argparse, c["argv"], False) for c in sample]
        problems = mismatches(sample, answers, ("sig", "delta"))
        assert len(problems) > 10, broken.__name__
        assert "sig: Dora" in report(problems, len(sample), "argparse")


@pytest.mark.dora
def test_live_side_by_side_with_dora(tmp_path: Path, golden: dict[str, tp.Any],
                                     adora_answers: AdoraAnswers) -> None:
    """Ask Dora 0.1.13 itself (side venv) and compare with adora, case by case."""
    from adora.testing.dora_venv import DoraVenvError, ensure_dora_venv

    try:
        python = ensure_dora_venv()
    except DoraVenvError as exc:
        pytest.skip(f"The Dora side venv cannot be built here: {exc}")
    out = tmp_path / "live_sigs.json"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(python), str(RECORD), "--out", str(out)], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 0, f"Recording with Dora failed:\n{proc.stdout}\n{proc.stderr}"
    live = json.loads(out.read_text(encoding="utf8"))
    assert live["meta"]["dora"] == "0.1.13"
    assert_same(live["argparse"], adora_answers["argparse"], ("sig", "delta", "name"), "argparse")
    assert_same(live["hydra"], adora_answers["hydra"], ("sig", "delta", "xp_argv", "name"),
                "Hydra")
    for dora, adora in zip(live["value_to_argv"], adora_answers["value_to_argv"],
                           strict=True):
        assert ("error" in dora) == ("error" in adora), (dora, adora)
        assert dora.get("argv") == adora.get("argv"), (dora, adora)
    # The committed golden file must be what Dora answers today.
    for key in ("argparse", "hydra", "value_to_argv"):
        stale = [i for i, (a, b) in enumerate(zip(live[key], golden[key])) if _js(a) != _js(b)]
        assert len(live[key]) == len(golden[key]) and not stale, (
            f"golden_sigs.json is stale for {key} (cases {stale[:10]}). {RERECORD}")


# -- the side venv helper -------------------------------------------------------

def test_dora_venv_failure_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adora.testing import dora_venv

    monkeypatch.setenv("ADORA_DORA_BASE_PYTHON", str(tmp_path / "no-such-python"))
    monkeypatch.setattr(dora_venv, "_failures", {})
    target = tmp_path / "venv"
    with pytest.raises(dora_venv.DoraVenvError, match="creating the virtualenv") as first:
        dora_venv.ensure_dora_venv(target)
    assert str(target) in str(first.value)
    # The failure is remembered: a second call does not try (and wait) again.
    monkeypatch.delenv("ADORA_DORA_BASE_PYTHON")
    with pytest.raises(dora_venv.DoraVenvError, match="creating the virtualenv"):
        dora_venv.ensure_dora_venv(target)
    assert not (target / "bin").exists()
    # The CLI reports it on stderr, with exit code 1.
    assert dora_venv.main(["--path", str(target)]) == 1


def test_dora_venv_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from adora.testing import dora_venv

    monkeypatch.setenv("ADORA_DORA_VENV", str(tmp_path / "v"))
    assert dora_venv.default_venv_path() == tmp_path / "v"
    monkeypatch.delenv("ADORA_DORA_VENV")
    assert dora_venv.default_venv_path() == PARITY.parent.parent / ".cache" / "dora-venv"


@pytest.mark.dora
def test_dora_venv_cli_prints_the_python() -> None:
    from adora.testing.dora_venv import DoraVenvError, ensure_dora_venv

    try:
        python = ensure_dora_venv()
    except DoraVenvError as exc:
        pytest.skip(f"The Dora side venv cannot be built here: {exc}")
    proc = subprocess.run([sys.executable, "-m", "adora.testing.dora_venv"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(python)
    version = subprocess.run([str(python), "-c", "import dora; print(dora.__version__)"],
                             capture_output=True, text=True, timeout=120)
    assert version.stdout.strip() == "0.1.13", version.stderr
