"""Shared fixtures: example projects copied to a temporary folder, the adora CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import typing as tp
from pathlib import Path

import pytest

# Real test beds (Slurm cluster, sshd): skipped with the reason where they cannot run.
pytest_plugins = ["adora.testing.pytest_fixtures"]

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def _forget_modules(prefix: str) -> None:
    for name in list(sys.modules):
        if name == prefix or name.startswith(prefix + "."):
            del sys.modules[name]


@pytest.fixture
def toy_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tp.Iterator[Path]:
    """A copy of examples/toy in a temporary folder, made the working directory."""
    root = tmp_path / "toy_project"
    shutil.copytree(EXAMPLES / "toy", root, ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    for var in ("ADORA_PACKAGE", "DORA_PACKAGE", "ADORA_MAIN_MODULE", "DORA_MAIN_MODULE",
                "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    _forget_modules("toy")
    yield root
    _forget_modules("toy")


@pytest.fixture
def cluster(slurm_env: tp.Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            toy_project: Path) -> tp.Any:
    """The Slurm test cluster for a test submitting from `toy_project`; its jobs (every
    link of their chains) are cancelled after it."""
    from adora.jobs import load_record

    monkeypatch.setenv("ADORA_CACHE_DIR", str(tmp_path / "cache"))
    yield slurm_env
    # Cancel this test's jobs only (other test sessions may share the cluster), every job
    # of a chain of dependents too.
    ids = [i for r in (load_record(f) for f in (toy_project / "outputs" / "xps").glob("*"))
           if r is not None for i in r.links]
    if ids:
        subprocess.run(["scancel", *ids], check=False, capture_output=True)


def adora_cli(*args: str, cwd: Path, input: str | None = None, timeout: float = 120,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m adora ARGS`` in ``cwd`` and return the completed process."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("ADORA_PACKAGE", "DORA_PACKAGE", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    full_env.setdefault("ADORA_BACKEND", "local")  # Slurm may be installed here: be explicit
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "adora", *args], cwd=cwd, input=input,
                          capture_output=True, text=True, timeout=timeout, env=full_env)
