"""The first adora commands end to end, through `python -m adora`: run, info, export, import."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import pytest

try:
    from tests.conftest import EXAMPLES, adora_cli
except ImportError:  # tests/ is not a package
    from conftest import EXAMPLES, adora_cli  # type: ignore[no-redef]

COLLIDING_SEEDS = (74759, 77789)  # toy seeds whose signatures are both 3eb933f3
COLLIDING_SIG = "3eb933f3"


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def clean_error(proc: subprocess.CompletedProcess[str], *words: str,
                code: int | None = None) -> str:
    """Assert the command failed with an adora error message naming ``words``, no traceback."""
    assert proc.returncode != 0, proc.stdout
    if code is not None:
        assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "adora: error:" in proc.stderr, proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)
    return proc.stderr


def info(root: Path, *args: str) -> dict[str, str]:
    """`adora info -m ARGS` as a dict of its `key: value` lines."""
    out = ok(adora_cli("info", "-m", *args, cwd=root)).stdout
    fields = {}
    for line in out.splitlines():
        key, _, value = line.partition(": ")
        fields[key] = value
    return fields


def history_lines(root: Path, sig: str) -> list[bytes]:
    path = root / "outputs" / "xps" / sig / "history.jsonl"
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


def test_run_then_info(toy_project: Path) -> None:
    proc = ok(adora_cli("run", "--", "--epochs", "2", cwd=toy_project))
    assert "epoch 2/2" in proc.stdout
    fields = info(toy_project, "--", "--epochs=2")  # same XP, spelt differently
    sig = fields["sig"]
    assert fields["name"] == "epochs=2"
    assert json.loads(fields["argv"]) == ["--epochs=2"]
    folder = toy_project / "outputs" / "xps" / sig
    assert fields["folder"] == str(folder)
    assert fields["Metrics[2]"].startswith("{")
    last = json.loads(fields["Metrics[2]"])
    assert set(last) == {"train", "valid"} and "loss" in last["valid"]
    assert json.loads((folder / ".argv.json").read_text()) == ["--epochs", "2"]
    assert json.loads(history_lines(toy_project, sig)[-1]) == last
    # info on an XP that never ran
    fresh = info(toy_project, "--", "--epochs=3")
    assert fresh["folder"].endswith("(not created yet)")
    assert fresh["Metrics[0]"] == "none"


def test_crash_then_rerun_continues_the_history(toy_project: Path) -> None:
    proc = adora_cli("run", "--", "--epochs", "4", "--fail_at", "2", cwd=toy_project)
    assert proc.returncode != 0
    assert "Failing on purpose at epoch 2" in proc.stderr  # the user's own error, shown
    sig = info(toy_project, "--", "--epochs", "4", "--fail_at", "2")["sig"]
    first = history_lines(toy_project, sig)
    assert len(first) == 2

    # `run -f SIG` reruns the same XP: it resumes at epoch 2 (and fails there again).
    proc = adora_cli("run", "-f", sig, cwd=toy_project)
    assert proc.returncode != 0
    assert f"Resuming {sig} at epoch 2" in proc.stdout
    assert "epoch 1/4" not in proc.stdout
    assert history_lines(toy_project, sig) == first  # no duplicate, nothing lost
    assert info(toy_project, "-f", sig)["Metrics[2]"] == json.dumps(json.loads(first[-1]))


def test_killed_run_resumes_without_duplicates(toy_project: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ADORA_PACKAGE", "DORA_PACKAGE", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "adora", "run", "--", "--epochs", "6", "--epoch_time", "0.2"],
        cwd=toy_project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    jsonl = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = list((toy_project / "outputs" / "xps").glob("*/history.jsonl"))
            if found and len(found[0].read_bytes().splitlines()) >= 2:
                jsonl = found[0]
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # preempted, no chance to clean up
    finally:
        proc.kill()
        proc.communicate()
    assert jsonl is not None, "the run never pushed 2 epochs"
    sig = jsonl.parent.name
    before = jsonl.read_bytes().splitlines(keepends=True)
    assert 2 <= len(before) < 6

    # epoch_time is excluded from the signature: this is the same XP.
    rerun = ok(adora_cli("run", "--", "--epochs", "6", cwd=toy_project))
    assert f"Resuming {sig} at epoch {len(before)}" in rerun.stdout
    after = history_lines(toy_project, sig)
    assert len(after) == 6
    assert after[:len(before)] == before
    epochs = re.findall(r"^epoch (\d+)/6 ", rerun.stdout, re.MULTILINE)
    assert epochs == [str(e) for e in range(len(before) + 1, 7)]


def test_run_clear_restarts_from_scratch(toy_project: Path) -> None:
    ok(adora_cli("run", "--", "--epochs", "2", cwd=toy_project))
    sig = info(toy_project, "--", "--epochs", "2")["sig"]
    folder = toy_project / "outputs" / "xps" / sig
    (folder / "marker").write_text("old")
    first = history_lines(toy_project, sig)

    again = ok(adora_cli("run", "--", "--epochs", "2", cwd=toy_project))
    assert f"Resuming {sig} at epoch 2" in again.stdout
    assert history_lines(toy_project, sig) == first
    assert (folder / "marker").exists()

    cleared = ok(adora_cli("run", "--clear", "--", "--epochs", "2", cwd=toy_project))
    assert "Resuming" not in cleared.stdout
    assert "epoch 1/2" in cleared.stdout and "epoch 2/2" in cleared.stdout
    assert not (folder / "marker").exists()
    assert len(history_lines(toy_project, sig)) == 2
    assert json.loads((folder / ".argv.json").read_text()) == ["--epochs", "2"]


def test_export_import_round_trip(toy_project: Path, tmp_path: Path) -> None:
    ok(adora_cli("run", "--", "--epochs", "1", "--lr", "0.1", cwd=toy_project))
    ok(adora_cli("run", "--", "--epochs", "1", "--hidden=3", cwd=toy_project))
    sig_a = info(toy_project, "--", "--epochs", "1", "--lr", "0.1")["sig"]
    sig_b = info(toy_project, "--", "--epochs", "1", "--hidden=3")["sig"]
    block = ok(adora_cli("export", sig_a, sig_b, cwd=toy_project)).stdout
    # Dora's format: base64(zlib(json([argv, ...]))) wrapped at 70 columns.
    text = "".join(block.split())
    assert json.loads(zlib.decompress(base64.b64decode(text))) == [
        ["--epochs", "1", "--lr", "0.1"], ["--epochs", "1", "--hidden=3"]]
    assert all(len(line) <= 70 for line in block.splitlines())

    other = tmp_path / "colleague"
    shutil.copytree(EXAMPLES / "toy", other,
                    ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    clean_error(adora_cli("info", "-f", sig_a, cwd=other), sig_a)  # unknown there before

    imported = ok(adora_cli("import", cwd=other, input=block + "\n"))
    assert f"Imported XP {sig_a}: " in imported.stdout
    assert f"Imported XP {sig_b}: " in imported.stdout
    fields = info(other, "-f", sig_a)
    assert fields["sig"] == sig_a
    assert json.loads(fields["argv"]) == ["--epochs", "1", "--lr", "0.1"]
    assert fields["Metrics[0]"] == "none"  # argvs travel, not results
    assert json.loads((other / "outputs" / "xps" / sig_b / ".argv.json").read_text()) == [
        "--epochs", "1", "--hidden=3"]


# -- errors: a message and an exit status, never a traceback ----------------------------------

def test_unknown_package_error(toy_project: Path) -> None:
    clean_error(adora_cli("-P", "nope", "run", cwd=toy_project), "nope", "-P")


def test_no_package_found_error(tmp_path: Path) -> None:
    clean_error(adora_cli("run", cwd=tmp_path), "ADORA_PACKAGE", code=2)


def test_unknown_training_argument_error(toy_project: Path) -> None:
    stderr = clean_error(adora_cli("run", "--", "--bogus", "3", cwd=toy_project), "--bogus",
                         code=2)
    assert "unrecognized arguments" in stderr
    clean_error(adora_cli("run", "--", "--lr", "fast", cwd=toy_project), "--lr", "fast")
    assert not (toy_project / "outputs").exists()


def test_unknown_sig_error(toy_project: Path) -> None:
    clean_error(adora_cli("run", "-f", "deadbeef", cwd=toy_project), "deadbeef")
    clean_error(adora_cli("info", "-f", "deadbeef", cwd=toy_project), "deadbeef")
    clean_error(adora_cli("export", "deadbeef", cwd=toy_project), "deadbeef")


def test_signature_collision_error(toy_project: Path) -> None:
    first, second = COLLIDING_SEEDS
    folder = toy_project / "outputs" / "xps" / COLLIDING_SIG
    folder.mkdir(parents=True)
    (folder / ".argv.json").write_text(json.dumps([f"--seed={first}"]))
    (folder / "history.jsonl").write_text('{"loss": 1.0}\n')
    proc = adora_cli("run", "--", f"--seed={second}", cwd=toy_project)
    clean_error(proc, COLLIDING_SIG, str(first), str(second))
    assert "collision" in proc.stderr.lower()
    assert "epoch" not in proc.stdout  # training never started
    assert json.loads((folder / ".argv.json").read_text()) == [f"--seed={first}"]
    assert (folder / "history.jsonl").read_text() == '{"loss": 1.0}\n'
    assert sorted(p.name for p in folder.iterdir()) == [".argv.json", "history.jsonl"]


@pytest.mark.parametrize("block", ["this is not an export block!\n\n",
                                   base64.b64encode(b"not zlib").decode() + "\n\n",
                                   base64.b64encode(zlib.compress(b"{not json")).decode()
                                   + "\n\n"])
def test_corrupted_import_block_error(toy_project: Path, block: str) -> None:
    clean_error(adora_cli("import", cwd=toy_project, input=block), "export")
    assert not (toy_project / "outputs").exists()


def test_empty_import_error(toy_project: Path) -> None:
    clean_error(adora_cli("import", cwd=toy_project, input=""), "Nothing to import")


# -- global options ---------------------------------------------------------------------------

def test_global_options_before_or_after_the_command(toy_project: Path) -> None:
    # With two packages, auto-detection fails and -P is required.
    shutil.copytree(toy_project / "toy", toy_project / "toy2")
    clean_error(adora_cli("run", "--", "--epochs", "1", cwd=toy_project), "toy, toy2")

    before = ok(adora_cli("-P", "toy2", "run", "--", "--epochs", "1", cwd=toy_project))
    after = ok(adora_cli("run", "-P", "toy2", "--", "--epochs", "1", cwd=toy_project))
    assert "epoch 1/1" in before.stdout and "Resuming" in after.stdout
    ok(adora_cli("info", "--package=toy", "--main-module", "train", "-m", "--", "--epochs=1",
                 cwd=toy_project))
    # After `--` everything is a training argument, -P included.
    proc = adora_cli("-P", "toy", "run", "--", "--epochs", "1", "-P", "x", cwd=toy_project)
    clean_error(proc, "-P")


def test_environment_package(toy_project: Path) -> None:
    shutil.copytree(toy_project / "toy", toy_project / "toy2")
    for var in ("ADORA_PACKAGE", "DORA_PACKAGE"):
        ok(adora_cli("info", "--", "--epochs=1", cwd=toy_project, env={var: "toy"}))


ENV_TRAIN = textwrap.dedent("""
    import argparse, json, os
    from adora import argparse_main, distrib, get_xp

    parser = argparse.ArgumentParser()
    parser.add_argument("--x", type=int, default=0)

    @argparse_main(parser=parser)
    def main():
        xp = get_xp()
        env = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        env.update(rank=distrib.rank(), world_size=distrib.world_size(),
                   master=distrib.is_master())
        (xp.folder / f"env_{env['RANK']}.json").write_text(json.dumps(env))
        xp.link.push_metrics({"x": xp.cfg.x})
""")


def test_run_sets_single_worker_distributed_defaults(tmp_path: Path) -> None:
    (tmp_path / "envpkg").mkdir()
    (tmp_path / "envpkg" / "__init__.py").write_text("")
    (tmp_path / "envpkg" / "train.py").write_text(ENV_TRAIN)
    ok(adora_cli("run", "--", "--x=1", cwd=tmp_path))
    [folder] = (tmp_path / "outputs" / "xps").iterdir()
    assert json.loads((folder / "env_0.json").read_text()) == {
        "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
        "rank": 0, "world_size": 1, "master": True}
    assert (folder / "history.jsonl").read_text() == '{"x": 1}\n'

    # Under a distributed launcher (torchrun), the given values are kept, and rank 1
    # leaves the history alone.
    ok(adora_cli("run", "--", "--x=1", cwd=tmp_path,
                 env={"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}))
    assert json.loads((folder / "env_1.json").read_text()) == {
        "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
        "rank": 1, "world_size": 2, "master": False}
    assert (folder / "history.jsonl").read_text() == '{"x": 1}\n'


# -- help and import weight -------------------------------------------------------------------

def test_help(tmp_path: Path) -> None:
    proc = ok(subprocess.run([sys.executable, "-m", "adora", "--help"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60))
    for command in ("run", "info", "export", "import"):
        assert command in proc.stdout
    assert "--package" in proc.stdout
    run_help = ok(subprocess.run([sys.executable, "-m", "adora", "run", "--help"], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=60))
    assert "--clear" in run_help.stdout and "--from-sig" in run_help.stdout


HEAVY = ("torch", "hydra", "omegaconf", "rich", "numpy", "submitit", "asyncssh")

LOADED = textwrap.dedent("""
    import sys
    {code}
    print(" ".join(m for m in {heavy!r} if m in sys.modules))
""")


def _loaded_after(code: str, cwd: Path) -> set[str]:
    script = LOADED.format(code=code, heavy=HEAVY)
    proc = ok(subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True,
                             text=True, timeout=60))
    return set(proc.stdout.split())


def test_import_adora_is_light(tmp_path: Path) -> None:
    assert _loaded_after("import adora", tmp_path) == set()


HELP = textwrap.dedent("""
    sys.argv = ["adora", "--help"]
    from adora.cli import main
    try:
        main()
    except SystemExit as exc:
        assert exc.code == 0, exc.code
""")


def test_help_imports_neither_torch_nor_hydra(tmp_path: Path) -> None:
    assert _loaded_after(HELP, tmp_path) & {"torch", "hydra", "omegaconf", "numpy"} == set()


def test_help_does_not_import_rich(tmp_path: Path) -> None:
    assert "rich" not in _loaded_after(HELP, tmp_path)


def test_only_grid_skips_the_interpreter_teardown(tmp_path: Path) -> None:
    # A command running training code must shut the interpreter down normally, so that
    # what the training started at exit time (here: an atexit hook) still runs.
    pkg = tmp_path / "exitpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "train.py").write_text(textwrap.dedent("""
        import argparse, atexit, pathlib
        from adora import argparse_main

        parser = argparse.ArgumentParser()
        parser.add_argument("--x", type=int, default=0)

        @argparse_main(parser=parser, dir="./outputs")
        def main():
            atexit.register(lambda: pathlib.Path("atexit-ran").write_text("yes"))
    """))
    proc = subprocess.run([sys.executable, "-m", "adora", "-P", "exitpkg", "run"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "atexit-ran").read_text() == "yes"
