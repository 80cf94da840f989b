"""git_save: jobs run from a snapshot of the code (local and Slurm backends, adora run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import typing as tp
from pathlib import Path

import pytest

from adora.conf import DoraConfig
from adora.git_save import (
    GIT_SAVE_DONE_ENV,
    ORIGINAL_DIR_ENV,
    assign_clone,
    launch_spec,
    project_root,
    rerun_command,
    to_absolute_path,
)
from adora.jobs import load_record
from adora.xp import XP
from tests.conftest import EXAMPLES, adora_cli

TRAIN = textwrap.dedent("""
    import argparse, os, time
    from adora import argparse_main, get_xp, to_absolute_path

    VERSION = "v1"

    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--epoch_time", type=float, default=0.0)

    @argparse_main(parser=parser, dir="./outputs", exclude=["epoch_time"], git_save=True)
    def main():
        xp = get_xp()
        start = len(xp.link.history)
        if start:
            print(f"Resuming at epoch {start}", flush=True)
        for epoch in range(start, xp.cfg.epochs):
            time.sleep(xp.cfg.epoch_time)
            xp.link.push_metrics({
                "epoch": epoch + 1, "version": VERSION, "file": __file__, "cwd": os.getcwd(),
                "data": str(to_absolute_path("data.txt")), "dir": str(xp.dora.dir)})
            print(f"epoch {epoch + 1} {VERSION}", flush=True)
""")


def git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                          text=True, env=env).stdout


def write_grid(root: Path, body: str) -> None:
    (root / "gs" / "grids" / "g.py").write_text(
        "from adora import Explorer\n\n@Explorer\ndef explorer(launcher):\n"
        + textwrap.indent(textwrap.dedent(body), "    "))


def set_version(root: Path, version: str) -> None:
    train = root / "gs" / "train.py"
    train.write_text(train.read_text().replace('VERSION = "v1"', f'VERSION = "{version}"'))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git repository holding the package `gs` (git_save=True); outputs/ is ignored."""
    root = tmp_path / "proj"
    (root / "gs" / "grids").mkdir(parents=True)
    (root / "gs" / "__init__.py").write_text("")
    (root / "gs" / "grids" / "__init__.py").write_text("")
    (root / "gs" / "train.py").write_text(TRAIN)
    (root / ".gitignore").write_text("outputs/\n__pycache__/\n")
    write_grid(root, "launcher(seed=0)\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "v1")
    return root


def env_for(backend: str = "local", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in (ORIGINAL_DIR_ENV, GIT_SAVE_DONE_ENV, "_DORA_ORIGINAL_DIR", "RANK",
                        "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(ADORA_BACKEND=backend, **extra)
    return env


def xp_folders(root: Path) -> dict[int, Path]:
    """XP folders by their --seed."""
    out = {}
    for folder in (root / "outputs" / "xps").iterdir():
        argv = json.loads((folder / ".argv.json").read_text())
        seed = next((int(a.split("=")[1]) for a in argv if a.startswith("--seed=")), 0)
        out[seed] = folder
    return out


def history(folder: Path) -> list[dict[str, tp.Any]]:
    path = folder / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_history(folder_of: tp.Callable[[], Path | None], length: int, timeout: float = 180
                 ) -> list[dict[str, tp.Any]]:
    deadline = time.monotonic() + timeout
    while True:
        folder = folder_of()
        entries = history(folder) if folder is not None else []
        if len(entries) >= length:
            return entries
        assert time.monotonic() < deadline, f"{folder}: {len(entries)} of {length} epochs"
        time.sleep(0.3)


def codes(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "outputs" / "codes").iterdir())


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


# -- helpers -----------------------------------------------------------------------------------

def test_to_absolute_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ORIGINAL_DIR_ENV, raising=False)
    monkeypatch.delenv("_DORA_ORIGINAL_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert to_absolute_path("data") == str(tmp_path / "data")
    assert to_absolute_path(Path("data")) == tmp_path / "data"
    assert to_absolute_path("/abs/x") == "/abs/x"
    monkeypatch.setenv("_DORA_ORIGINAL_DIR", "/from/dora")  # Dora's variable is honoured
    assert to_absolute_path("data") == "/from/dora/data"
    monkeypatch.setenv(ORIGINAL_DIR_ENV, "/started/here")
    assert to_absolute_path(Path("data")) == Path("/started/here/data")
    assert DoraConfig(dir=Path("outs")).dir == Path("/started/here/outs")


def test_assign_clone_links_relatively_and_keeps_an_old_folder(tmp_path: Path) -> None:
    xp = XP(dora=DoraConfig(dir=tmp_path / "outputs", git_save=True), cfg=None, argv=[],
            delta=[("a", 1)])
    first = tmp_path / "outputs" / "codes" / "aaa"
    second = tmp_path / "outputs" / "codes" / "bbb"
    first.mkdir(parents=True)
    second.mkdir()
    xp.folder.mkdir(parents=True)
    (xp.folder / "code").mkdir()  # a real folder left by an older tool
    assign_clone(xp, first)
    assert (xp.folder / "old_code").is_dir()
    assert os.readlink(xp.folder / "code") == "../../codes/aaa"
    assert xp.code_folder.resolve() == first
    assign_clone(xp, second)  # rescheduling re-points the link
    assert xp.code_folder.resolve() == second


def test_rerun_command() -> None:
    class M:
        package, main_module = "pkg", "train"

    cmd = rerun_command(M(), ["--a=1"], ddp=True, ddp_workers=2, verbose=True)  # type: ignore
    assert cmd == [sys.executable, "-m", "adora", "-P", "pkg", "--main-module", "train", "-v",
                   "run", "-d", "--ddp-workers", "2", "--", "--a=1"]


def test_project_root(project: Path, tmp_path: Path) -> None:
    assert project_root(project / "gs" / "grids") == project.resolve()
    plain = tmp_path / "plain"
    plain.mkdir()
    assert project_root(plain) == plain.resolve()


# -- local backend -----------------------------------------------------------------------------

def test_local_grid_runs_each_submission_from_its_snapshot(project: Path) -> None:
    (project / "data.txt").write_text("data")
    ok(adora_cli("grid", "g", cwd=project, env=env_for()))
    xp0 = wait_history(lambda: xp_folders(project).get(0), 2)
    [v1] = codes(project)
    snap = project / "outputs" / "codes" / v1
    assert {e["version"] for e in xp0} == {"v1"}
    assert xp0[0]["file"] == str(snap / "gs" / "train.py")  # the code ran from the snapshot
    assert xp0[0]["cwd"] == str(snap)
    # ... but relative paths resolve against the project, where outputs/ stays.
    assert xp0[0]["data"] == str(project / "data.txt")
    assert xp0[0]["dir"] == str(project / "outputs")
    folder0 = xp_folders(project)[0]
    assert (folder0 / "code").resolve() == snap
    assert not (snap / "outputs").exists()  # never snapshot the outputs
    assert not (snap / "gs" / "grids").exists()  # nor the grids (editing one is no new code)

    # Uncommitted edit (no clean repo needed) and a new XP: a new snapshot for it.
    set_version(project, "v2")
    write_grid(project, "launcher(seed=0)\nlauncher(seed=1)\n")
    ok(adora_cli("grid", "g", cwd=project, env=env_for()))
    xp1 = wait_history(lambda: xp_folders(project).get(1), 2)
    assert {e["version"] for e in xp1} == {"v2"}
    assert len(codes(project)) == 2
    v2 = (xp_folders(project)[1] / "code").resolve()
    assert v2 != snap and xp1[0]["file"] == str(v2 / "gs" / "train.py")
    assert (folder0 / "code").resolve() == snap  # XP 0 was not resubmitted: still v1
    assert (snap / "gs" / "train.py").read_text().count('VERSION = "v1"') == 1

    # The same code again: no new snapshot, the new XP shares the v2 one.
    write_grid(project, "launcher(seed=0)\nlauncher(seed=1)\nlauncher(seed=2)\n")
    ok(adora_cli("grid", "g", cwd=project, env=env_for()))
    wait_history(lambda: xp_folders(project).get(2), 2)
    assert len(codes(project)) == 2
    assert (xp_folders(project)[2] / "code").resolve() == v2

    # --no-git-save: from the working tree, no snapshot, no code link.
    write_grid(project, "launcher(seed=0)\nlauncher(seed=1)\nlauncher(seed=2)\n"
                        "launcher(seed=3)\n")
    set_version(project, "v3")
    proc = ok(adora_cli("grid", "g", "--no_git_save", cwd=project, env=env_for()))
    xp3 = wait_history(lambda: xp_folders(project).get(3), 2)
    assert xp3[0]["file"] == str(project / "gs" / "train.py"), proc.stderr
    assert not (xp_folders(project)[3] / "code").exists()
    assert len(codes(project)) == 2


def test_launch_with_and_without_git_save(project: Path) -> None:
    ok(adora_cli("launch", "--no-tail", "--", "--seed=7", cwd=project, env=env_for()))
    entries = wait_history(lambda: xp_folders(project).get(7), 2)
    [code] = codes(project)
    assert entries[0]["file"] == str(project / "outputs" / "codes" / code / "gs" / "train.py")
    ok(adora_cli("launch", "--no-git-save", "--no-tail", "--", "--seed=8", cwd=project,
                 env=env_for()))
    entries = wait_history(lambda: xp_folders(project).get(8), 2)
    assert entries[0]["file"] == str(project / "gs" / "train.py")


def test_grid_snapshots_only_when_submitting(project: Path) -> None:
    ok(adora_cli("grid", "g", "--dry-run", cwd=project, env=env_for()))
    assert not (project / "outputs" / "codes").exists()


def test_snapshot_from_a_subfolder_of_the_repository(project: Path) -> None:
    # The package lives in sub/ of the repository: the whole repository is snapshotted and
    # the job starts in the matching subfolder.
    sub = project / "sub"
    sub.mkdir()
    (project / "gs").rename(sub / "gs")
    (project / "top.txt").write_text("top")
    ok(adora_cli("grid", "g", cwd=sub, env=env_for()))
    entries = wait_history(lambda: (sub / "outputs" / "xps").exists() and
                           xp_folders(sub).get(0), 2)  # type: ignore[arg-type,return-value]
    [code] = sorted(p.name for p in (sub / "outputs" / "codes").iterdir())
    snap = sub / "outputs" / "codes" / code
    assert entries[0]["cwd"] == str(snap / "sub")
    assert (snap / "top.txt").read_text() == "top"
    assert not (snap / "sub" / "outputs").exists()


# -- adora run --git-save ------------------------------------------------------------------------

def test_run_git_save_reexecutes_from_the_snapshot(project: Path) -> None:
    (project / "gs" / "extra.py").write_text("# untracked, not ignored\n")
    ok(adora_cli("run", "--git-save", "--", "--seed=4", cwd=project, env=env_for()))
    [code] = codes(project)
    snap = project / "outputs" / "codes" / code
    folder = xp_folders(project)[4]
    entries = history(folder)
    assert [e["epoch"] for e in entries] == [1, 2]
    assert entries[0]["file"] == str(snap / "gs" / "train.py")
    assert entries[0]["dir"] == str(project / "outputs")
    assert (folder / "code").resolve() == snap
    assert (snap / "gs" / "extra.py").exists()
    # Without --git-save, `adora run` uses the working tree (as Dora).
    ok(adora_cli("run", "--", "--seed=5", cwd=project, env=env_for()))
    assert history(xp_folders(project)[5])[0]["file"] == str(project / "gs" / "train.py")
    # Same code: the same snapshot is reused.
    ok(adora_cli("run", "--git_save", "--clear", "--", "--seed=4", cwd=project, env=env_for()))
    assert codes(project) == [code]


def test_run_git_save_with_ddp_workers(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    root = tmp_path / "ddp"
    shutil.copytree(EXAMPLES / "ddp_toy", root,
                    ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    train = root / "ddp_toy" / "train.py"
    train.write_text(train.read_text() + textwrap.dedent("""
        import os as _os
        from pathlib import Path as _Path
        from adora import to_absolute_path as _abs
        _Path(_abs(f"where_{_os.environ.get('RANK')}.txt")).write_text(__file__)
    """))
    env = {k: v for k, v in env_for().items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    proc = ok(adora_cli("run", "--git-save", "-d", "--ddp-workers", "2", "--", "--epochs=2",
                        cwd=root, env=env))
    [folder] = (root / "outputs" / "xps").iterdir()
    [code] = sorted(p.name for p in (root / "outputs" / "codes").iterdir())
    assert (folder / "code").resolve() == root / "outputs" / "codes" / code
    assert [json.loads(line)["world_size"] for line in
            (folder / "history.jsonl").read_text().splitlines()] == [2, 2]
    # Both workers ran the snapshot's code.
    for rank in (0, 1):
        where = (root / f"where_{rank}.txt").read_text()
        assert where == str(root / "outputs" / "codes" / code / "ddp_toy" / "train.py")
    assert "All 2 DDP worker(s) completed" in proc.stderr


# -- Hydra: dora.git_save in the config ----------------------------------------------------------

def test_hydra_config_git_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("hydra")
    root = tmp_path / "hydra_toy"
    shutil.copytree(EXAMPLES / "hydra_toy", root,
                    ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    config = root / "htoy" / "config" / "config.yaml"
    config.write_text(config.read_text().replace("dora:\n", "dora:\n  git_save: true\n"))
    proc = ok(adora_cli("run", "--git-save", "--", "optim.epochs=1", cwd=root, env=env_for()))
    [folder] = (root / "outputs" / "xps").iterdir()
    [code] = sorted(p.name for p in (root / "outputs" / "codes").iterdir())
    assert (folder / "code").resolve() == root / "outputs" / "codes" / code
    assert (folder / "history.jsonl").exists(), proc.stderr

    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delenv(ORIGINAL_DIR_ENV, raising=False)
    from adora.package import load_main

    for name in [m for m in sys.modules if m == "htoy" or m.startswith("htoy.")]:
        monkeypatch.delitem(sys.modules, name)
    main = load_main("htoy")
    assert main.dora.git_save
    xp = main.get_xp(["optim.epochs=2"])
    spec = launch_spec(main, [xp])
    assert spec.cwd == root / "outputs" / "codes" / code  # unchanged code: same snapshot
    assert spec.env[ORIGINAL_DIR_ENV] == str(root)
    assert (xp.folder / "code").resolve() == spec.cwd
    main.dora.git_save = False
    assert launch_spec(main, [xp]).cwd == root
    # With use_rendezvous, a stale rendezvous file is removed before submitting.
    main.dora.use_rendezvous = True
    xp.rendezvous_file.write_text("stale")
    launch_spec(main, [xp])
    assert not xp.rendezvous_file.exists()


# -- Slurm: a requeued job runs the code it was submitted with -------------------------------------

def job_id_of(folder: Path) -> str:
    record = load_record(folder)
    assert record is not None and record.job_id
    return record.job_id


def job_state(job_id: str) -> str:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id],
                         capture_output=True, text=True).stdout.split()
    return out[0] if out else ""


@pytest.mark.slurm
def test_slurm_requeued_job_keeps_its_code(project: Path, slurm_env: tp.Any) -> None:
    env = env_for("slurm", ADORA_CACHE_DIR=str(project / ".cache"))
    write_grid(project, """
        launcher.slurm_(gpus=0, mem_per_gpu=None, cpus_per_gpu=1, time=10)
        launcher(seed=0, epochs=25, epoch_time=0.4)
    """)
    ids: list[str] = []
    try:
        ok(adora_cli("grid", "g", cwd=project, env=env))
        folder0 = xp_folders(project)[0]
        ids.append(job_id_of(folder0))
        wait_history(lambda: folder0, 3)
        [v1] = codes(project)

        # Edit the code, then requeue the running job: it restarts from its own snapshot.
        set_version(project, "v2")
        subprocess.run(["scontrol", "requeue", ids[0]], check=True, capture_output=True)
        # The next submission (a new XP) takes the edited code, in a new snapshot.
        write_grid(project, """
            launcher.slurm_(gpus=0, mem_per_gpu=None, cpus_per_gpu=1, time=10)
            launcher(seed=0, epochs=25, epoch_time=0.4)
            launcher(seed=1, epochs=3)
        """)
        ok(adora_cli("grid", "g", cwd=project, env=env))
        folder1 = xp_folders(project)[1]
        ids.append(job_id_of(folder1))
        xp1 = wait_history(lambda: folder1, 3, timeout=240)
        assert {e["version"] for e in xp1} == {"v2"}

        xp0 = wait_history(lambda: folder0, 25, timeout=300)
        assert [e["epoch"] for e in xp0] == list(range(1, 26))
        assert {e["version"] for e in xp0} == {"v1"}  # before and after the requeue
        snap0 = project / "outputs" / "codes" / v1
        assert {e["file"] for e in xp0} == {str(snap0 / "gs" / "train.py")}
        assert {e["dir"] for e in xp0} == {str(project / "outputs")}
        log = (folder0 / "latest").resolve()
        text = "".join(p.read_text() for p in log.glob(f"{ids[0]}_*log.out"))
        assert "Resuming at epoch" in text  # it did restart
        assert "v2" not in text

        assert len(codes(project)) == 2
        assert (folder0 / "code").resolve() == snap0
        assert (folder1 / "code").resolve() != snap0
        deadline = time.monotonic() + 60
        while job_state(ids[0]) != "COMPLETED":
            assert time.monotonic() < deadline, job_state(ids[0])
            time.sleep(1)
    finally:
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=60)
