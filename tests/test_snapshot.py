"""adora.snapshot: which files, their hash, stored once, atomically, and shipped as a tar."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import threading
import typing as tp
from pathlib import Path

import pytest

from adora.snapshot import (
    MODE_EXEC,
    MODE_FILE,
    MODE_LINK,
    FileEntry,
    SnapshotChangedError,
    extract_tar,
    file_mode,
    install_command,
    keep_path,
    list_files,
    manifest,
    materialize,
    parse_ls_files,
    skipped_outside_git,
    snapshot,
    snapshot_hash,
    tar_bytes,
    volatile,
)


def git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                          text=True, env=env).stdout


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    write(root, {
        ".gitignore": "*.log\ndata/\noutputs/\n",
        "pkg/__init__.py": "",
        "pkg/train.py": "VERSION = 1\n",
        "pkg/grids/sweep.py": "# grid\n",
        "README.md": "hello\n",
    })
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "first")
    return root


def tree(folder: Path) -> dict[str, tp.Any]:
    """Relative path -> content (files) or ('link', target), skipping folders."""
    out: dict[str, tp.Any] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_file():
            out[rel] = path.read_bytes()
    return out


# -- pure parts ------------------------------------------------------------------------------

def test_parse_ls_files() -> None:
    assert parse_ls_files(b"b.py\0a.py\0b.py\0dir/c d.py\0") == ["a.py", "b.py", "dir/c d.py"]
    assert parse_ls_files(b"") == []


def test_keep_path_and_walk_filters() -> None:
    assert keep_path("pkg/train.py", ["outputs"])
    assert not keep_path("outputs/xps/abc/history.json", ["outputs"])
    assert keep_path("outputs2/x", ["outputs"])  # a prefix of parts, not of characters
    assert not keep_path("a/b/c", ["a/b"])
    assert volatile("pkg/__pycache__/train.cpython-311.pyc") and volatile("a.pyc")
    assert not volatile("pkg/train.py") and not volatile("__pycache__")
    assert skipped_outside_git("pkg/__pycache__/train.cpython-311.pyc")
    assert skipped_outside_git("x.pyc") and skipped_outside_git(".venv/lib/site.py")
    assert not skipped_outside_git("pkg/train.py")


def test_file_mode() -> None:
    assert file_mode(0o100644) == MODE_FILE
    assert file_mode(0o100744) == MODE_EXEC
    assert file_mode(0o120777) == MODE_LINK


def test_hash_depends_on_paths_modes_and_contents_only() -> None:
    a = FileEntry("a.py", MODE_FILE, "0" * 64, 3)
    b = FileEntry("b/c.py", MODE_EXEC, "1" * 64, 5)
    assert snapshot_hash([a, b]) == snapshot_hash([b, a])  # order does not matter
    assert manifest([a, b]) == manifest([b, a])
    assert snapshot_hash([a, b]) != snapshot_hash([a])
    assert snapshot_hash([a]) != snapshot_hash([FileEntry("a.py", MODE_EXEC, "0" * 64, 3)])
    assert snapshot_hash([a]) != snapshot_hash([FileEntry("a2.py", MODE_FILE, "0" * 64, 3)])
    assert snapshot_hash([a]) != snapshot_hash([FileEntry("a.py", MODE_FILE, "2" * 64, 3)])
    # A path cannot be forged from the separators.
    assert snapshot_hash([FileEntry("x\0y", MODE_FILE, "0" * 64, 1)]) != snapshot_hash([])


def test_install_command_rejects_bad_hashes() -> None:
    for bad in ("", "../x", ".hidden", "a/b"):
        with pytest.raises(ValueError):
            install_command(bad, "/tmp/codes")


# -- which files -------------------------------------------------------------------------------

def test_git_tracked_and_untracked_not_ignored(repo: Path) -> None:
    write(repo, {"pkg/new_module.py": "x = 1\n",        # untracked, not ignored: included
                 "train.log": "noise\n",                # ignored by *.log
                 "data/big.bin": "0" * 1000,            # ignored folder
                 "outputs/xps/a/history.json": "[]",    # ignored output folder
                 "pkg/__pycache__/train.cpython-311.pyc": "bytecode",  # not ignored
                 "myenv/pyvenv.cfg": "", "myenv/lib/site.py": ""})     # nor this venv
    (repo / "README.md").unlink()                      # deleted, not committed yet
    assert list_files(repo) == [".gitignore", "pkg/__init__.py", "pkg/grids/sweep.py",
                                "pkg/new_module.py", "pkg/train.py", "run.sh"]


def test_excluded_output_folder_even_if_not_ignored(repo: Path) -> None:
    (repo / ".gitignore").write_text("")
    write(repo, {"results/xps/a/history.json": "[]", "results2/keep.txt": "k"})
    files = list_files(repo, exclude=[repo / "results"])
    assert "results2/keep.txt" in files
    assert not any(f.startswith("results/") for f in files)
    assert list_files(repo, exclude=["results"]) == files  # relative to the root works too


def test_subfolder_of_a_repo_lists_its_own_files(repo: Path) -> None:
    assert list_files(repo / "pkg") == ["__init__.py", "grids/sweep.py", "train.py"]


def test_outside_git_walks_and_skips_tool_folders(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    write(root, {"pkg/train.py": "", "pkg/__pycache__/t.pyc": "", "pkg/old.pyc": "",
                 ".git/HEAD": "", "env/pyvenv.cfg": "", "env/lib/x.py": "",
                 ".venv/lib/y.py": "", ".mypy_cache/z": "", "outputs/xps/a/h.json": "",
                 "notes.txt": "n", "sub.egg-info/PKG-INFO": ""})
    assert list_files(root, exclude=[root / "outputs"]) == ["notes.txt", "pkg/train.py"]


def test_symlinks_and_modes_are_recorded(repo: Path) -> None:
    os.symlink("pkg/train.py", repo / "link.py")
    snap = snapshot(repo)
    by_path = {e.path: e for e in snap.entries}
    assert by_path["link.py"].mode == MODE_LINK
    assert by_path["link.py"].digest == hashlib.sha256(b"pkg/train.py").hexdigest()
    assert by_path["run.sh"].mode == MODE_EXEC
    assert by_path["pkg/train.py"].mode == MODE_FILE
    assert by_path["pkg/train.py"].digest == hashlib.sha256(b"VERSION = 1\n").hexdigest()
    assert snap.size == sum(e.size for e in snap.entries) and len(snap) == len(by_path)


# -- hash and storage ------------------------------------------------------------------------------

def test_uncommitted_changes_change_the_hash(repo: Path) -> None:
    first = snapshot(repo)
    assert snapshot(repo).hash == first.hash  # stable
    subprocess.run([sys.executable, "-m", "compileall", "-q", "pkg"], cwd=repo, check=True)
    assert (repo / "pkg" / "__pycache__").is_dir()
    assert snapshot(repo).hash == first.hash  # running the code changes nothing
    (repo / "pkg" / "train.py").write_text("VERSION = 2\n")  # not committed
    second = snapshot(repo)
    assert second.hash != first.hash
    (repo / "pkg" / "train.py").write_text("VERSION = 1\n")
    assert snapshot(repo).hash == first.hash  # back to the same code, same hash
    (repo / "run.sh").chmod(0o644)
    assert snapshot(repo).hash != first.hash  # the mode counts


def test_same_code_elsewhere_same_hash(repo: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    os.utime(clone / "pkg" / "train.py", (1, 1))  # times do not count
    assert snapshot(clone).hash == snapshot(repo).hash


def test_materialize_once_per_code(repo: Path, tmp_path: Path) -> None:
    codes = tmp_path / "codes"
    snap = snapshot(repo)
    folder = materialize(snap, codes)
    assert folder == codes / snap.hash
    assert tree(folder) == {e.path: (repo / e.path).read_bytes() for e in snap.entries}
    assert os.access(folder / "run.sh", os.X_OK)
    assert not os.access(folder / "pkg" / "train.py", os.X_OK)
    stamp = (folder / "pkg" / "train.py").stat().st_mtime_ns
    # Same code again: same folder, nothing rewritten, nothing left behind.
    assert materialize(snapshot(repo), codes) == folder
    assert (folder / "pkg" / "train.py").stat().st_mtime_ns == stamp
    assert [p.name for p in codes.iterdir()] == [snap.hash]
    # New code: a second folder; the first is untouched.
    (repo / "pkg" / "train.py").write_text("VERSION = 2\n")
    other = materialize(snapshot(repo), codes)
    assert other != folder and sorted(p.name for p in codes.iterdir()) == \
        sorted([folder.name, other.name])
    assert (folder / "pkg" / "train.py").read_text() == "VERSION = 1\n"
    assert (other / "pkg" / "train.py").read_text() == "VERSION = 2\n"


def test_materialize_concurrently_stores_one_copy(repo: Path, tmp_path: Path) -> None:
    codes = tmp_path / "codes"
    snap = snapshot(repo)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(materialize(snap, codes)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) == {codes / snap.hash}
    assert [p.name for p in codes.iterdir()] == [snap.hash]  # no temporary folder left


def test_a_file_changed_after_the_snapshot_is_refused(repo: Path, tmp_path: Path) -> None:
    codes = tmp_path / "codes"
    snap = snapshot(repo)
    (repo / "pkg" / "train.py").write_text("VERSION = 3\n")
    with pytest.raises(SnapshotChangedError, match="train.py"):
        materialize(snap, codes)
    with pytest.raises(SnapshotChangedError):
        tar_bytes(snap)
    assert list(codes.iterdir()) == []  # nothing half-written under the hash


def test_on_create_runs_once_before_publishing(repo: Path, tmp_path: Path) -> None:
    seen: list[Path] = []

    def hook(folder: Path) -> None:
        seen.append(folder)
        assert folder.name.startswith(".tmp-")
        (folder / "built.txt").write_text("ok")

    snap = snapshot(repo)
    folder = materialize(snap, tmp_path / "codes", on_create=hook)
    materialize(snap, tmp_path / "codes", on_create=hook)
    assert len(seen) == 1 and (folder / "built.txt").read_text() == "ok"


# -- shipping ----------------------------------------------------------------------------------

def test_tar_is_deterministic_and_round_trips(repo: Path, tmp_path: Path) -> None:
    os.symlink("pkg/train.py", repo / "link.py")
    snap = snapshot(repo)
    data = tar_bytes(snap)
    os.utime(repo / "pkg" / "train.py", (5, 5))
    assert tar_bytes(snapshot(repo)) == data  # same code, same bytes
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [e.path for e in snap.entries]
    assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in members)
    out = extract_tar(data, tmp_path / "remote", snap.hash)
    assert out == tmp_path / "remote" / snap.hash
    assert tree(out) == tree(materialize(snap, tmp_path / "local"))
    assert os.access(out / "run.sh", os.X_OK)
    assert extract_tar(b"not even gzip", tmp_path / "remote", snap.hash) == out  # present: skip


def test_install_command_installs_once(repo: Path, tmp_path: Path) -> None:
    snap = snapshot(repo)
    data = tar_bytes(snap)
    dest = tmp_path / "remote codes"  # a space: the command quotes its paths
    cmd = install_command(snap.hash, str(dest))
    for _ in range(2):
        proc = subprocess.run(["sh", "-c", cmd], input=data, capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    assert [p.name for p in dest.iterdir()] == [snap.hash]
    assert tree(dest / snap.hash) == tree(materialize(snap, tmp_path / "local"))
    # A broken upload leaves nothing under the hash.
    bad = install_command("f" * 64, str(dest))
    proc = subprocess.run(["sh", "-c", bad], input=b"garbage", capture_output=True, timeout=60)
    assert proc.returncode != 0
    assert [p.name for p in dest.iterdir()] == [snap.hash]
