"""Record Dora 0.1.13's signatures, deltas and launcher argvs into golden_sigs.json.

Runs with the python of a venv that has dora-search 0.1.13 and hydra-core (not
adora's). For every case of `cases.py` it asks Dora itself, through its public
API (``main.get_xp(argv).sig`` / ``.delta``, ``main.get_name(xp)``,
``main.value_to_argv(value)``), on the two projects of this folder:
``argparse_project/aproj`` and ``hydra_project/hproj``. adora's parity test
(``tests/test_dora_parity.py``) checks adora gives the same answers.

Re-run it (from the repository root) after changing `cases.py` or the projects::

    $(.venv/bin/python -m adora.testing.dora_venv) tests/dora_parity/record_dora_sigs.py

``--out PATH`` writes elsewhere (the live test does so, then compares).
"""

import argparse
import contextlib
import io
import json
import platform
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden_sigs.json"
for _folder in (HERE, HERE / "argparse_project", HERE / "hydra_project"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))


def _xp_case(main, argv, hydra):
    case = {"argv": list(argv)}
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            xp = main.get_xp(list(argv))
    except (Exception, SystemExit) as exc:  # argparse exits on bad arguments
        case["error"] = type(exc).__name__
        return case
    case["sig"] = xp.sig
    case["delta"] = xp.delta
    case["name"] = main.get_name(xp)
    if hydra:
        case["xp_argv"] = list(xp.argv)
    return case


def _hydra_cases(hmain, all_argv):
    from dora import hydra as dora_hydra

    # Dora's _compare_config keeps its recursion path in a mutable default
    # argument; a failed comparison (a key of the reference config deleted with
    # `~`, or `mapping=null`) leaves keys in it and corrupts the deltas of every
    # later XP of the process. Each such case is recorded as Dora answers it in a
    # fresh process: the path is emptied after a case that failed. One that
    # succeeded and still left keys would be a new Dora quirk: stop and say so.
    leaked_path = dora_hydra._compare_config.__defaults__[0]
    cases = []
    for index, argv in enumerate(all_argv):
        case = _xp_case(hmain, argv, True)
        if leaked_path:
            if "error" not in case:
                raise RuntimeError(f"Dora's hydra state leaked {leaked_path} after the "
                                   f"successful case {index} {argv}.")
            leaked_path.clear()
        cases.append(case)
    return cases


def record():
    import dora
    import hydra
    from aproj.train_dora import main as amain
    from aproj.train_dora import main_dash
    from cases import (
        N_RANDOM_ARGPARSE,
        N_RANDOM_HYDRA,
        N_RANDOM_HYDRA_GROUPS,
        SEED,
        argparse_cases,
        hydra_cases,
        value_to_argv_cases,
    )
    from hproj.train_dora import main as hmain

    if dora.__version__ != "0.1.13":
        raise SystemExit(f"Needs dora-search 0.1.13, found {dora.__version__}.")
    mains = {"argparse": amain, "argparse_dash": main_dash, "hydra": hmain}
    conversions = []
    for style, value in value_to_argv_cases():
        case = {"style": style, "input": repr(value)}
        try:
            case["argv"] = mains[style].value_to_argv(value)
        except Exception as exc:
            case["error"] = type(exc).__name__
        conversions.append(case)
    return {
        "meta": {
            "dora": dora.__version__, "hydra": hydra.__version__,
            "python": platform.python_version(), "seed": SEED,
            "n_random_argparse": N_RANDOM_ARGPARSE, "n_random_hydra": N_RANDOM_HYDRA,
            "n_random_hydra_groups": N_RANDOM_HYDRA_GROUPS,
            "how": "tests/dora_parity/record_dora_sigs.py (see its docstring)",
        },
        "argparse": [_xp_case(amain, argv, False) for argv in argparse_cases()],
        "hydra": _hydra_cases(hmain, hydra_cases()),
        "value_to_argv": conversions,
    }


def dumps(golden):
    """JSON with one case per line, so that a change shows as a readable diff."""
    parts = ["{", f'"meta": {json.dumps(golden["meta"], sort_keys=True)},']
    keys = ["argparse", "hydra", "value_to_argv"]
    for index, key in enumerate(keys):
        parts.append(f'"{key}": [')
        lines = [json.dumps(case) for case in golden[key]]
        parts.append(",\n".join(lines))
        parts.append("]" + ("," if index < len(keys) - 1 else ""))
    parts.append("}")
    return "\n".join(parts) + "\n"


def main(args=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=GOLDEN, help="Default: %(default)s")
    opts = parser.parse_args(args)
    warnings.simplefilter("ignore")  # torch and Hydra warnings are not our business
    golden = record()
    opts.out.write_text(dumps(golden), encoding="utf8")
    counts = ", ".join(f"{len(golden[k])} {k}" for k in ("argparse", "hydra", "value_to_argv"))
    print(f"Wrote {counts} cases to {opts.out}")


if __name__ == "__main__":
    main()
