"""Finding the training package and its decorated main, as Dora does (plus ADORA_* names)."""

from __future__ import annotations

import importlib
import sys
import textwrap
import typing as tp
from pathlib import Path

import pytest

from adora import ConfigError, PackageNotFoundError
from adora.main import DecoratedMain
from adora.package import find_package, load_main, resolve_main_module

TRAIN = textwrap.dedent("""
    import argparse
    from adora import argparse_main

    parser = argparse.ArgumentParser()
    parser.add_argument("--x", type=int, default=0)

    @argparse_main(parser=parser)
    def main():
        pass
""")

_ENV = ("ADORA_PACKAGE", "DORA_PACKAGE", "ADORA_MAIN_MODULE", "DORA_MAIN_MODULE")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tp.Iterator[Path]:
    """An empty working directory; the packages created in it are forgotten afterwards."""
    for var in _ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_main adds the cwd
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def make_package(root: Path, name: str, modules: dict[str, str] | None = None) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for module, source in (modules if modules is not None else {"train": TRAIN}).items():
        (folder / f"{module}.py").write_text(source)
    importlib.invalidate_caches()
    return folder


def test_auto_detects_the_single_package(workdir: Path) -> None:
    make_package(workdir, "proj")
    (workdir / "data").mkdir()  # not a package
    make_package(workdir, "utils", {"helpers": ""})  # a package without train.py
    (workdir / "loose.py").write_text("")
    assert find_package("train") == "proj"
    main = load_main()
    assert isinstance(main, DecoratedMain)
    assert (main.package, main.main_module, main.name) == ("proj", "train", "proj")
    assert main is sys.modules["proj.train"].main
    assert str(workdir) in sys.path


def test_no_candidate_explains_what_to_do(workdir: Path) -> None:
    (workdir / "data").mkdir()
    with pytest.raises(PackageNotFoundError) as info:
        load_main()
    message = str(info.value)
    assert str(workdir) in message
    assert "-P" in message and "ADORA_PACKAGE" in message
    assert "train.py" in message
    assert isinstance(info.value, ConfigError)


def test_several_candidates_are_listed(workdir: Path) -> None:
    make_package(workdir, "alpha")
    make_package(workdir, "beta")
    with pytest.raises(PackageNotFoundError, match="alpha, beta") as info:
        load_main()
    assert "-P" in str(info.value)


def test_explicit_package_wins(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_package(workdir, "alpha")
    make_package(workdir, "beta")
    assert load_main("beta").package == "beta"
    monkeypatch.setenv("ADORA_PACKAGE", "alpha")
    assert load_main("beta").package == "beta"  # -P beats the environment


@pytest.mark.parametrize("variable", ["ADORA_PACKAGE", "DORA_PACKAGE"])
def test_package_from_environment(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                   variable: str) -> None:
    make_package(workdir, "alpha")
    make_package(workdir, "beta")
    monkeypatch.setenv(variable, "beta")
    assert load_main().package == "beta"


def test_adora_package_beats_dora_package(workdir: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    make_package(workdir, "alpha")
    make_package(workdir, "beta")
    monkeypatch.setenv("DORA_PACKAGE", "alpha")
    monkeypatch.setenv("ADORA_PACKAGE", "beta")
    assert load_main().package == "beta"


def test_unknown_package(workdir: Path) -> None:
    make_package(workdir, "proj")
    with pytest.raises(PackageNotFoundError, match="nope") as info:
        load_main("nope")
    assert "Traceback" not in str(info.value)  # a plain "not found", not an import crash


def test_main_module(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_package(workdir, "proj", {"solver": TRAIN})
    with pytest.raises(PackageNotFoundError):
        load_main()  # no train.py anywhere
    main = load_main(main_module="solver")
    assert (main.package, main.main_module) == ("proj", "solver")
    assert find_package("solver") == "proj"
    with pytest.raises(PackageNotFoundError, match="proj.nope"):
        load_main("proj", main_module="nope")


@pytest.mark.parametrize("variable", ["ADORA_MAIN_MODULE", "DORA_MAIN_MODULE"])
def test_main_module_from_environment(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                      variable: str) -> None:
    make_package(workdir, "proj", {"solver": TRAIN})
    monkeypatch.setenv(variable, "solver")
    assert resolve_main_module() == "solver"
    assert resolve_main_module("other") == "other"
    assert load_main().main_module == "solver"


def test_module_without_main(workdir: Path) -> None:
    make_package(workdir, "proj", {"train": "def train():\n    pass\n"})
    with pytest.raises(PackageNotFoundError, match=r"proj\.train has no `main`"):
        load_main()


def test_undecorated_main(workdir: Path) -> None:
    make_package(workdir, "proj", {"train": "def main():\n    pass\n"})
    with pytest.raises(PackageNotFoundError, match="not decorated") as info:
        load_main()
    assert "argparse_main" in str(info.value) and "hydra_main" in str(info.value)


def test_missing_dependency_in_user_module_shows_the_real_error(workdir: Path) -> None:
    make_package(workdir, "proj", {"train": "import somedep_that_is_missing\n" + TRAIN})
    with pytest.raises(PackageNotFoundError) as info:
        load_main()
    message = str(info.value)
    # Not "cannot find the package": the user's module was found but its import failed.
    assert "somedep_that_is_missing" in message
    assert 'proj/train.py", line 1, in <module>' in message


def test_exception_in_user_module_shows_the_real_error(workdir: Path) -> None:
    source = TRAIN + "\nBATCH = 1 // 0\n"
    make_package(workdir, "proj", {"train": source})
    with pytest.raises(PackageNotFoundError) as info:
        load_main()
    message = str(info.value)
    assert "ZeroDivisionError" in message
    assert 'proj/train.py", line 12, in <module>' in message and "BATCH = 1 // 0" in message


def test_syntax_error_in_user_module(workdir: Path) -> None:
    make_package(workdir, "proj", {"train": TRAIN + "\ndef broken(:\n"})
    with pytest.raises(PackageNotFoundError, match="SyntaxError") as info:
        load_main()
    assert "train.py" in str(info.value)
