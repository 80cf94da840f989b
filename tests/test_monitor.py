"""The grid table: columns from treetable nodes, incremental default metrics, renderings."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert "valid.loss" in text and "0.12" in text and "N/A" in text
    rows = table.to_json()
    assert rows[0]["metrics"]["valid"]["loss"] == 0.123456 and rows[1]["state"] is None
    json.dumps(rows)
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(table.to_rich())
    assert "seed=1" in console.export_text()


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
