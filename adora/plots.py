"""Learning curves of a grid (`adora plot`): one panel per metric, one line per XP.

The metrics come from a snapshot of the watch pipeline (`adora.watch_grid`), so
the curves of a local, Slurm or remote grid are read the way its table is (over
SFTP for a cluster). matplotlib (``pip install 'adora[plot]'``) is imported by
`build_figure` only: ``adora --help`` and the other commands never load it.
"""

from __future__ import annotations

import math
import typing as tp
from dataclasses import dataclass, field

from .errors import ConfigError

if tp.TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .engine.snapshots import Snapshot, XPSnapshot
    from .main import DecoratedMain

__all__ = ["Curve", "build_figure", "config_value", "curves_of", "hyper_parameter",
           "metric_keys", "metric_value"]

_MISSING = object()


def metric_value(entry: tp.Mapping[str, tp.Any], key: str) -> float | None:
    """The number under ``key`` in a history entry: ``valid.loss`` reads
    ``entry["valid"]["loss"]`` (or a flat ``entry["valid.loss"]``); None when absent
    or not a number."""
    value: tp.Any = entry.get(key, _MISSING)
    if value is _MISSING:
        value = entry
        for part in key.split("."):
            if not isinstance(value, tp.Mapping) or part not in value:
                return None
            value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def metric_keys(entries: tp.Iterable[tp.Mapping[str, tp.Any]]) -> list[str]:
    """The dotted keys of every number found in ``entries``, in order of appearance."""
    keys: dict[str, None] = {}

    def walk(value: tp.Any, prefix: str) -> None:
        if isinstance(value, tp.Mapping):
            for k, v in value.items():
                walk(v, f"{prefix}{k}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            keys.setdefault(prefix[:-1], None)

    for entry in entries:
        walk(entry, "")
    return list(keys)


def hyper_parameter(main: DecoratedMain, xp: XPSnapshot, key: str) -> tp.Any:
    """The value of hyper-parameter ``key`` for ``xp``: from its delta (by full or short
    name, as the table writes it), else from its configuration (defaults included)."""
    for name, value in xp.delta:
        if name == key or main.short_name_part(name, value).split("=", 1)[0] == key:
            return value
    return config_value(main.get_xp(list(xp.argv)).cfg, key)


def config_value(cfg: tp.Any, key: str) -> tp.Any:
    """``cfg.a.b`` for ``key`` ``a.b`` (attributes or items: argparse namespaces, Hydra
    configs, dicts); None when absent. Dora evaluated ``'xp.cfg.' + key``."""
    for part in key.split("."):
        if isinstance(cfg, tp.Mapping):
            if part not in cfg:
                return None
            cfg = cfg[part]
        elif hasattr(cfg, part):
            cfg = getattr(cfg, part)
        else:
            return None
    return cfg


@dataclass
class Curve:
    """One XP's line: ``points[metric]`` is (epochs, values), epochs counted from 1."""

    sig: str
    label: str
    group: tp.Any = None
    points: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)


def curves_of(snapshot: Snapshot, metrics: tp.Sequence[str],
              group_of: tp.Callable[[XPSnapshot], tp.Any] | None = None) -> list[Curve]:
    """One `Curve` per XP of ``snapshot`` (in table order), for these metrics."""
    out = []
    for xp in snapshot.xps.values():
        curve = Curve(xp.sig, xp.name or xp.sig, group_of(xp) if group_of else None)
        for metric in metrics:
            xs: list[int] = []
            ys: list[float] = []
            for epoch, entry in enumerate(xp.history, 1):
                value = metric_value(entry, metric)
                if value is not None and not math.isnan(value):
                    xs.append(epoch)
                    ys.append(value)
            curve.points[metric] = (xs, ys)
        out.append(curve)
    return out


#: Lines drawn before the legend is left out (it would hide the panels).
MAX_LEGEND = 30


def build_figure(curves: tp.Sequence[Curve], metrics: tp.Sequence[str], *,
                 by: str | None = None, title: str | None = None) -> Figure:
    """A matplotlib figure: one panel per metric, one line per curve labelled by the XP's
    short name; with ``by``, lines share one colour per value of that hyper-parameter
    and the legend lists the values.

    No pyplot and no GUI: the figure is built and saved off screen.
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
    except ImportError as exc:
        raise ConfigError("adora plot needs matplotlib: pip install 'adora[plot]'.") from exc
    if not metrics:
        raise ConfigError("Name at least one metric to plot (-m valid.loss).")
    ncols = min(len(metrics), 3)
    nrows = (len(metrics) + ncols - 1) // ncols
    fig = Figure(figsize=(5.5 * ncols + 2.5, 4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    groups: dict[tp.Any, tp.Any] = {}  # value -> colour
    if by is not None:
        import matplotlib

        palette = matplotlib.colormaps["tab10" if len(
            {_key(c.group) for c in curves}) <= 10 else "viridis"]
        values = sorted({_key(c.group) for c in curves}, key=_sortable)
        for i, value in enumerate(values):
            groups[value] = palette(i / max(1, len(values) - 1) if len(values) > 10 else i)
    for ax, metric in zip(axes, metrics):
        for index, curve in enumerate(curves):
            xs, ys = curve.points.get(metric, ([], []))
            color = groups[_key(curve.group)] if by is not None else f"C{index % 10}"
            ax.plot(xs, ys, label=curve.label, color=color, gid=curve.sig,
                    marker="." if len(xs) < 30 else None)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    if by is not None:
        handles = [Line2D([], [], color=color, label=f"{by}={value}")
                   for value, color in groups.items()]
        fig.legend(handles=handles, loc="outside right upper", title=by)
    elif 0 < len(curves) <= MAX_LEGEND:
        fig.legend(handles=list(axes[0].get_lines()), loc="outside right upper",
                   fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def _key(value: tp.Any) -> tp.Any:
    # Group values as dict keys: lists and dicts (Hydra configs) by their text.
    try:
        hash(value)
        return value
    except TypeError:
        return repr(value)


def _sortable(value: tp.Any) -> tuple[int, tp.Any]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))
