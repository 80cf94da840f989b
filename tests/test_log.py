"""LogProgress: a few progress lines per loop, in Dora's format."""

from __future__ import annotations

import logging
import re

import pytest

from adora.log import LogProgress, bold, colorize, red

LINE = re.compile(r"^(?P<name>\w+) \| (?P<index>\d+)/(?P<total>\d+) \| "
                  r"(?P<speed>[\d.]+|oo) (?P<unit>it/sec|sec/it|ms/it)(?P<infos>( \| .*)?)$")


@pytest.fixture
def logger(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    caplog.set_level(logging.DEBUG, logger="adora.tests.progress")
    return logging.getLogger("adora.tests.progress")


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "adora.tests.progress"]


def test_logs_about_updates_lines_with_the_metrics_of_that_iteration(
        logger: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    progress = LogProgress(logger, range(100), updates=5, name="train")
    assert len(progress) == 100
    items = []
    for i in progress:
        items.append(i)
        progress.update(loss=f"{1 / (i + 1):.3f}", step=i)
    assert items == list(range(100))  # every item, in order
    lines = _messages(caplog)
    assert len(lines) == 4  # at 20, 40, 60, 80: `updates` lines, minus the one at the very end
    for line, index in zip(lines, (20, 40, 60, 80), strict=True):
        match = LINE.match(line)
        assert match, line
        assert match["name"] == "train"
        assert (int(match["index"]), int(match["total"])) == (index, 100)
        # Logging is delayed by one iteration so it shows what update() got at that index.
        assert match["infos"] == f" | Loss {1 / (index + 1):.3f} | Step {index}"


@pytest.mark.parametrize("total,updates", [(50, 10), (1000, 5), (7, 3), (3, 10)])
def test_number_of_lines(logger: logging.Logger, caplog: pytest.LogCaptureFixture,
                         total: int, updates: int) -> None:
    for _ in LogProgress(logger, list(range(total)), updates=updates):
        pass
    lines = _messages(caplog)
    every = max(1, total // updates)
    assert len(lines) == (total - 1) // every
    assert len(lines) <= updates


def test_update_tells_whether_this_iteration_logs(logger: logging.Logger,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    progress = LogProgress(logger, range(30), updates=3)
    will_log = []
    for i in progress:
        count_before = len(_messages(caplog))
        if progress.update(i=i):
            will_log.append(i)
        assert len(_messages(caplog)) == count_before  # nothing logged during the body
    assert will_log == [10, 20]
    assert [LINE.match(m)["index"] for m in _messages(caplog)] == ["10", "20"]


def test_min_interval_is_in_iterations(logger: logging.Logger,
                                       caplog: pytest.LogCaptureFixture) -> None:
    # As in Dora: at least `min_interval` iterations between two lines.
    for _ in LogProgress(logger, range(100), updates=50, min_interval=25):
        pass
    assert [LINE.match(m)["index"] for m in _messages(caplog)] == ["25", "50", "75"]


def test_total_for_iterables_without_len(logger: logging.Logger,
                                         caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match="total"):
        LogProgress(logger, (i for i in range(30)))
    progress = LogProgress(logger, (i for i in range(30)), total=30, updates=3, name="gen")
    assert len(progress) == 30
    assert sum(progress) == sum(range(30))
    assert [m.split(" | ")[:2] for m in _messages(caplog)] == [["gen", "10/30"], ["gen", "20/30"]]


def test_no_infos_no_trailing_separator(logger: logging.Logger,
                                        caplog: pytest.LogCaptureFixture) -> None:
    for _ in LogProgress(logger, range(10), updates=2):
        pass
    [line] = _messages(caplog)
    match = LINE.match(line)
    assert match and match["infos"] == "" and match["name"] == "LogProgress"


def test_time_per_it_and_level(logger: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    for _ in LogProgress(logger, range(10), updates=2, time_per_it=True, level=logging.DEBUG):
        pass
    [record] = [r for r in caplog.records if r.name == "adora.tests.progress"]
    assert record.levelno == logging.DEBUG
    assert LINE.match(record.getMessage())["unit"] in ("ms/it", "sec/it")


def test_updates_zero_logs_nothing(logger: logging.Logger,
                                   caplog: pytest.LogCaptureFixture) -> None:
    assert list(LogProgress(logger, range(10), updates=0)) == list(range(10))
    assert _messages(caplog) == []


def test_iterating_again_starts_over(logger: logging.Logger,
                                     caplog: pytest.LogCaptureFixture) -> None:
    progress = LogProgress(logger, range(10), updates=2)
    assert list(progress) == list(range(10))
    assert list(progress) == list(range(10))
    assert [LINE.match(m)["index"] for m in _messages(caplog)] == ["5", "5"]


def test_colors() -> None:
    assert colorize("x", "32") == "\033[32mx\033[0m"
    assert bold("x") == "\033[1mx\033[0m"
    assert red("x") == "\033[31mx\033[0m"
