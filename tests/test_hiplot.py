"""HiPlot, as in Dora: ``python -m hiplot adora.hiplot.load`` with grid names and signatures."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from adora.errors import XPNotFoundError
from adora.link import read_history
from adora.package import load_main
from tests.test_plot import FAST, run_until_done, write_grid

hip = pytest.importorskip("hiplot")


def rows(exp: hip.Experiment, last: bool | None = None) -> list[dict]:
    out = [dict(dp.values, uid=dp.uid, from_uid=dp.from_uid) for dp in exp.datapoints]
    return [r for r in out if last is None or r["last"] == last]


def test_loader_rows_for_a_grid_and_for_signatures(toy_project: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import hiplot.fetchers

    from adora.hiplot import load

    write_grid(toy_project, "fast", FAST)
    run_until_done(toy_project, "fast", "--backend", "local")
    monkeypatch.setenv("ADORA_BACKEND", "local")
    main = load_main("toy")
    sigs = sorted(p.name for p in (main.dora.dir / "grids" / "fast").iterdir())
    last = {sig: read_history(main.get_xp_from_sig(sig).history)[-1] for sig in sigs}

    # HiPlot finds the loader by its dotted name, as `python -m hiplot adora.hiplot.load`.
    assert hiplot.fetchers.get_fetcher("adora.hiplot.load") is load

    # A grid name: Dora's rows, one per epoch, linked XP by XP; `last` marks one per XP.
    exp = load("fast")
    exp.validate()
    assert len(rows(exp)) == 4 * 3
    finals = rows(exp, last=True)
    assert sorted(r["sig"] for r in finals) == sigs
    for row in finals:
        # Its hyper-parameters (what sets the XPs apart) and its last metrics.
        xp = main.get_xp_from_sig(row["sig"])
        assert (row["lr"], row["hidden"]) == (xp.cfg.lr, xp.cfg.hidden)
        assert "epochs" not in row  # shared by every XP: not a column
        assert row["valid.loss"] == last[row["sig"]]["valid"]["loss"]
        assert row["train.loss"] == last[row["sig"]]["train"]["loss"]
        assert row["epoch"] == 2 and row["state"] == "COMPLETED"
        assert row["from_uid"] == f"{row['sig']}_1"

    # rows=last: one row per XP.
    exp = load("fast rows=last")
    assert sorted(r["sig"] for r in rows(exp)) == sigs and all(r["last"] for r in rows(exp))

    # Signatures, with an XP that never ran: a row all the same, its unset
    # hyper-parameters taken from its configuration.
    never = main.get_xp(["--lr=0.7"])
    main.init_xp(never)
    exp = load(f"{sigs[0]} {sigs[1]} {never.sig} rows=last")
    exp.validate()
    got = {r["sig"]: r for r in rows(exp)}
    assert sorted(got) == sorted([sigs[0], sigs[1], never.sig])
    assert got[never.sig]["lr"] == 0.7 and got[never.sig]["hidden"] == 8
    assert got[never.sig]["epochs"] == 10 and got[sigs[0]]["epochs"] == 3
    assert "valid.loss" not in got[never.sig] and got[never.sig]["state"] is None
    assert got[sigs[1]]["valid.loss"] == last[sigs[1]]["valid"]["loss"]


def test_custom_hiplot_explorer_from_the_grids_package(toy_project: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from adora.hiplot import load

    (toy_project / "toy" / "grids" / "_hiplot.py").write_text(textwrap.dedent("""
        from adora.hiplot import HiPlotExplorer, roundf

        class ValidOnly(HiPlotExplorer):
            def process_metrics(self, xp, metrics):
                return {"valid_loss": roundf(metrics["valid"]["loss"], 2)}

            def postprocess_exp(self, exp):
                exp.display_data("XY").update({"axis_x": "epoch", "axis_y": "valid_loss"})
    """))
    write_grid(toy_project, "fast", FAST)
    run_until_done(toy_project, "fast", "--backend", "local")
    monkeypatch.setenv("ADORA_BACKEND", "local")
    exp = load("fast explorer=ValidOnly")
    assert all("train.loss" not in r and "valid.loss" not in r for r in rows(exp))
    assert all(r["valid_loss"] == round(r["valid_loss"], 2) for r in rows(exp))
    assert exp.display_data("XY")["axis_y"] == "valid_loss"
    with pytest.raises(Exception, match="No HiPlot explorer"):
        load("fast explorer=Nope")
    with pytest.raises(XPNotFoundError):  # neither a grid nor a known signature
        load("deadbeef")
