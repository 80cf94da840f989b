"""Bulk file work spread over threads (`adora.files.map_threads`)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from adora.files import FileLock, map_threads, mount_type, threads_for


def test_results_keep_the_order_of_items_and_use_several_threads() -> None:
    seen: set[str] = set()

    def work(item: int) -> int:
        seen.add(threading.current_thread().name)
        time.sleep(0.001)  # a file-system round trip
        return item * 2

    items = list(range(500))
    assert map_threads(work, items, threads=4) == [i * 2 for i in items]
    assert len(seen) > 1


def test_small_batches_stay_in_the_calling_thread() -> None:
    caller = threading.current_thread().name
    names = map_threads(lambda _: threading.current_thread().name, list(range(10)), threads=4)
    assert set(names) == {caller}


def test_every_item_is_processed_before_the_first_error_is_raised() -> None:
    done: list[int] = []
    lock = threading.Lock()

    def work(item: int) -> int:
        if item in (7, 300):
            raise OSError(f"disk full at {item}")
        time.sleep(0.0005)
        with lock:
            done.append(item)
        return item

    with pytest.raises(OSError, match="disk full at 7"):
        map_threads(work, list(range(400)), threads=4)
    # Nothing is still running once the error surfaces, and the rest was done.
    assert sorted(done) == [i for i in range(400) if i not in (7, 300)]


MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
tmpfs /tmp tmpfs rw 0 0
server:/export/home /home nfs4 rw,vers=4.2 0 0
lustre@o2ib:/scratch /scratch lustre rw 0 0
/dev/vdb /scratch/local\\040disk ext4 rw 0 0
srv:/données /données\\040x nfs rw 0 0
"""


def test_mount_type_takes_the_deepest_mount_point() -> None:
    assert mount_type("/home/alice/outputs", MOUNTS) == "nfs4"
    assert mount_type("/scratch/alice", MOUNTS) == "lustre"
    assert mount_type("/scratch/local disk/x", MOUNTS) == "ext4"  # escaped space
    assert mount_type("/homework", MOUNTS) == "ext4"  # a prefix is not a parent
    assert mount_type("/tmp", MOUNTS) == "tmpfs"
    assert mount_type("/données x/y", MOUNTS) == "nfs"  # UTF-8 is not escaped, spaces are


def test_threads_only_on_network_file_systems_unless_told(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import adora.files as files

    monkeypatch.delenv("ADORA_FILE_THREADS", raising=False)
    monkeypatch.setattr(files, "_fs_type", lambda folder: "nfs4")
    assert threads_for(tmp_path / "not" / "yet") == files.NETWORK_THREADS
    monkeypatch.setattr(files, "_fs_type", lambda folder: "ext4")
    assert threads_for(tmp_path) == 1
    monkeypatch.setenv("ADORA_FILE_THREADS", "3")
    assert threads_for(tmp_path) == 3


def test_file_lock_excludes_others_until_released(tmp_path: Path) -> None:
    first, second = FileLock(tmp_path / "lock"), FileLock(tmp_path / "lock")
    assert first.try_acquire()
    assert not second.try_acquire()  # even in the same process
    first.release()
    assert second.try_acquire()
    second.release()


def test_file_lock_dies_with_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from adora.files import FileLock; "
        f"assert FileLock({str(path)!r}).try_acquire(); print('held', flush=True); "
        "time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert not FileLock(path).try_acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = FileLock(path)
    assert lock.try_acquire()  # no stale lock left behind by the killed process
    lock.release()


@pytest.mark.anyio
async def test_dir_lock_waits_then_gives_up_with_the_holders_name(tmp_path: Path) -> None:
    from adora.engine.clock import FakeClock
    from adora.engine.lock import DirLock
    from adora.errors import LockedError

    clock = FakeClock()
    waits: list[str] = []
    async with DirLock(tmp_path, clock=clock):
        other = DirLock(tmp_path, clock=clock, timeout=5.0, on_wait=waits.append)
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            async with other:
                pass
        assert clock.now() > 5.0 and len(waits) == 1
    async with DirLock(tmp_path, clock=clock):  # free again once released
        pass


def test_a_starting_slurm_job_links_latest_to_its_logs(tmp_path: Path) -> None:
    from adora.backends.slurm_job import link_latest

    xp = tmp_path / "outputs" / "xps" / "abc123"
    first = tmp_path / "outputs" / "arrays" / "adora_1"
    second = tmp_path / "outputs" / "arrays" / "adora_2"
    for folder in (first, second):
        folder.mkdir(parents=True)
    link_latest(xp, str(first))
    assert (xp / "latest").resolve() == first and not os.path.isabs(os.readlink(xp / "latest"))
    link_latest(xp, str(second))  # a resubmission: the link moves
    assert (xp / "latest").resolve() == second
    link_latest(xp, None)  # a job pickled before the folder was known: nothing happens
    assert (xp / "latest").resolve() == second
