"""adora adopts XP folders made by Dora 0.1.13, and shares XPs with it both ways.

The toy example is copied to a temporary folder with a Dora twin of its
training module (``toy/train_dora.py``: the same file, importing ``dora``
instead of ``adora``). Dora runs an XP and is interrupted after two of four
epochs; ``adora run -f SIG`` must find Dora's folder ``outputs/xps/SIG``
(through Dora's ``.argv.json``), read Dora's ``history.json`` and resume at
epoch 2. ``adora export`` / ``dora import`` and ``dora export`` /
``adora import`` must understand each other.

Dora runs in the side venv of `adora.testing.dora_venv` (built once, cached);
the tests are skipped, with the reason, when it cannot be built.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from adora.link import read_history
from adora.share import dump

try:  # tests/ imported as a package, or as a folder on sys.path
    from tests.conftest import EXAMPLES, adora_cli
except ImportError:
    from conftest import EXAMPLES, adora_cli  # type: ignore[no-redef]

pytestmark = pytest.mark.dora

TRAIN_ARGS = ["--epochs", "4", "--lr", "0.1", "--hidden", "4", "--num_workers", "3"]
STOP_AFTER = 2  # Dora's run is interrupted once this many epochs are in history.json
# Runs Dora's CLI after making Link.push_metrics stop the process once
# STOP_AFTER entries are committed: a job preempted right after an epoch.
DORA_INTERRUPTED = """
import sys
import dora.link

_push = dora.link.Link.push_metrics


def push_then_stop(self, metrics):
    _push(self, metrics)
    if len(self.history) >= {stop}:
        print("interrupted after", len(self.history), "epochs", flush=True)
        raise SystemExit(3)


dora.link.Link.push_metrics = push_then_stop
from dora.__main__ import main

sys.argv[0] = "dora"
main()
"""


@pytest.fixture(scope="module")
def dora_python() -> Path:
    from adora.testing.dora_venv import DoraVenvError, ensure_dora_venv

    try:
        return ensure_dora_venv()
    except DoraVenvError as exc:
        pytest.skip(f"The Dora side venv cannot be built here: {exc}")


def make_project(root: Path) -> Path:
    """A copy of examples/toy at ``root``, with ``toy/train_dora.py`` for Dora."""
    shutil.copytree(EXAMPLES / "toy", root,
                    ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    source = (root / "toy" / "train.py").read_text()
    assert "from adora import argparse_main, get_xp" in source
    (root / "toy" / "train_dora.py").write_text(
        source.replace("from adora import argparse_main, get_xp",
                       "from dora import argparse_main, get_xp"))
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "toy_project")


def _clean_env() -> dict[str, str]:
    drop = ("ADORA_PACKAGE", "DORA_PACKAGE", "ADORA_MAIN_MODULE", "DORA_MAIN_MODULE",
            "RANK", "WORLD_SIZE", "LOCAL_RANK", "VIRTUAL_ENV", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONWARNINGS"] = "ignore"  # torch warns that numpy is missing: noise
    return env


def dora(python: Path, *args: str, cwd: Path, input: str | None = None,
         script: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run Dora's CLI (``python -m dora -P toy --main_module train_dora ARGS``) in ``cwd``."""
    head = ["-c", script] if script is not None else ["-m", "dora"]
    cmd = [str(python), *head, "-P", "toy", "--main_module", "train_dora", *args]
    return subprocess.run(cmd, cwd=cwd, input=input, capture_output=True, text=True,
                          timeout=300, env=_clean_env())


def _ok(proc: subprocess.CompletedProcess[str], what: str, stdout_only: bool = False) -> str:
    assert proc.returncode == 0, (
        f"{what} exited with {proc.returncode}\n--- stdout\n{proc.stdout}\n"
        f"--- stderr\n{proc.stderr}")
    return proc.stdout if stdout_only else proc.stdout + proc.stderr


def _adora_sig(project: Path, argv: list[str]) -> str:
    out = _ok(adora_cli("info", "--", *argv, cwd=project), "adora info")
    match = re.search(r"^sig: ([0-9a-f]{8})$", out, re.M)
    assert match, out
    return match.group(1)


def _block(text: str) -> str:
    """The exchange block printed by ``export`` (the lines between blank lines)."""
    lines = [line.strip() for line in text.splitlines()]
    blocks = "\n".join(lines).strip().split("\n\n")
    assert len(blocks) == 1, text
    return blocks[0]


def test_adora_resumes_an_xp_started_by_dora(project: Path, dora_python: Path) -> None:
    proc = dora(dora_python, "run", "--", *TRAIN_ARGS, cwd=project,
                script=DORA_INTERRUPTED.format(stop=STOP_AFTER))
    assert proc.returncode == 3, f"Dora's run was not interrupted:\n{proc.stdout}\n{proc.stderr}"
    # Stopped inside the push of epoch 2, before the script printed it.
    assert "epoch 1/4" in proc.stdout and "epoch 3/4" not in proc.stdout, proc.stdout

    # Dora's folder: outputs/xps/<sig>/ with .argv.json, history.json, the checkpoint.
    folders = list((project / "outputs" / "xps").iterdir())
    assert len(folders) == 1, folders
    folder = folders[0]
    sig = folder.name
    assert json.loads((folder / ".argv.json").read_text()) == TRAIN_ARGS
    dora_history = json.loads((folder / "history.json").read_text())
    assert len(dora_history) == STOP_AFTER
    assert (folder / "checkpoint.json").exists()
    # adora computes the very same signature for these arguments...
    assert _adora_sig(project, TRAIN_ARGS) == sig
    # ... and, with the excluded --num_workers changed, still the same one.
    assert _adora_sig(project, [*TRAIN_ARGS, "--num_workers", "9"]) == sig

    # adora finds the XP from its signature alone, in Dora's folder, and resumes it.
    out = _ok(adora_cli("run", "-f", sig, cwd=project), "adora run -f SIG")
    assert f"Resuming {sig} at epoch {STOP_AFTER}" in out, out
    assert "epoch 1/4" not in out and "epoch 2/4" not in out, out
    assert "epoch 3/4" in out and "epoch 4/4" in out, out
    assert [p.name for p in (project / "outputs" / "xps").iterdir()] == [sig]
    history = read_history(folder / "history.json")
    assert history is not None and len(history) == 4, history
    assert history[:STOP_AFTER] == dora_history  # continued, not restarted
    assert json.loads((folder / ".argv.json").read_text()) == TRAIN_ARGS

    out = _ok(adora_cli("info", "-f", sig, "-m", cwd=project), "adora info -f SIG -m")
    assert sig in out and str(folder) in out, out
    match = re.search(r"metrics\[(\d+)\]: (.*)$", out, re.M | re.I)
    assert match, out
    assert int(match.group(1)) == 4
    assert json.loads(match.group(2)) == history[-1]

    # Dora still recognises the folder adora worked in as the same XP.
    out = _ok(dora(dora_python, "info", "-f", sig, cwd=project), "dora info -f SIG")
    assert f"Sheep({sig}" in out and str(folder) in out, out


def test_export_import_both_ways(tmp_path: Path, dora_python: Path) -> None:
    source = make_project(tmp_path / "source")
    argvs = [TRAIN_ARGS, ["--lr", "0.02", "--activation", "relu"], []]
    sigs = [_adora_sig(source, argv) for argv in argvs]

    # `import` initialises XPs (folder and .argv.json, no training): Dora gets
    # them first, then each tool exports them and the other imports them.
    dora_side = make_project(tmp_path / "dora_side")
    out = _ok(dora(dora_python, "import", cwd=dora_side, input=f"\n{dump(argvs)}\n\n"),
              "dora import")
    for sig in sigs:
        assert f"Imported XP {sig}" in out, out
        assert (dora_side / "outputs" / "xps" / sig / ".argv.json").exists()
    dora_block = _block(_ok(dora(dora_python, "export", *sigs, cwd=dora_side), "dora export",
                            stdout_only=True))

    adora_side = make_project(tmp_path / "adora_side")
    out = _ok(adora_cli("import", cwd=adora_side, input=f"\n{dora_block}\n\n"),
              "adora import of Dora's block")
    for sig, argv in zip(sigs, argvs, strict=True):
        assert f"Imported XP {sig}" in out, out
        argv_file = adora_side / "outputs" / "xps" / sig / ".argv.json"
        assert json.loads(argv_file.read_text()) == argv
    adora_block = _block(_ok(adora_cli("export", *sigs, cwd=adora_side), "adora export",
                             stdout_only=True))
    # Same XPs, same block, to the character.
    assert adora_block == dora_block

    fresh = make_project(tmp_path / "dora_again")
    out = _ok(dora(dora_python, "import", cwd=fresh, input=f"\n{adora_block}\n\n"),
              "dora import of adora's block")
    for sig, argv in zip(sigs, argvs, strict=True):
        assert f"Imported XP {sig}" in out, out
        argv_file = fresh / "outputs" / "xps" / sig / ".argv.json"
        assert json.loads(argv_file.read_text()) == argv
