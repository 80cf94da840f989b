"""The look at a grid's XP folders taken by a child process during evaluation."""

from __future__ import annotations

import os
import sys
import typing as tp
from pathlib import Path

import pytest

import adora.engine.prescan as prescan
from adora.engine.watch import GridWatch
from adora.errors import SignatureCollisionError
from adora.package import load_main
from adora.testing.fake_backend import FakeBackend
from tests.test_engine import grid, write_grid

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _folders(root: Path) -> Path:
    xps = root / "xps"
    for sig, argv, history in (("a", b'["--x=1"]', "history.jsonl"), ("b", b'["--x=2"]', None),
                               ("c", None, "history.json")):
        (xps / sig).mkdir(parents=True)
        if argv is not None:
            (xps / sig / ".argv.json").write_bytes(argv)
        if history is not None:
            (xps / sig / history).write_text("")
    (xps / "e" / ".argv.json").mkdir(parents=True)  # unreadable: left to the normal check
    (xps / "f").write_text("a file where a folder should be")
    return xps


def test_scan_reads_argv_and_sees_histories(tmp_path: Path) -> None:
    xps = _folders(tmp_path)
    got = prescan.scan(str(xps), ["a", "b", "c", "d", "e", "f"],
                       ["history.jsonl", "history.json"])
    assert got == {"a": (b'["--x=1"]', True), "b": (b'["--x=2"]', False),
                   "c": (None, True), "d": (None, False), "f": (None, False)}


def test_scan_without_history_names_claims_nothing_about_metrics(tmp_path: Path) -> None:
    xps = _folders(tmp_path)
    got = prescan.scan(str(xps), ["b", "d"], [])
    assert got == {"b": (b'["--x=2"]', True), "d": (None, True)}


async def scan_in_child(xps_dir: str, grid_dir: str,
                        history_names: list[str]) -> prescan.Scan | None:
    scanning = await prescan.Prescan.start(xps_dir, grid_dir, history_names)
    if scanning is None:
        return None
    try:
        return await scanning.result()
    finally:
        await scanning.aclose()


def _grid_links(root: Path, sigs: list[str]) -> Path:
    grid = root / "grids" / "g"
    grid.mkdir(parents=True)
    for sig in sigs:
        os.symlink(f"../../xps/{sig}", grid / sig)
    return grid


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_the_child_scans_the_grid_members(tmp_path: Path, anyio_backend: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    xps = _folders(tmp_path)
    grid = _grid_links(tmp_path, ["a", "b", "c", "d", "e"])
    names = ["history.jsonl", "history.json"]
    monkeypatch.setattr(prescan, "MIN_MEMBERS", 5)
    got = await scan_in_child(str(xps), str(grid), names)
    assert got == prescan.scan(str(xps), ["a", "b", "c", "d", "e"], names)
    assert set(got or {}) == {"a", "b", "c", "d"}
    monkeypatch.setattr(prescan, "MIN_MEMBERS", 6)  # a small grid: no child
    assert await scan_in_child(str(xps), str(grid), names) is None
    assert await scan_in_child(str(xps), str(tmp_path / "nope"), names) is None


async def test_a_failed_child_means_no_scan(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    xps = _folders(tmp_path)
    grid = _grid_links(tmp_path, ["a", "b"])
    monkeypatch.setattr(prescan, "MIN_MEMBERS", 1)
    monkeypatch.setattr(sys, "executable", "/bin/false")
    assert await scan_in_child(str(xps), str(grid), []) is None
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    assert await scan_in_child(str(xps), str(grid), []) is None


ONE_XP = """
    @Explorer
    def explorer(launcher):
        launcher(lr=0.1)
"""


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[prescan.Scan | None]:
    """Every grid run scans (no minimum size); the scans its evaluation made, in order."""
    import adora.engine.run as run_mod

    made: list[prescan.Scan | None] = []
    original = run_mod._evaluate_warming_up

    async def spy(*args: tp.Any) -> tuple[tp.Any, prescan.Scan | None]:
        herd, got = await original(*args)
        made.append(got)
        return herd, got

    monkeypatch.setattr(prescan, "MIN_MEMBERS", 1)
    monkeypatch.setattr(run_mod, "_evaluate_warming_up", spy)
    return made


async def test_a_collision_is_found_in_the_scanned_argv(
        toy_project: Path, monkeypatch: pytest.MonkeyPatch,
        scans: list[prescan.Scan | None]) -> None:
    import adora.main
    import adora.xp

    monkeypatch.setattr(adora.xp, "get_sig", lambda delta: "deadbeef")
    write_grid(toy_project, "g", ONE_XP)
    backend = FakeBackend()
    await grid("g", backend)
    assert scans == [None]  # a new grid has no member to scan
    # The grid now asks for another XP with the same signature: its folder holds the
    # first one's argv, which the child read; the main process reads no .argv.json.
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            launcher(lr=0.2)
    """)
    reads: list[str] = []
    original = adora.main.read_small
    monkeypatch.setattr(adora.main, "read_small", lambda p: reads.append(p) or original(p))
    with pytest.raises(SignatureCollisionError, match="deadbeef"):
        await grid("g", backend)
    assert scans[1] == {"deadbeef": (b'["--lr=0.1"]', False)}
    assert reads == [] and len(backend.jobs) == 1


async def test_metrics_of_xps_with_no_history_at_the_start_are_read_next_time(
        toy_project: Path, scans: list[prescan.Scan | None]) -> None:
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            for lr in (0.1, 0.2, 0.3):
                launcher(lr=lr)
    """)
    backend = FakeBackend()
    first = await grid("g", backend)
    one, two, _ = (s.xp for s in first.sheeps)
    one.link.push_metrics({"epoch": 1, "loss": 0.5})
    again = await grid("g", backend)
    assert set(again.fresh) == set()
    assert again.no_history == {s.xp.sig for s in again.sheeps} - {one.sig}
    # Written after the scan: not in the table the run shows, in the next refresh.
    two.link.push_metrics({"epoch": 1, "loss": 0.7})
    watch = GridWatch(load_main("toy"), [again], just_submitted=True)
    await watch.refresh_metrics()
    assert {sig: h for sig, h in watch.histories.items() if h} == {
        one.sig: [{"epoch": 1, "loss": 0.5}]}
    await watch.refresh_metrics()
    assert {sig: h for sig, h in watch.histories.items() if h} == {
        one.sig: [{"epoch": 1, "loss": 0.5}], two.sig: [{"epoch": 1, "loss": 0.7}]}


class _RemoteFiles(FakeBackend):
    """A backend whose XP folders are not the local ones (as over SSH)."""

    async def list_folder(self, path: str) -> set[str] | None:
        return None


async def test_no_history_is_not_trusted_when_metrics_are_not_local_files(
        toy_project: Path, scans: list[prescan.Scan | None]) -> None:
    write_grid(toy_project, "g", ONE_XP)
    backend = _RemoteFiles()
    await grid("g", backend)
    again = await grid("g", backend)
    (xp,) = (s.xp for s in again.sheeps)
    assert again.no_history == {xp.sig}
    xp.link.push_metrics({"epoch": 1})
    watch = GridWatch(load_main("toy"), [again], just_submitted=True)
    await watch.refresh_metrics()
    assert watch.histories[xp.sig] == [{"epoch": 1}]


def test_the_child_runs_as_a_plain_script(tmp_path: Path) -> None:
    # ``python -I -S prescan.py``: the standard library only (no site, no adora).
    import marshal
    import subprocess

    xps = _folders(tmp_path)
    grid = _grid_links(tmp_path, ["a", "b"])
    out = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", prescan.__file__,
                          str(xps), str(grid), "history.jsonl"], capture_output=True,
                         check=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.decode().splitlines()}
    assert imported and not any("adora" in name or name == "site" for name in imported)

    assert marshal.loads(out.stdout) == {"a": (b'["--x=1"]', True), "b": (b'["--x=2"]', False)}


async def test_a_failing_grid_leaves_no_child_behind(
        toy_project: Path, monkeypatch: pytest.MonkeyPatch,
        scans: list[prescan.Scan | None]) -> None:
    write_grid(toy_project, "g", ONE_XP)
    await grid("g", FakeBackend())
    children: list[prescan.Prescan] = []
    start = prescan.Prescan.start.__func__  # type: ignore[attr-defined]

    async def tracked(cls: type, *args: tp.Any) -> prescan.Prescan | None:
        child = await start(cls, *args)
        children.append(child)
        return child

    monkeypatch.setattr(prescan.Prescan, "start", classmethod(tracked))
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            raise RuntimeError("broken grid")
    """)
    with pytest.raises(Exception, match="broken grid"):
        await grid("g", FakeBackend())
    (child,) = children
    assert child._process.returncode is not None  # stopped and reaped


async def test_a_folder_made_after_the_scan_is_still_checked(
        toy_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The scan found no .argv.json for the XP; another command made its folder (with
    # another XP's argv) before this one took the lock: the check reads it then.
    import adora.xp
    from adora.engine.run import _check_collisions
    from adora.explore import Herd

    monkeypatch.setattr(adora.xp, "get_sig", lambda delta: "deadbeef")
    main = load_main("toy")
    mine, other = main.get_xp(["--lr=0.2"]), main.get_xp(["--lr=0.1"])
    main.init_xp(other)
    herd = Herd()
    herd.add(mine, main.get_slurm_config())
    with pytest.raises(SignatureCollisionError, match="deadbeef"):
        _check_collisions(main, herd, list(herd.sheeps.values()), {"deadbeef": (None, False)})
