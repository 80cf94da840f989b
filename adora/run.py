"""Running one experiment in the foreground, in this process (`adora run`)."""

from __future__ import annotations

import os
import sys
import typing as tp

from .files import clear_folder
from .main import DecoratedMain
from .xp import XP

__all__ = ["clear_xp", "run_xp"]


def clear_xp(xp: XP) -> bool:
    """Delete the folder of ``xp`` (checkpoints, metrics, logs); True if there was one.

    A folder that is a link to another folder is emptied there (`clear_folder`).
    """
    return clear_folder(xp.folder)


def run_xp(main: DecoratedMain, argv: tp.Sequence[str]) -> tp.Any:
    """Run ``main`` on ``argv`` in this process, inside its XP.

    Outside of a distributed launcher, RANK/LOCAL_RANK/WORLD_SIZE default to a
    single worker, as ``dora run`` does. Returns what ``main`` returns.
    """
    if "WORLD_SIZE" not in os.environ:
        os.environ["LOCAL_RANK"] = "0"
        os.environ["RANK"] = "0"
        os.environ["WORLD_SIZE"] = "1"
    old_argv = sys.argv[1:]
    sys.argv[1:] = list(argv)
    try:
        return main()
    finally:
        sys.argv[1:] = old_argv
