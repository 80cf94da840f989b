"""`adora plot`: one panel per metric, one line per XP, read through the watch pipeline."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import typing as tp
from pathlib import Path

import pytest

from adora.package import load_main
from tests.conftest import adora_cli
from tests.test_ssh_backend import CPU, beds, cluster_toml, laptop, wait_rows  # noqa: F401

pytest.importorskip("matplotlib")

FAST = """
    @Explorer
    def explorer(launcher):
        launcher.bind_(epochs=3)
        for lr in [0.01, 0.1]:
            for hidden in [2, 4]:
                launcher(lr=lr, hidden=hidden)
"""


def write_grid(root: Path, name: str, body: str) -> None:
    (root / "toy" / "grids" / f"{name}.py").write_text(
        "from adora import Explorer\n\n" + textwrap.dedent(body))


def histories(root: Path, sigs: tp.Iterable[str]) -> dict[str, list[dict[str, tp.Any]]]:
    from adora.link import read_history

    main = load_main("toy")
    return {sig: read_history(main.get_xp_from_sig(sig).history) or [] for sig in sigs}


def run_until_done(root: Path, name: str, *args: str, env: dict[str, str] | None = None,
                   timeout: float = 180) -> None:
    out = adora_cli("grid", name, *args, cwd=root, env=env)
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + timeout
    while True:
        out = adora_cli("grid", name, *args, "--json", cwd=root, env=env)
        rows = __import__("json").loads(out.stdout)[name]
        if all(r["state"] in ("COMPLETED", "FAILED", "CANCELLED") for r in rows):
            assert {r["state"] for r in rows} == {"COMPLETED"}, rows
            return
        assert time.monotonic() < deadline, rows
        time.sleep(1)


def lines_by_label(figure: tp.Any, panel: int = 0) -> dict[str, tp.Any]:
    return {line.get_label(): line for line in figure.axes[panel].get_lines()}


def test_plot_a_local_grid_draws_one_line_per_selected_xp(toy_project: Path) -> None:
    from adora.cli_plot import make_figure

    write_grid(toy_project, "fast", FAST)
    run_until_done(toy_project, "fast", "--backend", "local")
    main = load_main("toy")
    figure, metrics, curves = make_figure(main, ["fast", "!hidden=4"],
                                          metrics=["valid.loss", "train.loss"], by="lr",
                                          backend="local")
    assert metrics == ["valid.loss", "train.loss"]
    assert [ax.get_title() for ax in figure.axes] == metrics  # one panel per metric
    truth = histories(toy_project, [c.sig for c in curves])
    for panel, metric in enumerate(metrics):
        lines = lines_by_label(figure, panel)
        # One line per selected XP, labelled by its short name (as the table names it).
        assert sorted(lines) == ["lr=0.01 hidden=2", "lr=0.1 hidden=2"]
        for line in lines.values():
            sig = line.get_gid()
            group, key = metric.split(".")
            assert list(line.get_xdata()) == [1, 2, 3]
            assert list(line.get_ydata()) == [e[group][key] for e in truth[sig]]
    # --by lr: one colour per value, and the legend lists the values.
    colours = {line.get_label(): line.get_color() for line in figure.axes[0].get_lines()}
    assert colours["lr=0.01 hidden=2"] != colours["lr=0.1 hidden=2"]
    legend = figure.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["lr=0.01", "lr=0.1"]

    # The command writes the file; the PNG has the figure's pixels.
    out = adora_cli("plot", "fast", "-m", "valid.loss", "-o", "plots/curves.png", "--by",
                    "hidden", cwd=toy_project)
    assert out.returncode == 0, out.stderr
    assert "1 panel(s) (valid.loss), 4 XP(s)" in out.stdout
    import matplotlib.image

    image = matplotlib.image.imread(toy_project / "plots" / "curves.png")
    assert image.shape[0] > 100 and image.shape[1] > 100
    for bad, message in [(["-m", "nope"], "metrics found: train.loss, valid.loss"),
                         (["-o", "curves.txt"], "must end with .png, .svg, .pdf")]:
        out = adora_cli("plot", "fast", *bad, cwd=toy_project)
        assert out.returncode == 2 and message in out.stderr, out.stderr


def test_by_a_default_hyper_parameter_reads_the_config(toy_project: Path) -> None:
    from adora.cli_plot import make_figure

    write_grid(toy_project, "fast", FAST)
    run_until_done(toy_project, "fast", "--backend", "local")
    figure, _, curves = make_figure(load_main("toy"), ["fast"], metrics=["valid.loss"],
                                    by="seed", backend="local")  # not in any XP's delta
    assert {c.group for c in curves} == {42}
    assert len(figure.axes[0].get_lines()) == 4


def test_help_does_not_import_matplotlib() -> None:
    code = textwrap.dedent("""
        import sys
        from adora.cli import main
        for args in (["--help"], ["plot", "--help"], ["grid", "--help"]):
            try:
                main(args)
            except SystemExit:
                pass
        print("matplotlib" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert "-m, --metric" in out.stdout and "--by" in out.stdout


@beds
def test_plot_a_cluster_grid_reads_metrics_over_sftp(toy_project: Path,
                                                      laptop: dict[str, str]) -> None:  # noqa: F811
    from adora.cli_plot import make_figure

    write_grid(toy_project, "remote", f"""
        @Explorer
        def explorer(launcher):
            {CPU}
            launcher.bind_(epochs=2)
            for lr in [0.01, 0.1]:
                launcher(lr=lr)
    """)
    out = adora_cli("grid", "remote", "--cluster", "test", cwd=toy_project, env=laptop)
    assert out.returncode == 0, out.stderr
    rows = wait_rows(toy_project, laptop, "remote",
                     lambda rows: all(r["state"] in ("COMPLETED", "FAILED") for r in rows)
                     and all("valid" in r["metrics"] for r in rows))
    assert {r["state"] for r in rows} == {"COMPLETED"}
    main = load_main("toy")
    sigs = [r["sig"] for r in rows]
    for sig in sigs:  # the metrics live on the cluster only
        assert not (main.dora.dir / "xps" / sig / "history.jsonl").exists()
    figure, _, curves = make_figure(main, ["remote"], metrics=["valid.loss"],
                                    cluster="test")
    lines = lines_by_label(figure)
    assert sorted(lines) == ["lr=0.01", "lr=0.1"]
    assert all(list(line.get_xdata()) == [1, 2] for line in lines.values())
    last = {r["name"]: r["metrics"]["valid"]["loss"] for r in rows}
    for name, line in lines.items():
        assert line.get_ydata()[-1] == pytest.approx(last[name])
    out = adora_cli("plot", "remote", "--cluster", "test", "-o", "remote.svg",
                    cwd=toy_project, env=laptop)
    assert out.returncode == 0, out.stderr
    svg = (toy_project / "remote.svg").read_text()
    assert svg.count('id="' + sigs[0]) == 2  # its line in each panel (train, valid)
