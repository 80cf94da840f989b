"""The grid table: columns from treetable nodes, incremental default metrics, renderings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import treetable as tt

from adora import Explorer
from adora.conf import DoraConfig
from adora.explore import Sheep
from adora.monitor import build_table, dumps, write_json
from adora.xp import XP


def sheeps(tmp_path: Path, n: int) -> list[Sheep]:
    dora = DoraConfig(dir=tmp_path)
    return [Sheep(XP(dora=dora, cfg=None, argv=[], delta=[("seed", i)])) for i in range(n)]


class E(Explorer):
    def get_grid_metrics(self):  # type: ignore[no-untyped-def]
        return [tt.group("valid", [tt.leaf("loss", ".2f")]), tt.leaf("epoch")]


def test_incremental_metrics_match_dora_process_history(tmp_path: Path) -> None:
    explorer = E(lambda launcher: None)
    xs = sheeps(tmp_path, 2)
    names = ["a", "b"]
    histories = {s.xp.sig: [] for s in xs}  # type: ignore[var-annotated]
    cache: dict = {}
    for step in range(5):
        for s in xs:
            histories[s.xp.sig].append({"valid": {"loss": step / 3}, "epoch": 100 + step,
                                        f"k{step}": step})
        fast = build_table("g", explorer, xs, names, "", histories, cache=cache)
        slow = build_table("g", explorer, xs, names, "", histories)
        assert fast.rows == slow.rows
    # The metric "epoch" pushed by training wins over the count, as in Dora.
    assert fast.rows[0]["epoch"] == 104
    # A rewritten (shorter, new) history is recomputed, not merged into the old one.
    histories[xs[0].xp.sig] = [{"valid": {"loss": 9.0}}]
    fast = build_table("g", explorer, xs, names, "", histories, cache=cache)
    slow = build_table("g", explorer, xs, names, "", histories)
    assert fast.rows == slow.rows and fast.rows[0]["epoch"] == 1


def test_renderings(tmp_path: Path) -> None:
    explorer = E(lambda launcher: None)
    xs = sheeps(tmp_path, 2)
    histories = {xs[0].xp.sig: [{"valid": {"loss": 0.123456}}]}
    table = build_table("Grid g", explorer, xs, ["seed=0", "seed=1"], "", histories)
    text = table.to_text()
    header = text.splitlines()[1:3]
    assert "valid" in header[0] and "loss" in header[1] and "0.12" in text and "N/A" in text
    rows = table.to_json()
    assert rows[0]["metrics"]["valid"]["loss"] == 0.123456 and rows[1]["state"] is None
    json.dumps(rows)
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(table.to_rich())
    assert "seed=1" in console.export_text()


# -- a table that fits the terminal ------------------------------------------------------
class Realistic(Explorer):
    # As in the get_grid_metrics of Dora projects: two groups of metrics, then epoch.
    def get_grid_metrics(self):  # type: ignore[no-untyped-def]
        return [tt.group("train", [tt.leaf("loss", ".4f"), tt.leaf("acc", ".2%")]),
                tt.group("valid", [tt.leaf("loss", ".4f"), tt.leaf("acc", ".2%"),
                                   tt.leaf("bleu", ".2f")]),
                tt.leaf("epoch")]


def realistic_table(tmp_path: Path):  # type: ignore[no-untyped-def]
    """24 XPs over 4 hyper-parameters, in every state, with Slurm-like job ids."""
    import itertools
    import time

    from adora.backends.base import JobStatus
    from adora.jobs import JobRecord
    from adora.states import JobState

    dora = DoraConfig(dir=tmp_path)
    states = [JobState.RUNNING, JobState.COMPLETED, JobState.FAILED, JobState.PENDING,
              JobState.TIMEOUT, JobState.CANCELLED]
    xs, names, histories = [], [], {}
    grid = itertools.product([0.1, 0.01, 0.001], [32, 64], [0.0, 0.3], ["transformer_big", "lstm"])
    for i, (lr, bs, dropout, model) in enumerate(grid):
        delta = [("optim.lr", lr), ("batch_size", bs), ("dropout", dropout), ("model", model)]
        sheep = Sheep(XP(dora=dora, cfg=None, argv=[], delta=delta),
                      JobRecord(backend="slurm", token="t", job_id=f"4242424_{i}",
                                submitted_at=time.time() - 4000))
        sheep.status = JobStatus(states[i % len(states)], started_at=time.time() - 60 * i)
        xs.append(sheep)
        names.append(f"opt.lr={lr} batch_size={bs} dropout={dropout} model={model}")
        histories[sheep.xp.sig] = [
            {"train": {"loss": 1 / (e + 1), "acc": 0.5 + e / 100},
             "valid": {"loss": 1.1 / (e + 1), "acc": 0.4 + e / 100, "bleu": 20.0 + e}}
            for e in range(i)]
    return build_table("Grid sweep", Realistic(lambda launcher: None), xs, names, "epochs=10",
                       histories), xs


@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_table_fits_every_width(tmp_path: Path, width: int) -> None:
    from rich.console import Console

    table, xs = realistic_table(tmp_path)
    text = table.to_text(width)
    lines = text.splitlines()
    hidden = [line for line in lines if line.startswith("Hidden to fit")]
    body = [line for line in lines if line not in hidden]
    assert all(len(line) <= width for line in body), "\n".join(body)
    # Every XP row shows its index, its full signature and its state, whole.
    for index, sheep in enumerate(xs):
        row = next(line for line in lines if line.split()[:1] == [str(index)])
        assert sheep.xp.sig in row.split(), row
        assert sheep.job_state.short in row.split(), row  # type: ignore[union-attr]
    if width <= 80:
        assert len(hidden) == 1, text
    if width == 80:
        # Whole metric columns hidden from the end, named, with the ways to see them.
        note = hidden[0]
        assert "valid.bleu" in note and "--metrics" in note and "--json" in note
        assert "wider terminal" in note
        assert "train.loss" not in note.split("--metrics")[0]
        assert "train" in lines[2]  # the group headers
    if width == 200:
        assert not hidden and "valid.bleu" not in text and "bleu" in text
        assert "sid" in text and "4242424_23" in text
    # The names are never cut to nothing: every part of every name shows.
    for name in ("model=transformer_big", "batch_size=64", "opt.lr=0.001"):
        assert name in text
    # Through rich, at the console's width: the same guarantees, styled.
    console = Console(record=True, width=width, color_system=None)
    console.print(table.to_rich(width))
    out = console.export_text()
    for sheep in xs:
        assert sheep.xp.sig in out


def test_metrics_option_and_epoch_progress(tmp_path: Path) -> None:
    table, xs = realistic_table(tmp_path)
    narrow = table.to_text(60)
    # epoch (progress) stays when other metrics are hidden.
    header = [line for line in narrow.splitlines() if line.split()[1:2] == ["name"]][0]
    assert header.rstrip().endswith(("epo", "epoch"))
    only = table.only_metrics(["valid.loss", "valid.acc"])
    text = only.to_text(80)
    assert "Hidden to fit" not in text.split("sid")[0]
    assert "bleu" not in text and "train" not in text and "valid" in text
    group = table.only_metrics(["train"])
    assert [c.name for c in group.columns if c.path[0] != "Meta"] == ["train.loss", "train.acc"]
    from adora.errors import ConfigError

    with pytest.raises(ConfigError, match="no metric column 'nope'"):
        table.only_metrics(["nope"])


def test_treetable_options_wrap_missing_nested(tmp_path: Path) -> None:
    class Nested(Explorer):
        def get_grid_metrics(self):  # type: ignore[no-untyped-def]
            return [tt.group("valid", [
                tt.group("bleu", [tt.leaf("test"), tt.leaf("dev")], format=".1f"),
                tt.leaf("note", wrap=6)], missing="-")]

    xs = sheeps(tmp_path, 2)
    histories = {xs[0].xp.sig: [{"valid": {"bleu": {"test": 21.25, "dev": 19.0},
                                           "note": "diverged twice"}}]}
    table = build_table("Grid n", Nested(lambda launcher: None), xs, ["a", "b"], "", histories)
    text = table.to_text()
    lines = text.splitlines()
    assert any("valid" in line and "bleu" not in line for line in lines[:3])
    assert any("bleu" in line for line in lines[:3])
    assert "21.2" in text and "19.0" in text
    # wrap=6: the note is cut in lines of 6, nothing lost.
    assert "diverg" in text and "ed twi" in text and "ce" in text
    # missing="-" (inherited from the group) for XP b without metrics.
    row_b = [line for line in lines if line.split()[:2] == ["1", "b"]][0]
    assert row_b.split().count("-") == 3


def test_bad_cells_survive_narrow_tables(tmp_path: Path) -> None:
    xs = sheeps(tmp_path, 2)
    histories = {xs[0].xp.sig: [{"valid": {"loss": "abc"}}],
                 xs[1].xp.sig: [{"valid": {"loss": 1.0}}]}
    table = build_table("Grid g", E(lambda launcher: None), xs, ["seed=0", "seed=1"], "",
                        histories)
    text = table.to_text(50)
    row = [line for line in text.splitlines() if line.split()[:1] == ["0"]][0]
    assert "!" in row.split()
    assert "a value its column's format cannot show" in text


def test_elapsed_and_duration() -> None:
    from adora.monitor import duration

    assert [duration(s) for s in (5, 65, 3 * 3600 + 7 * 60, 2 * 86400 + 4 * 3600)] == \
        ["5s", "1m05s", "3h07m", "2d04h"]
    assert duration(None) == ""


def test_elapsed_from_backend_times_and_durations(tmp_path: Path) -> None:
    # Local jobs give start/end times; Slurm gives durations: a running job's start is
    # derived from squeue's time used, an ended job keeps sacct's elapsed (persisted in
    # its record, so a finished grid shows it without asking Slurm again).
    from adora.backends.base import JobStatus
    from adora.jobs import JobRecord
    from adora.monitor import elapsed
    from adora.states import JobState

    sheep = sheeps(tmp_path, 1)[0]
    sheep.job = JobRecord(backend="slurm", token="t", job_id="1", submitted_at=1000.0)
    sheep.status = JobStatus(JobState.RUNNING, started_at=1500.0)
    assert elapsed(sheep, now=1600.0) == 100.0  # not 600: the queue wait is not run time
    ended = JobStatus(JobState.COMPLETED, 0, elapsed=3723.0)
    ended.persist(sheep.job)
    sheep.status = JobStatus.of_final(sheep.job)
    assert sheep.status.elapsed == 3723.0 and elapsed(sheep, now=99999.0) == 3723.0
    sheep.status = JobStatus(JobState.PENDING)
    assert elapsed(sheep, now=1600.0) is None


def test_streamed_json_is_dumps_text(tmp_path: Path) -> None:
    # `adora grid --json` streams rows (write_json); parsers get the same document.
    explorer = E(lambda launcher: None)
    xs = sheeps(tmp_path, 3)
    histories = {xs[0].xp.sig: [{"valid": {"loss": 0.5}, "note": "é\n\"x\""}]}
    table = build_table("Grid g", explorer, xs, ["a", "b", "c"], "", histories)
    empty = build_table("Grid e", explorer, [], [], "", {})
    for tables in ([], [table], [table, empty], [empty, table, empty]):
        parts: list[str] = []
        write_json(tables, parts.append, batch=2)
        assert "".join(parts) == dumps(tables)
        one_line = dumps(tables, one_line=True)  # a line of `--watch --json` (JSON Lines)
        assert "\n" not in one_line and json.loads(one_line) == json.loads(dumps(tables))
        expected = {t.title: t.to_json() for t in tables}
        assert json.loads(dumps(tables)) == json.loads(json.dumps(expected, default=str))
    assert dumps([table]).count("\n") == 3 + 3  # one row a line


def test_terminal_table_shows_first_and_last_rows(tmp_path: Path) -> None:
    from rich.console import Console

    explorer = E(lambda launcher: None)
    xs = sheeps(tmp_path, 30)
    table = build_table("Grid g", explorer, xs, [f"seed={i}" for i in range(30)], "", {})
    console = Console(record=True, width=200)
    console.print(table.to_rich(max_rows=10))
    text = console.export_text()
    assert "seed=4" in text and "seed=25" in text and "seed=5 " not in text
    assert "20 more XPs" in text
