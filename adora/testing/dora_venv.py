"""A side virtualenv with Dora 0.1.13, to check adora against the real thing.

Tests and benchmarks call `ensure_dora_venv()`; it returns the venv's python.
The venv is built once and cached at ``$ADORA_DORA_VENV``, else
``<repo>/.cache/dora-venv``, from the running Python (or
``$ADORA_DORA_BASE_PYTHON``). Building it installs ``torch==2.13.0`` first (the
machine's pip configuration finds the CPU wheel on disk, so no index URL is
passed here), then ``dora-search==0.1.13`` and ``hydra-core``. Concurrent
callers (pytest workers, a benchmark) are serialised by a file lock; a ready
venv is recognised by a marker file, so later calls cost a stat.

From a shell::

    python -m adora.testing.dora_venv          # build if needed, print the python path
    python -m adora.testing.dora_venv --path /tmp/dora-venv
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["DORA_REQUIREMENTS", "DoraVenvError", "default_venv_path", "ensure_dora_venv",
           "venv_python"]

#: What gets installed, in order (torch alone first so pip takes the local CPU wheel).
DORA_REQUIREMENTS: tuple[tuple[str, ...], ...] = (
    ("torch==2.13.0",),
    ("dora-search==0.1.13", "hydra-core"),
)
_MARKER = ".adora-dora-venv.json"
_PIP_TIMEOUT = 1800.0
# A failure is remembered for the life of the process: a test session without
# network must not pay for pip's retries once per test.
_failures: dict[Path, str] = {}


class DoraVenvError(RuntimeError):
    """The Dora side venv could not be built; the message says why."""


def default_venv_path() -> Path:
    """``$ADORA_DORA_VENV``, else ``.cache/dora-venv`` in the adora checkout.

    When adora is not run from a checkout (no pyproject.toml two levels up),
    the cache goes to ``~/.cache/adora/dora-venv``.
    """
    env = os.environ.get("ADORA_DORA_VENV")
    if env:
        return Path(env).expanduser().absolute()
    repo = Path(__file__).resolve().parent.parent.parent
    if (repo / "pyproject.toml").exists():
        return repo / ".cache" / "dora-venv"
    return Path.home() / ".cache" / "adora" / "dora-venv"


def venv_python(venv: Path) -> Path:
    """Path of the python executable inside ``venv``."""
    if os.name == "nt":  # pragma: no cover - adora targets POSIX
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def _marker_content() -> dict[str, object]:
    return {"requirements": [list(group) for group in DORA_REQUIREMENTS],
            "python": list(sys.version_info[:2])}


def _is_ready(venv: Path) -> bool:
    marker = venv / _MARKER
    try:
        content = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return content == _marker_content() and venv_python(venv).exists()


def _run(cmd: list[str], what: str, venv: Path) -> None:
    env = dict(os.environ)
    # The venv's pip must not see the caller's virtualenv or PYTHONPATH.
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV"):
        env.pop(var, None)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT,
                              env=env, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DoraVenvError(f"Cannot build the Dora venv at {venv}: {what} failed: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise DoraVenvError(
            f"Cannot build the Dora venv at {venv}: {what} exited with {proc.returncode} "
            f"(no network, or the package index is unreachable?).\n"
            f"Command: {' '.join(cmd)}\n{tail}")


def _base_python() -> str:
    # The interpreter the venv is made from: this one, unless told otherwise
    # (the torch wheel on disk is for one Python version).
    return os.environ.get("ADORA_DORA_BASE_PYTHON") or sys.executable


def _build(venv: Path) -> None:
    python = venv_python(venv)
    if not python.exists():
        # An existing venv (e.g. one made by hand) is completed, never deleted.
        _run([_base_python(), "-m", "venv", str(venv)], "creating the virtualenv", venv)
    for group in DORA_REQUIREMENTS:
        _run([str(python), "-m", "pip", "install", "--disable-pip-version-check",
              "--no-input", *group], f"pip install {' '.join(group)}", venv)
    probe = ("import dora, torch, hydra; assert dora.__version__ == '0.1.13', dora.__version__; "
             "print(torch.__version__)")
    _run([str(python), "-c", probe], "importing dora, torch and hydra", venv)
    (venv / _MARKER).write_text(json.dumps(_marker_content()))


def ensure_dora_venv(path: Path | None = None) -> Path:
    """Build (once) the Dora 0.1.13 virtualenv and return its python executable.

    ``path`` defaults to `default_venv_path`. Safe to call from several
    processes at once. Raises `DoraVenvError`, with pip's output, when the venv
    cannot be built (no network, pip failure, wrong Python).
    """
    venv = (Path(path) if path is not None else default_venv_path()).absolute()
    if _is_ready(venv):
        return venv_python(venv)
    if venv in _failures:
        raise DoraVenvError(_failures[venv])
    try:
        from filelock import FileLock
    except ImportError as exc:  # pragma: no cover - filelock comes with adora[test]
        raise DoraVenvError(f"Cannot build the Dora venv: {exc}") from exc
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(venv.parent / f".{venv.name}.lock"), timeout=_PIP_TIMEOUT * 2):
            if not _is_ready(venv):
                _build(venv)
    except DoraVenvError as exc:
        _failures[venv] = str(exc)
        raise
    except OSError as exc:  # lock timeout (a subclass of OSError) or an unwritable folder
        message = f"Cannot build the Dora venv at {venv}: {type(exc).__name__}: {exc}"
        _failures[venv] = message
        raise DoraVenvError(message) from exc
    return venv_python(venv)


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        "python -m adora.testing.dora_venv",
        description="Build (once) the Dora 0.1.13 side venv and print its python path.")
    parser.add_argument("--path", type=Path, default=None,
                        help="Where the venv goes (default: $ADORA_DORA_VENV or "
                             "<repo>/.cache/dora-venv).")
    opts = parser.parse_args(args)
    try:
        python = ensure_dora_venv(opts.path)
    except DoraVenvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
