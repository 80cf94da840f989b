"""HiPlot support, as in Dora: ``python -m hiplot adora.hiplot.load``.

At HiPlot's prompt, type grid names and/or XP signatures separated by spaces,
plus optional ``key=value`` tokens:

- ``explorer=Name``: a `HiPlotExplorer` subclass, looked up in
  ``<grid package>._hiplot`` (e.g. ``yourproject/grids/_hiplot.py``);
- ``explorer_module=mod``: look it up in that module instead;
- ``cluster=C`` (adora): the XPs ran on remote cluster ``C``: metrics are read
  over SFTP;
- ``rows=last`` (adora): one row per XP with its last metrics, instead of
  Dora's one row per epoch (linked with ``from_uid``; the ``last`` column marks
  each XP's last epoch).

The metrics come from one snapshot of the watch pipeline (`adora.watch_grid`),
the same reader as the table's. hiplot itself (``pip install 'adora[hiplot]'``)
is imported when `load` runs, never by ``import adora``.
"""

from __future__ import annotations

import math
import pydoc
import shlex
import sys
import typing as tp

from .errors import ConfigError

if tp.TYPE_CHECKING:
    import hiplot

    from .engine.snapshots import Snapshot
    from .main import DecoratedMain
    from .xp import XP

__all__ = ["STYLE", "HiPlotExplorer", "load", "roundf"]


def roundf(value: float, precision: int = 4) -> float:
    """``value`` rounded to ``precision`` decimals, still a float (nicer in HiPlot)."""
    if not math.isfinite(value):
        return value
    return round(value * 10 ** precision) / 10 ** precision


class HiPlotExplorer:
    """Subclass it in ``yourproject/grids/_hiplot.py`` to choose metrics or tune the
    display, then type ``explorer=YourExplorer`` at HiPlot's prompt."""

    def process_metrics(self, xp: XP, metrics: dict[str, tp.Any]) -> dict[str, tp.Any]:
        """One history entry, as shown (e.g. keep some metrics, round them)."""
        return metrics

    def process_history(self, xp: XP, history: tp.Sequence[dict[str, tp.Any]]
                        ) -> list[dict[str, tp.Any]]:
        """The entries of one XP, as shown: one row each."""
        return [self.process_metrics(xp, m) for m in history]

    def postprocess_exp(self, exp: hiplot.Experiment) -> None:
        """Tune the `hiplot.Experiment` last, e.g. set up an XY plot."""
        return


class STYLE:
    """CSS classes of the column labels."""

    metrics = "badge badge-pill badge-primary"
    internal = "badge badge-pill badge-secondary"
    params = "badge badge-pill badge-dark"


def _flatten(dct: tp.Mapping[str, tp.Any], out: dict[str, tp.Any] | None = None,
             prefix: str = "") -> dict[str, tp.Any]:
    out = {} if out is None else out
    for key, value in dct.items():
        if isinstance(value, tp.Mapping):
            _flatten(value, out=out, prefix=prefix + key + ".")
        else:
            out[prefix + key] = value
    return out


def _displayable(value: tp.Any) -> tp.Any:
    omegaconf = sys.modules.get("omegaconf")  # a Hydra config: only if Hydra is loaded
    if omegaconf is not None and isinstance(value, omegaconf.basecontainer.BaseContainer):
        value = omegaconf.OmegaConf.to_container(value, resolve=True)
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value)
    elif isinstance(value, dict):
        value = str(value)
    return value


class _Request(tp.NamedTuple):
    sigs: list[str]
    explorer: HiPlotExplorer
    cluster: str | None
    last_only: bool


def _parse(main: DecoratedMain, uri: str) -> _Request:
    from .engine import grids as grids_mod

    sigs: dict[str, None] = {}
    explorer_module: str | None = None
    explorer_name = "HiPlotExplorer"
    cluster: str | None = None
    last_only = False
    for token in shlex.split(uri):
        if "=" in token:
            key, value = token.split("=", 1)
            if key == "explorer":
                explorer_name = value
                if explorer_module is None:
                    explorer_module = grids_mod.grid_package(main) + "._hiplot"
            elif key == "explorer_module":
                explorer_module = value
            elif key == "cluster":
                cluster = value
            elif key == "rows":
                if value not in ("last", "epochs"):
                    raise ConfigError(f"rows= is 'last' (one row per XP) or 'epochs' (one "
                                      f"row per epoch, as Dora), not {value!r}.")
                last_only = value == "last"
            else:
                raise ConfigError(f"Invalid param {key}: use explorer=, explorer_module=, "
                                  f"cluster= or rows=.")
            continue
        if (grids_mod.grids_dir(main) / token).is_dir():
            sigs.update(dict.fromkeys(grids_mod.grid_members(main, token)))
        else:
            sigs[token] = None
    qualified = (explorer_module or __name__) + "." + explorer_name
    klass = pydoc.locate(qualified)
    if klass is None:
        raise ConfigError(f"No HiPlot explorer {qualified}.")
    return _Request(list(sigs), tp.cast(tp.Any, klass)(), cluster, last_only)


def _snapshot(main: DecoratedMain, request: _Request) -> Snapshot:
    import anyio

    from .api import _in_running_loop, watch_grid

    async def take() -> Snapshot:
        async with watch_grid(main, sigs=request.sigs, cluster=request.cluster) as watcher:
            return await watcher.snapshot()

    if not _in_running_loop():
        return anyio.run(take)
    # Called from a running loop (a notebook): take the snapshot on a thread of its own.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, take).result()


def load(uri: str) -> hiplot.Experiment:
    """The HiPlot loader: ``python -m hiplot adora.hiplot.load``, then type grid names
    and/or signatures (see the module's docstring for the ``key=value`` tokens).

    Parameter columns are what tells the XPs apart (`get_name_parts`, short names);
    an XP that does not set one shows its configured value. Each row also has the
    XP's ``sig``, job ``state``, ``epoch``, ``last`` (its last epoch) and metrics.
    """
    import hiplot

    from .package import load_main
    from .plots import config_value

    main = load_main()
    request = _parse(main, uri)
    exp = hiplot.Experiment()
    if not request.sigs:
        return exp
    snap = _snapshot(main, request)
    xps = {sig: main.get_xp(list(x.argv)) for sig, x in snap.xps.items()}
    if not xps:
        return exp

    # Columns: the name parts not shared by every XP (as names.get_names factors them).
    all_parts = {sig: main.get_name_parts(xp) for sig, xp in xps.items()}
    reference = dict(next(iter(all_parts.values())))
    columns: dict[str, None] = {}
    for parts in all_parts.values():
        columns.update(dict.fromkeys(parts))
        for key in list(reference):
            if key not in parts or parts[key] != reference[key]:
                del reference[key]
    columns = {k: None for k in columns if k not in reference}

    metric_names: dict[str, None] = {}
    for sig, xp in xps.items():
        parts = all_parts[sig]
        values: dict[str, tp.Any] = {}
        for key in columns:
            value = parts[key] if key in parts else config_value(xp.cfg, key)
            short = main.short_name_part(key, value).split("=", 1)[0]
            values[short] = _displayable(value)
            exp.parameters_definition[short].label_css = STYLE.params
        view = snap.xps[sig]
        values["sig"] = sig
        values["state"] = view.state
        history = request.explorer.process_history(xp, list(view.history))
        points = list(enumerate(history))
        if request.last_only:
            points = points[-1:]
        from_uid: str | None = None
        for epoch, metrics in points:
            point = dict(values)
            point["epoch"] = epoch
            point["last"] = epoch == len(history) - 1
            flat = _flatten(metrics)
            point.update(flat)
            datapoint = hiplot.Datapoint(uid=f"{sig}_{epoch}", from_uid=from_uid,
                                         values=point)
            from_uid = datapoint.uid
            exp.datapoints.append(datapoint)
            for key in flat:
                metric_names[key] = None
                exp.parameters_definition[key].label_css = STYLE.metrics
        if not points:  # no metrics yet: still a row with its hyper-parameters
            exp.datapoints.append(hiplot.Datapoint(uid=sig, values={**values, "last": True}))

    exp.display_data(hiplot.Displays.PARALLEL_PLOT).update({
        "hide": ["from_uid", "uid"],
        "order": ["last", "epoch", *metric_names],
    })
    exp.display_data(hiplot.Displays.TABLE).update({
        "hide": ["from_uid"],
        "order": ["sig", "state", "last", "epoch", *metric_names],
    })
    for key in ("epoch", "last", "sig", "state"):
        exp.parameters_definition[key].label_css = STYLE.internal
    request.explorer.postprocess_exp(exp)
    return exp
