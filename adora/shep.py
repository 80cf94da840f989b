"""The user-facing names of Dora's ``dora.shep``.

`Sheep` (an XP and its current job) and the preemption callback registry, under
Dora's names (including its spelling ``register_preemption_callaback``). Dora's
``Shepherd``, which schedules XPs one by one, has no counterpart: adora's engine
(`adora.run_grid`, `adora.grid.run_grid`) schedules a whole grid at once.
"""

from __future__ import annotations

import typing as tp

from .backends.slurm_job import register_preemption_callback
from .explore import Sheep

__all__ = ["Sheep", "no_log", "register_preemption_callaback", "register_preemption_callback"]

#: Dora's spelling, kept for code that calls it.
register_preemption_callaback = register_preemption_callback


def no_log(*args: tp.Any) -> None:
    """A log function that logs nothing (Dora passed it to quiet its scheduler)."""
