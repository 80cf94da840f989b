"""Short human names for experiments, built from their delta as Dora does.

``optim.lr=0.1`` becomes ``opt.lr=0.1``; ``True`` flags print their key only;
what all XPs of a grid share is factored out into a "base name".
"""

from __future__ import annotations

import typing as tp
from collections import OrderedDict
from pathlib import Path

if tp.TYPE_CHECKING:
    from .xp import XP

__all__ = ["NamesMixin"]


class NamesMixin:
    """Naming of experiments; mixed into `DecoratedMain`, override to customise."""

    def short_name_part(self, key: str, value: tp.Any) -> str:
        """One ``key=value`` part, with every dotted component but the last cut to 3 letters."""
        parts = key.split(".")
        key = ".".join([p[:3] for p in parts[:-1]] + parts[-1:])
        if isinstance(value, Path):
            value = value.name
        if value is True:
            return key
        return f"{key}={value}"

    def get_name_parts(self, xp: XP) -> OrderedDict[str, tp.Any]:
        """Ordered mapping name -> value of what sets this XP apart (its delta)."""
        parts: OrderedDict[str, tp.Any] = OrderedDict()
        for name, value in xp.delta or []:
            parts[name] = value
        return parts

    def get_name(self, xp: XP) -> str:
        """The name of ``xp`` on its own: every part of its delta."""
        return self.get_names([xp])[1]

    def _get_short_name(self, parts: tp.Mapping[str, tp.Any],
                        reference: tp.Mapping[str, tp.Any] | None = None) -> str:
        reference = reference or {}
        return " ".join(self.short_name_part(k, v) for k, v in parts.items() if k not in reference)

    def get_names(self, xps: tp.Sequence[XP]) -> tuple[list[str], str]:
        """Names of ``xps`` with their common parts factored into a base name."""
        if not xps:
            raise ValueError("get_names needs at least one XP.")
        all_parts = [self.get_name_parts(xp) for xp in xps]
        reference = OrderedDict(all_parts[0])
        for parts in all_parts:
            for key in list(reference):
                if key not in parts or parts[key] != reference[key]:
                    del reference[key]
        names = [self._get_short_name(parts, reference) for parts in all_parts]
        return names, self._get_short_name(reference)
