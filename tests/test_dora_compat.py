"""Dora 0.1.13 behaviour that real projects and scripts rely on (issue #14)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.conftest import adora_cli


def write_grid(root: Path, name: str, body: str) -> None:
    (root / "toy" / "grids" / f"{name}.py").write_text(
        "from adora import Explorer\n\n" + textwrap.dedent(body))


def test_dry_run_init_writes_every_argv_and_submits_nothing(toy_project: Path) -> None:
    write_grid(toy_project, "ini", """
        @Explorer
        def explorer(launcher):
            for seed in (1, 2, 3):
                launcher(seed=seed, epochs=1)
    """)
    out = adora_cli("grid", "ini", "--dry-run", "--init", "--json", cwd=toy_project)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["Grid ini"]
    xps = toy_project / "outputs" / "xps"
    for row in rows:
        assert json.loads((xps / row["sig"] / ".argv.json").read_text()) == row["argv"]
        assert row["state"] is None
    assert "Initialised 3 XP folder(s)" in out.stderr
    assert not (toy_project / "outputs" / ".adora" / "local" / "queue.db").exists()
    assert not (toy_project / "outputs" / ".adora" / "submissions").exists()
    # What --init is for: -f SIG on an XP that was never launched.
    info = adora_cli("info", "-f", rows[1]["sig"], cwd=toy_project)
    assert info.returncode == 0 and "seed=2" in info.stdout, info.stderr
    # A plain dry run still writes nothing.
    write_grid(toy_project, "dry", """
        @Explorer
        def explorer(launcher):
            launcher(seed=9, epochs=1)
    """)
    assert adora_cli("grid", "dry", "--dry-run", cwd=toy_project).returncode == 0
    assert len(list(xps.iterdir())) == 3


def test_the_grid_folder_exists_while_the_explorer_runs(toy_project: Path) -> None:
    # Explorers that list their grid's folder (audiocraft's evaluation grids do).
    write_grid(toy_project, "lister", """
        import os
        from toy.train import main

        @Explorer
        def explorer(launcher):
            folder = main.dora.dir / "grids" / "lister"
            for seed, _ in enumerate(sorted(os.listdir(folder)) + ["new"]):
                launcher(seed=seed, epochs=1)
    """)
    out = adora_cli("grid", "lister", "--dry-run", cwd=toy_project)
    assert out.returncode == 0, out.stderr
    assert (toy_project / "outputs" / "grids" / "lister").is_dir()


def test_options_abbreviated_as_dora_scripts_write_them(toy_project: Path) -> None:
    write_grid(toy_project, "ab", """
        @Explorer
        def explorer(launcher):
            launcher(seed=1, epochs=1)
    """)
    # Dora's argparse takes unique prefixes, in Dora's own spelling (with `_`).
    out = adora_cli("grid", "ab", "--dry_run", "--init", "--no_monitor", cwd=toy_project)
    assert out.returncode == 0, out.stderr
    assert "Initialised 1 XP folder(s)" in out.stderr
    short = adora_cli("grid", "ab", "--dry", "--no_git", "--dev", cwd=toy_project)
    assert short.returncode == 0, short.stderr
    assert "Submitted" not in short.stderr
    ambiguous = adora_cli("grid", "ab", "--d", cwd=toy_project)
    assert ambiguous.returncode == 2
    assert "Ambiguous option --d: it could be --dev, --dry-run" in ambiguous.stderr
    # Training arguments after `--` are never expanded.
    run = adora_cli("run", "--", "--dry", cwd=toy_project)
    assert run.returncode == 2 and "unrecognized arguments: --dry" in run.stderr


def test_expand_abbreviations_unit() -> None:
    from adora.cli import expand_abbreviations

    class P:
        def __init__(self, name: str, *opts: str) -> None:
            self.name, self.opts, self.secondary_opts = name, list(opts), []

    params = [P("dry_run", "--dry-run", "--dry_run"), P("dev", "--dev"),
              P("interval", "-i", "--interval"), P("no_monitoring", "--no-monitoring")]
    assert expand_abbreviations(params, ["--dry", "--inter=2", "--no_mon", "x", "--",
                                         "--dry"]) == [
        "--dry-run", "--interval=2", "--no-monitoring", "x", "--", "--dry"]
    assert expand_abbreviations(params, ["--unknown", "-i", "3"]) == ["--unknown", "-i", "3"]
    import pytest

    with pytest.raises(ValueError, match="--dev, --dry-run"):
        expand_abbreviations(params, ["--d"])
