"""Dora's Grid API (`adora.grid`): Dora's names and fields, one engine underneath,
and a Jupyter cell that refreshes until every job ended (a real notebook, run by nbclient)."""

from __future__ import annotations

import dataclasses
import os
import sys
import typing as tp
from pathlib import Path

import pytest

#: The fields of ``dora.grid.RunGridArgs`` in Dora 0.1.13, with their defaults.
DORA_FIELDS = {
    "patterns": [], "monitor": True, "interval": 5, "trim": None, "trim_last": False,
    "silent": False, "dry_run": False, "cancel": False, "clear": False, "init": False,
    "jupyter": False, "folder": None, "log": None, "tail": None, "_from_commandline": False,
}


def test_run_grid_args_has_doras_fields_and_defaults() -> None:
    from adora.grid import RunGridArgs

    args = RunGridArgs()
    for name, default in DORA_FIELDS.items():
        assert getattr(args, name) == default, name
    # Positionally too, in Dora's order (a dataclass: users may pass them so).
    names = [f.name for f in dataclasses.fields(RunGridArgs)]
    assert names[:len(DORA_FIELDS)] == list(DORA_FIELDS)
    args = RunGridArgs(jupyter=True, monitor=True, interval=1, patterns=["lr"])
    engine = args.to_engine()
    assert engine.patterns == ["lr"] and not engine.yes
    # The engine's options stay what `adora.RunGridArgs` is.
    import adora

    assert adora.RunGridArgs is type(engine)


def test_folder_log_tail_are_command_line_only(toy_project: Path) -> None:
    from toy.grids.sweep import explorer
    from toy.train import main

    from adora.grid import RunGridArgs, run_grid

    for name in ("folder", "log", "tail"):
        with pytest.raises(RuntimeError, match="command line"):
            run_grid(main, explorer, "sweep", args=RunGridArgs(**{name: 0}))


def test_run_grid_returns_sheeps_and_monitors_until_done(
        toy_project: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from toy.grids.sweep import explorer
    from toy.train import main

    from adora.conf import SubmitRules
    from adora.grid import RunGridArgs, monitor, run_grid

    monkeypatch.setenv("ADORA_BACKEND", "local")
    sheeps = run_grid(main, explorer, "sweep", rules=SubmitRules(),
                      args=RunGridArgs(patterns=["hidden=4"], interval=1 / 60))
    assert len(sheeps) == 2
    assert all(s.job is not None and s.job.job_id for s in sheeps)
    assert [s.state() for s in sheeps] == ["COMPLETED", "COMPLETED"]
    out = capsys.readouterr().out
    assert "Monitoring Grid sweep" in out
    assert out.count("Grid sweep\n") >= 2  # refreshed, not shown once
    assert "COM" in out.rsplit("Grid sweep", 1)[1]
    # The grid's link folder is Dora's.
    members = {p.name for p in (main.dora.dir / "grids" / "sweep").iterdir()}
    assert {s.xp.sig for s in sheeps} <= members

    # Running it again submits nothing and returns at once (every job ended);
    # monitor=False shows the table once.
    sheeps = run_grid(main, explorer, "sweep",
                      args=RunGridArgs(patterns=["hidden=4"], monitor=False))
    assert [s.state() for s in sheeps] == ["COMPLETED", "COMPLETED"]
    assert "Submitted" not in capsys.readouterr().out

    lines: list[str] = []
    assert monitor(RunGridArgs(), main, explorer, sheeps, lambda *a: lines.append(" ".join(a)))
    assert "COM" in lines[-1] and "| train" in lines[-1] and "loss" in lines[-1]

    # silent: nothing printed.
    run_grid(main, explorer, "sweep", args=RunGridArgs(patterns=["hidden=4"], silent=True))
    assert capsys.readouterr().out == ""


def _notebook(cells: list[str]) -> tp.Any:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    return nb


def _text(outputs: list[tp.Any]) -> str:
    parts = []
    for output in outputs:
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
    return "".join(parts)


@pytest.mark.timeout(300)
def test_jupyter_cell_refreshes_until_every_job_ended(
        toy_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from nbclient import NotebookClient

    monkeypatch.setenv("ADORA_BACKEND", "local")
    # The kernel is this Python (ipykernel's own spec), started in the toy project.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(toy_project), *sys.path]))
    nb = _notebook([
        # Count the clears: each refresh of the cell starts with one.
        "from IPython import display\n"
        "clears = []\n"
        "_clear = display.clear_output\n"
        "display.clear_output = lambda wait=False: (clears.append(wait), _clear(wait=wait))\n",
        "import adora.grid\n"
        "from adora.conf import SubmitRules\n"
        "from toy.train import main\n"
        "from toy.grids.sweep import explorer\n"
        "sheeps = adora.grid.run_grid(main, explorer, grid_name='sweep',\n"
        "    rules=SubmitRules(retry=True),\n"
        "    args=adora.grid.RunGridArgs(jupyter=True, monitor=True, interval=1 / 60,\n"
        "                                patterns=['hidden=4']))\n",
        "print(len(clears), all(clears))\n"
        "print([(s.xp.sig, s.job.job_id, s.state()) for s in sheeps])\n",
    ])
    client = NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(toy_project)}})
    client.execute()
    grid_out = _text(nb.cells[1].outputs)
    # The cell was cleared before each table: only the last one is left, every job ended.
    assert grid_out.count("Grid sweep\n") == 1, grid_out
    assert grid_out.count("COM") == 2 and "PEN" not in grid_out and "RUN" not in grid_out
    assert "| train" in grid_out and "loss" in grid_out
    count_line, sheeps_line = _text(nb.cells[2].outputs).strip().splitlines()
    clears, all_wait = count_line.split()
    assert int(clears) >= 2 and all_wait == "True"  # refreshed, with clear_output(wait=True)
    assert sheeps_line.count("'COMPLETED'") == 2
