"""Content-addressed snapshots of a project's code, to run jobs from code that no edit can touch.

A snapshot is the list of the project's files with their contents' hashes; its
own hash (``Snapshot.hash``) names it. The same code always gives the same
hash, so it is stored once, under ``<dest_root>/<hash>/``, whoever asks::

    snap = snapshot(Path("."), exclude=[Path("outputs")])
    code = materialize(snap, Path("outputs/codes"))   # outputs/codes/<hash>/, written once
    data = tar_bytes(snap)                             # the same files as a .tar.gz, to ship

The project's files are what git would commit, uncommitted changes included:
tracked files plus untracked files that ``.gitignore`` does not exclude
(``git ls-files --cached --others --exclude-standard``). Outside a git
repository, every file under the root except ``.git``, virtual environments
and tool caches. Never included: Python bytecode (``__pycache__``, ``*.pyc``),
folders holding a virtual environment, and paths in ``exclude`` (the output
folder).

Pure parts (`parse_ls_files`, `keep_path`, `volatile`, `skipped_outside_git`, `file_mode`,
`manifest`, `snapshot_hash`, `install_command`) are separate from the I/O (`list_files`,
`snapshot`, `materialize`, `tar_bytes`, `extract_tar`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import shlex
import shutil
import stat
import subprocess
import tarfile
import tempfile
import typing as tp
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import AdoraError

__all__ = ["FileEntry", "Snapshot", "SnapshotChangedError", "extract_tar", "file_mode",
           "install_command", "keep_path", "list_files", "manifest", "materialize",
           "parse_ls_files", "skipped_outside_git", "snapshot", "snapshot_hash", "tar_bytes",
           "volatile"]

logger = logging.getLogger(__name__)

#: Git's file modes: the only ones a snapshot records.
MODE_FILE, MODE_EXEC, MODE_LINK = 0o100644, 0o100755, 0o120000

#: Folder names never walked into outside a git repository.
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".venv", "venv", ".tox", ".nox",
                       ".mypy_cache", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints",
                       "node_modules", ".eggs"})
SKIP_SUFFIXES = (".pyc", ".pyo")

_CHUNK = 1 << 20


class SnapshotChangedError(AdoraError):
    """A file changed while it was being copied into a snapshot (try again)."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a snapshot: POSIX path relative to the root, git mode, sha256, size.

    For a symbolic link, ``digest`` hashes the link's target text.
    """

    path: str
    mode: int
    digest: str
    size: int


@dataclass(frozen=True)
class Snapshot:
    """The project's files at one moment; ``hash`` names the code (see `snapshot_hash`)."""

    root: Path
    entries: tuple[FileEntry, ...]
    hash: str

    @property
    def size(self) -> int:
        """Total bytes of the files."""
        return sum(e.size for e in self.entries)

    def __len__(self) -> int:
        return len(self.entries)


# -- pure --------------------------------------------------------------------------------------

def parse_ls_files(output: bytes) -> list[str]:
    """Paths from ``git ls-files -z`` output: decoded, deduplicated, sorted. Pure."""
    names = {os.fsdecode(name) for name in output.split(b"\0") if name}
    return sorted(names)


def keep_path(path: str, exclude: Sequence[str] = ()) -> bool:
    """False for a path under one of ``exclude`` (POSIX paths relative to the root). Pure."""
    parts = PurePosixPath(path).parts
    for prefix in exclude:
        prefix_parts = PurePosixPath(prefix).parts
        if parts[:len(prefix_parts)] == prefix_parts:
            return False
    return True


def volatile(path: str) -> bool:
    """True for Python's bytecode caches, never part of a snapshot (running the code would
    change its hash). Pure."""
    return "__pycache__" in PurePosixPath(path).parts[:-1] or path.endswith(SKIP_SUFFIXES)


def skipped_outside_git(path: str) -> bool:
    """True for what a walk outside git leaves out: files in `SKIP_DIRS`, compiled Python. Pure."""
    parts = PurePosixPath(path).parts
    return any(part in SKIP_DIRS for part in parts[:-1]) or path.endswith(SKIP_SUFFIXES)


def file_mode(st_mode: int) -> int:
    """Git's mode for a file: a link, an executable, or a plain file. Pure."""
    if stat.S_ISLNK(st_mode):
        return MODE_LINK
    return MODE_EXEC if st_mode & 0o111 else MODE_FILE


def manifest(entries: Iterable[FileEntry]) -> bytes:
    """The bytes a snapshot's hash is computed from: sorted (path, mode, content hash). Pure."""
    out = io.BytesIO()
    for entry in sorted(entries, key=lambda e: e.path):
        out.write(f"{entry.mode:o}\0{entry.digest}\0".encode())
        out.write(os.fsencode(entry.path) + b"\0")
    return out.getvalue()


def snapshot_hash(entries: Iterable[FileEntry]) -> str:
    """sha256 of the `manifest`: equal for equal code, whatever the root or the mtimes. Pure."""
    return hashlib.sha256(manifest(entries)).hexdigest()


def install_command(hash: str, dest_root: str) -> str:
    """A shell command that reads `tar_bytes` on stdin and installs it as ``<dest_root>/<hash>``.

    Atomic (extract to a temporary folder, then ``mv``) and idempotent: if the
    folder exists, stdin is drained and nothing changes. For remote hosts. Pure.
    """
    if not hash or "/" in hash or hash.startswith("."):
        raise ValueError(f"Invalid snapshot hash {hash!r}")
    d, h = shlex.quote(dest_root), shlex.quote(hash)
    return (f'set -e; d={d}; h={h}; if [ -d "$d/$h" ]; then cat >/dev/null; exit 0; fi; '
            'mkdir -p "$d"; t=$(mktemp -d "$d/.tmp-$h-XXXXXX"); '
            'if ! tar -xzf - -C "$t"; then rm -rf "$t"; exit 1; fi; '
            'mv -T "$t" "$d/$h" 2>/dev/null || rm -rf "$t"; test -d "$d/$h"')


# -- listing and hashing -------------------------------------------------------------------------

def _git_files(root: Path) -> list[str] | None:
    # None when root is not inside a git work tree (or git is missing).
    try:
        inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=root,
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return None
    proc = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                           "-z"], cwd=root, capture_output=True, timeout=300)
    if proc.returncode != 0:
        raise AdoraError(f"git ls-files failed in {root}: {proc.stderr.decode(errors='replace')}")
    return parse_ls_files(proc.stdout)


def _walk(root: Path, start: str = "") -> list[str]:
    out = []
    top = root / start if start else root
    for dirpath, dirnames, filenames in os.walk(top):
        base = Path(dirpath)
        # Skip tool folders and virtual environments; never follow links to folders.
        kept = []
        for name in dirnames:
            full = base / name
            if name in SKIP_DIRS or name.endswith(".egg-info") or \
                    (full / "pyvenv.cfg").exists():
                continue
            if full.is_symlink():
                out.append(full.relative_to(root).as_posix())
                continue
            kept.append(name)
        dirnames[:] = sorted(kept)
        for name in filenames:
            rel = (base / name).relative_to(root).as_posix()
            if not skipped_outside_git(rel):
                out.append(rel)
    return sorted(out)


def _relative_excludes(root: Path, exclude: Iterable[Path | str]) -> list[str]:
    out = []
    for path in exclude:
        p = Path(path)
        p = (root / p) if not p.is_absolute() else p
        try:
            rel = p.resolve().relative_to(root)
        except ValueError:
            continue  # outside the project: nothing to exclude
        if rel.parts:
            out.append(rel.as_posix())
    return out


def list_files(root: Path, exclude: Iterable[Path | str] = ()) -> list[str]:
    """The project's files under ``root``, as sorted POSIX paths relative to it.

    In a git work tree: tracked and untracked-not-ignored files that exist (a
    file deleted but not yet committed is left out); submodules are walked.
    Elsewhere: a walk that skips `SKIP_DIRS` and virtual environments. Never
    bytecode (`volatile`) nor virtual environments. ``exclude`` lists folders
    (absolute, or relative to ``root``) to leave out.
    """
    root = Path(root).resolve()
    excludes = _relative_excludes(root, exclude)
    listed = _git_files(root)
    if listed is None:
        paths = _walk(root)
    else:
        paths = []
        venvs: dict[str, bool] = {}
        for path in listed:
            if _in_venv(root, path, venvs):
                continue  # an untracked virtual environment that .gitignore forgot
            full = root / path
            if full.is_dir() and not full.is_symlink():
                paths += _walk(root, path)  # a submodule: git lists its folder only
            elif full.is_symlink() or full.exists():
                paths.append(path)
    return sorted(p for p in set(paths) if keep_path(p, excludes) and not volatile(p))


def _in_venv(root: Path, path: str, cache: dict[str, bool]) -> bool:
    parts = PurePosixPath(path).parts
    for i in range(1, len(parts)):
        prefix = "/".join(parts[:i])
        if prefix not in cache:
            cache[prefix] = (root / prefix / "pyvenv.cfg").is_file()
        if cache[prefix]:
            return True
    return False


def _digest_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _entry(root: Path, rel: str) -> FileEntry | None:
    full = root / rel
    try:
        st = full.lstat()
    except FileNotFoundError:
        return None  # deleted since the listing
    mode = file_mode(st.st_mode)
    if mode == MODE_LINK:
        target = os.fsencode(os.readlink(full))
        return FileEntry(rel, mode, hashlib.sha256(target).hexdigest(), len(target))
    if not stat.S_ISREG(st.st_mode):
        return None  # sockets, fifos...
    digest, size = _digest_file(full)
    return FileEntry(rel, mode, digest, size)


def snapshot(root: Path, *, exclude: Iterable[Path | str] = ()) -> Snapshot:
    """List the project's files under ``root`` (see `list_files`) and hash them."""
    root = Path(root).resolve()
    entries = [e for e in (_entry(root, rel) for rel in list_files(root, exclude))
               if e is not None]
    entries.sort(key=lambda e: e.path)
    return Snapshot(root=root, entries=tuple(entries), hash=snapshot_hash(entries))


# -- writing ---------------------------------------------------------------------------------------

def _read_checked(snap: Snapshot, entry: FileEntry) -> bytes:
    # The file's bytes, refusing them if they no longer match the snapshot.
    full = snap.root / entry.path
    try:
        data = os.fsencode(os.readlink(full)) if entry.mode == MODE_LINK else full.read_bytes()
    except OSError as exc:
        raise SnapshotChangedError(f"{full} changed while snapshotting the code: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != entry.digest:
        raise SnapshotChangedError(f"{full} changed while snapshotting the code; try again.")
    return data


def _write_tree(snap: Snapshot, target: Path) -> None:
    for entry in snap.entries:
        dest = target / entry.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        if entry.mode == MODE_LINK:
            os.symlink(os.fsdecode(_read_checked(snap, entry)), dest)
            continue
        full = snap.root / entry.path
        h = hashlib.sha256()
        try:
            with open(full, "rb") as src, open(dest, "wb") as out:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
        except OSError as exc:
            raise SnapshotChangedError(
                f"{full} changed while snapshotting the code: {exc}") from exc
        if h.hexdigest() != entry.digest:
            raise SnapshotChangedError(f"{full} changed while snapshotting the code; try again.")
        os.chmod(dest, 0o755 if entry.mode == MODE_EXEC else 0o644)


def materialize(snap: Snapshot, dest_root: Path, *,
                on_create: tp.Callable[[Path], None] | None = None) -> Path:
    """Write ``snap`` to ``<dest_root>/<hash>/`` and return that folder.

    Atomic: files go to a temporary folder renamed into place, so a folder with
    a snapshot's name is always complete. If it already exists (same code), nothing
    is written. ``on_create(tmp_folder)`` runs on a new copy before the rename (e.g.
    Dora's ``post_git_save_commands``). Raises `SnapshotChangedError` if a file
    changed since `snapshot` read it.
    """
    dest_root = Path(dest_root)
    target = dest_root / snap.hash
    if target.is_dir():
        return target
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{snap.hash[:16]}-", dir=dest_root))
    try:
        _write_tree(snap, tmp)
        if on_create is not None:
            on_create(tmp)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # someone else wrote the same code first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Code snapshot %s: %d files, %d bytes", target, len(snap), snap.size)
    return target


def tar_bytes(snap: Snapshot) -> bytes:
    """The snapshot's files as a deterministic ``.tar.gz`` (names relative to the root).

    Same code, same bytes: entries sorted, owners, times and gzip header zeroed.
    Unpack with `extract_tar` or, on another host, `install_command`.
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in snap.entries:
            data = _read_checked(snap, entry)
            info = tarfile.TarInfo(entry.path)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if entry.mode == MODE_LINK:
                info.type = tarfile.SYMTYPE
                info.linkname = os.fsdecode(data)
                info.mode = 0o777
                tar.addfile(info)
            else:
                info.mode = 0o755 if entry.mode == MODE_EXEC else 0o644
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def extract_tar(data: bytes, dest_root: Path, hash: str) -> Path:
    """Unpack `tar_bytes` output as ``<dest_root>/<hash>/``, atomically; skip if present."""
    if not hash or "/" in hash or hash.startswith("."):
        raise ValueError(f"Invalid snapshot hash {hash!r}")
    dest_root = Path(dest_root)
    target = dest_root / hash
    if target.is_dir():
        return target
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{hash[:16]}-", dir=dest_root))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            if hasattr(tarfile, "tar_filter"):  # Python >= 3.10.12 / 3.11.4
                tar.extractall(tmp, filter="tar")
            else:  # pragma: no cover
                tar.extractall(tmp)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
