"""The parser of the argparse parity project, shared by `train_dora` and `train_adora`.

Pure argparse: importable by Dora's venv and by adora's. Every argument kind
whose signature handling could differ is here: ints, floats, strings, flags,
lists, choices, ``default=None``, a string default that argparse converts
(so it is always in the delta), a positional, and arguments excluded by
fnmatch patterns (matched against dest names, not flag names).
"""

import argparse

#: Exclude patterns given to both decorators. ``debug-level`` is a flag name:
#: it matches no dest (``debug_level``), so it excludes nothing, as in Dora.
EXCLUDE = ["num_workers", "log_*", "cache_?ir", "[xy]_extra", "debug-level"]


def build_parser():
    parser = argparse.ArgumentParser("aproj")
    parser.add_argument("dataset", nargs="?", default="cifar")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--wd", type=float, default=1e-4)
    parser.add_argument("--momentum", type=float, default=None)
    parser.add_argument("--scale", type=float, default="0.5")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--offset", type=int, default=-3)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--name", default="base")
    parser.add_argument("--note", type=str, default=None)
    parser.add_argument("--optim", choices=["sgd", "adam", "adamw"], default="sgd")
    parser.add_argument("--depth", type=int, choices=[18, 34, 50], default=18)
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--no_shuffle", dest="shuffle", action="store_false")
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 2])
    parser.add_argument("--tags", nargs="+", default=["x"])
    parser.add_argument("--milestones", type=int, nargs="*", default=None)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("--num_workers", type=int, default=4)
    parser.add_argument("--log_every", type=int, default=100)
    parser.add_argument("--log_dir", default="logs")
    parser.add_argument("--cache_dir", default="/tmp/cache")
    parser.add_argument("--x_extra", type=int, default=0)
    parser.add_argument("--z_extra", type=int, default=0)
    parser.add_argument("--debug-level", type=int, default=0)
    return parser


def train():
    """What the decorated mains run (the parity tests never call it)."""
    return None
