"""Bulk file work spread over threads (`adora.files.map_threads`)."""

from __future__ import annotations

import threading
import time

import pytest

from adora.files import map_threads


def test_results_keep_the_order_of_items_and_use_several_threads() -> None:
    seen: set[str] = set()

    def work(item: int) -> int:
        seen.add(threading.current_thread().name)
        time.sleep(0.001)  # a file-system round trip
        return item * 2

    items = list(range(500))
    assert map_threads(work, items) == [i * 2 for i in items]
    assert len(seen) > 1


def test_small_batches_stay_in_the_calling_thread() -> None:
    caller = threading.current_thread().name
    names = map_threads(lambda _: threading.current_thread().name, list(range(10)))
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
        map_threads(work, list(range(400)))
    # Nothing is still running once the error surfaces, and the rest was done.
    assert sorted(done) == [i for i in range(400) if i not in (7, 300)]
