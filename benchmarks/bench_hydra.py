"""Benchmark H1 (issue 13): dry run of a 1,000-XP grid of a Hydra project, adora vs Dora.

The project is hydra_project.py's (6 config groups, one nested, an optional
group, a package override, interpolations, excluded keys). Each tool first runs
the grid once with ``--init`` (untimed: the warm-up, and it writes every XP's
folder and ``.argv.json``, and the grid's links), then ``--runs`` timed dry runs:

    adora -P ahydra grid h1k --dry-run --backend local
    dora -P dhydra grid h1k --dry_run --no_monitoring

The signatures are then compared: both tools must have initialised the same 1,000
XP folders (named by signature), each holding the same argv.
"""

from __future__ import annotations

import json
import typing as tp
from pathlib import Path

from _util import LOGS, BenchError, log, median_measure, run_measured
from hydra_project import ADORA_HYDRA_PKG, DORA_HYDRA_PKG, HYDRA_GRIDS, make_hydra_project
from report import Row


def _grid_sigs(outputs: Path) -> dict[str, list[str]]:
    """Signature -> argv of every XP folder (a dry run with --init writes each XP's
    folder and .argv.json, and no grid links; only this grid writes to ``outputs``)."""
    folder = outputs / "xps"
    if not folder.is_dir():
        raise BenchError(f"no XP folder {folder}")
    return {xp.name: json.loads((xp / ".argv.json").read_text())
            for xp in folder.iterdir() if (xp / ".argv.json").exists()}


def bench_hydra_dryrun(ctx: tp.Any) -> None:
    make_hydra_project(ctx.proj)
    for grid, n in HYDRA_GRIDS.items():
        runs = ctx.opts.hydra_runs
        log(f"[H1] Hydra project, dry run of the {n}-XP grid {grid} ({runs} timed runs each)")
        expect = _expect_xps(n)
        adora = [*ctx.adora, "-P", ADORA_HYDRA_PKG, "grid", grid]
        dora = [*ctx.dora, "-P", DORA_HYDRA_PKG, "grid", grid]
        init = run_measured([*adora, "--dry-run", "--init", "--backend", "local"],
                            cwd=ctx.proj, env=ctx.env, stdout=LOGS / "out-hydra-init-a.txt")
        log(f"  adora --init (warm-up): wall {init.wall:.2f} s, cpu {init.cpu:.2f} s")
        a = ctx.measure(f"hydra_{grid}_adora", [*adora, "--dry-run", "--backend", "local"],
                        ctx.env, runs, warmup=0, check_output=expect)
        # Dora composes twice per XP: minutes per run on a loaded machine, beyond
        # run_measured's default 600 s limit.
        init = run_measured([*dora, "--dry_run", "--init", "--no_monitoring"], cwd=ctx.proj,
                            env=ctx.dora_env, stdout=LOGS / "out-hydra-init-d.txt",
                            timeout=DORA_TIMEOUT)
        log(f"  Dora --init (warm-up): wall {init.wall:.2f} s, cpu {init.cpu:.2f} s")
        d = _measure_slow(ctx, f"hydra_{grid}_dora", [*dora, "--dry_run", "--no_monitoring"],
                          runs, check_output=expect)
        a_sigs = _grid_sigs(ctx.proj / "outputs_adora_hydra")
        d_sigs = _grid_sigs(ctx.proj / "outputs_dora_hydra")
        same_sigs = sorted(a_sigs) == sorted(d_sigs)
        same_argv = same_sigs and all(a_sigs[s] == d_sigs[s] for s in d_sigs)
        ctx.raw[f"hydra_{grid}_sigs"] = {"adora": len(a_sigs), "dora": len(d_sigs),
                                         "identical": same_sigs, "same_argv": same_argv}
        log(f"  signatures: adora {len(a_sigs)}, Dora {len(d_sigs)}, identical: {same_sigs}, "
            f"same argv in every folder: {same_argv}")
        if len(d_sigs) != n or not same_sigs or not same_argv:
            only_a = sorted(set(a_sigs) - set(d_sigs))[:5]
            only_d = sorted(set(d_sigs) - set(a_sigs))[:5]
            raise BenchError(f"Hydra grid {grid}: the signatures differ (adora only {only_a}, "
                             f"Dora only {only_d})")
        label = f"H1. Hydra dry run {n:,} XPs"
        note = (f"6 config groups; {len(a_sigs)} signatures identical to Dora's, same argv "
                "in every XP folder")
        ctx.rows.append(Row(label, f"wall, median of {runs}", "s", a["wall"], d["wall"],
                            ("ratio", 0.1), note=note))
        ctx.rows.append(Row(label, "CPU", "s", a["cpu"], d["cpu"]))
        ctx.rows.append(Row(label, "peak RSS", "MB", a["maxrss_mb"], d["maxrss_mb"]))


DORA_TIMEOUT = 3600.0


def _measure_slow(ctx: tp.Any, name: str, cmd: list[str], runs: int,
                  check_output: tp.Callable[[str], None]) -> dict[str, tp.Any]:
    """`Context.measure` without warm-up, with DORA_TIMEOUT per run."""
    out = LOGS / f"out-{name}.txt"
    measures = [run_measured(cmd, cwd=ctx.proj, env=ctx.dora_env, stdout=out,
                             timeout=DORA_TIMEOUT) for _ in range(runs)]
    check_output(out.read_text(errors="replace"))
    result = median_measure(measures)
    result["cmd"] = " ".join(cmd)
    ctx.raw[name] = result
    log(f"  {name}: wall {result['wall']:.3f} s (runs {result['wall_all']}), "
        f"cpu {result['cpu']:.3f} s, peak {result['maxrss_mb']:.0f} MB")
    return result


def _expect_xps(n: int) -> tp.Callable[[str], None]:
    def check(text: str) -> None:
        if f"{n - 1} " not in text:
            raise BenchError(f"the output does not show XP #{n - 1}:\n{text[-500:]}")
    return check
