"""The `dora` import name (#14 item 10): libraries that import Dora themselves (flashy:
``from dora import get_xp``) see the XP adora runs, with or without dora-search installed;
an installed Dora is left untouched."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import adora_cli

REPO = Path(__file__).resolve().parent.parent


def _python(code: str, *, cwd: Path, python: str = sys.executable,
            pythonpath: list[str] | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RANK", "WORLD_SIZE")}
    if pythonpath:
        full["PYTHONPATH"] = os.pathsep.join(pythonpath)
    full.update(env or {})
    return subprocess.run([python, "-c", textwrap.dedent(code)], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=120)


def _flashy_like_project(root: Path) -> Path:
    """A training package using a library that imports `dora` at its own import."""
    (root / "libflash").mkdir(parents=True)
    (root / "libflash" / "__init__.py").write_text(textwrap.dedent("""
        from dora import get_xp, is_xp  # as flashy does
        import dora.distrib

        def whoami():
            xp = get_xp()
            return f"{xp.sig} {xp.folder.name} {dora.distrib.rank()}"
    """))
    (root / "flashtrain" / "grids").mkdir(parents=True)
    (root / "flashtrain" / "__init__.py").write_text("")
    (root / "flashtrain" / "grids" / "__init__.py").write_text("")
    (root / "flashtrain" / "train.py").write_text(textwrap.dedent("""
        import argparse
        import libflash  # imported before adora, as many training modules do
        from adora import argparse_main

        parser = argparse.ArgumentParser()
        parser.add_argument("--lr", type=float, default=0.1)

        @argparse_main(parser=parser, dir="./outputs")
        def main():
            print("flash sees", libflash.whoami(), flush=True)
    """))
    return root


def test_without_dora_search_dora_is_an_alias_of_adora(tmp_path: Path) -> None:
    proc = _python("""
        import importlib.util, sys
        assert importlib.util.find_spec("dora") is None  # dora-search is not installed
        import adora
        assert "adora.dora_alias" not in sys.modules  # nothing loaded until asked
        import dora, dora.distrib, dora.xp, dora.log
        from dora import get_xp, XP, Explorer, Launcher, argparse_main, hydra_main
        assert get_xp is adora.get_xp and XP is adora.XP and Explorer is adora.Explorer
        assert dora.distrib is adora.distrib and dora.xp is adora.xp
        assert sys.modules["dora.log"] is adora.log
        assert set(adora.__all__) <= set(dir(dora))
        try:
            import dora.no_such_module
        except ModuleNotFoundError as exc:
            assert "dora.no_such_module" in str(exc)
        else:
            raise AssertionError("dora.no_such_module imported")
        print("ok")
    """, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_the_alias_can_be_turned_off(tmp_path: Path) -> None:
    proc = _python("""
        import adora
        try:
            import dora
        except ModuleNotFoundError:
            print("absent")
    """, cwd=tmp_path, env={"ADORA_NO_DORA_ALIAS": "1"})
    assert proc.stdout.strip() == "absent", proc.stderr


def test_a_library_importing_dora_sees_the_xp_adora_runs(tmp_path: Path) -> None:
    root = _flashy_like_project(tmp_path / "proj")
    proc = adora_cli("-P", "flashtrain", "run", "--", "--lr=0.5", cwd=root)
    assert proc.returncode == 0, proc.stderr
    (folder,) = (root / "outputs" / "xps").iterdir()
    assert f"flash sees {folder.name} {folder.name} 0" in proc.stdout


def _fake_dora(root: Path) -> Path:
    """A stand-in for an installed dora-search: its own XP stack and get_xp."""
    pkg = root / "fake_site" / "dora"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .xp import get_xp, is_xp\nREAL = True\n")
    (pkg / "xp.py").write_text(textwrap.dedent("""
        class _Context:
            def __init__(self):
                self._xps = []

        _context = _Context()

        def get_xp():
            if not _context._xps:
                raise RuntimeError("Not in a xp!")
            return _context._xps[-1]

        def is_xp():
            return bool(_context._xps)
    """))
    return root / "fake_site"


def test_an_installed_dora_is_kept_and_shown_adoras_xp(tmp_path: Path) -> None:
    site = _fake_dora(tmp_path)
    root = _flashy_like_project(tmp_path / "proj")
    (root / "libflash" / "__init__.py").write_text(textwrap.dedent("""
        import dora
        from dora import get_xp

        def whoami():
            assert dora.REAL  # the installed Dora, not adora's alias
            return f"{get_xp().sig} {dora.is_xp()}"
    """))
    env = {"PYTHONPATH": str(site)}
    proc = adora_cli("-P", "flashtrain", "run", cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr
    (folder,) = (root / "outputs" / "xps").iterdir()
    assert f"flash sees {folder.name} True" in proc.stdout
    # Outside adora's XP, Dora's stack is Dora's own.
    proc = _python("""
        import adora, dora
        assert dora.REAL and not dora.is_xp()
        print("ok")
    """, cwd=tmp_path, pythonpath=[str(site)])
    assert proc.stdout.strip() == "ok", proc.stderr


@pytest.mark.dora
def test_real_dora_search_gets_adoras_xp_and_still_runs_its_own(tmp_path: Path) -> None:
    import sysconfig

    from adora.testing.dora_venv import DoraVenvError, ensure_dora_venv

    try:
        python = ensure_dora_venv()
    except DoraVenvError as exc:
        pytest.skip(f"The Dora side venv cannot be built here: {exc}")
    # Dora's venv first (dora-search), then adora and its dependencies (this venv's).
    site = sysconfig.get_paths()["purelib"]
    proc = _python("""
        import argparse, tempfile
        import adora, dora
        from adora.conf import DoraConfig
        from adora.xp import XP
        assert "dora-venv" in dora.__file__
        xp = XP(DoraConfig(dir=tempfile.mkdtemp()), argparse.Namespace(), [], [])
        with xp.enter():
            assert dora.get_xp() is xp and dora.is_xp()
        assert not dora.is_xp()
        # Dora's own XPs are untouched by adora being imported.
        import dora.xp
        from dora.conf import DoraConfig as DC
        dxp = dora.xp.XP(dora=DC(dir=tempfile.mkdtemp()), cfg=None, argv=[], sig="abc",
                         delta=[])
        with dxp.enter():
            assert dora.get_xp() is dxp and not adora.is_xp()
        print("ok")
    """, cwd=tmp_path, python=str(python), pythonpath=[str(REPO), str(site)])
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
