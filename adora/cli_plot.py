"""`adora plot`: learning curves of grids, from one snapshot of the watch pipeline.

Imported only when the command runs; matplotlib only when the figure is built.
"""

from __future__ import annotations

import typing as tp
from pathlib import Path

import anyio
import typer

from .errors import ConfigError

if tp.TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .engine.snapshots import Snapshot
    from .main import DecoratedMain
    from .plots import Curve

__all__ = ["make_figure", "plot_command"]

#: Metrics plotted when none is named: the first ones found.
DEFAULT_METRICS = 6
FORMATS = ("png", "svg", "pdf")


def make_figure(main: DecoratedMain, words: list[str], *, metrics: tp.Sequence[str] = (),
                by: str | None = None, backend: str | None = None,
                cluster: str | None = None) -> tuple[Figure, list[str], list[Curve]]:
    """The figure `adora plot` writes, with the metrics plotted and the curves drawn."""
    from .api import watch_grid
    from .cli_grid import split_grids
    from .plots import build_figure, curves_of, hyper_parameter, metric_keys

    names, patterns = split_grids(main, words)

    async def pipeline() -> Snapshot:
        async with watch_grid(main, names, patterns, backend=backend, cluster=cluster) as w:
            return await w.snapshot()

    snap = anyio.run(pipeline)
    if not snap.xps:
        raise ConfigError("The grid selects no XP: nothing to plot.")
    # Metrics of the last entries first: the order a history settles into.
    found = metric_keys(e for xp in snap.xps.values() for e in xp.history[-1:])
    found += [k for k in metric_keys(e for xp in snap.xps.values() for e in xp.history)
              if k not in found]
    metrics = list(metrics)
    if not metrics:
        metrics = found[:DEFAULT_METRICS]
        if not metrics:
            raise ConfigError("No XP of the grid has metrics yet: nothing to plot.")
    unknown = [m for m in metrics if m not in found]
    if unknown:
        raise ConfigError(f"No XP has the metric {', '.join(unknown)}; metrics found: "
                          f"{', '.join(found) or 'none'}.")
    group_of = None if by is None else (lambda xp: hyper_parameter(main, xp, by))
    curves = curves_of(snap, metrics, group_of)
    figure = build_figure(curves, metrics, by=by, title="Grid " + ", ".join(names))
    return figure, metrics, curves


def plot_command(main: DecoratedMain, words: list[str], *, metrics: list[str],
                 by: str | None, output: str, backend: str, cluster: str | None) -> int:
    """Write the curves of the XPs the grids and patterns of ``words`` select."""
    path = Path(output)
    if path.suffix.lstrip(".").lower() not in FORMATS:
        raise ConfigError(f"-o/--output must end with .{', .'.join(FORMATS)}: {output}")
    figure, metrics, curves = make_figure(main, words, metrics=metrics, by=by,
                                          backend=backend, cluster=cluster)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    typer.echo(f"Wrote {path}: {len(metrics)} panel(s) ({', '.join(metrics)}), "
               f"{len(curves)} XP(s).")
    return 0
