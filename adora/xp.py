"""Experiments (XPs): their signature, their folder, and the "current XP" context.

An XP is one set of hyper-parameters. Its identity is its *delta*: the
(argument, value) pairs that differ from the defaults, minus excluded ones.
The signature is computed exactly as Dora 0.1.13 does, so an XP folder made by
Dora is the folder adora uses for the same arguments::

    sha1(json.dumps(sorted(jsonable(delta)))).hexdigest()[:8]
"""

from __future__ import annotations

import json
import sys
import typing as tp
from contextlib import contextmanager
from dataclasses import dataclass, field
from hashlib import sha1
from pathlib import Path

from .conf import DoraConfig
from .link import Link

__all__ = ["XP", "get_sig", "get_xp", "is_xp", "jsonable"]


def jsonable(value: tp.Any) -> tp.Any:
    """Convert ``value`` to plain JSON types the way Dora does.

    Tuples become lists, `Path` becomes `str`, torch tensors and numpy arrays
    become (nested) lists, OmegaConf containers become dicts/lists. Torch and
    OmegaConf are never imported here: only values of already-imported types
    can be of those types.
    """
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    module = type(value).__module__.split(".", 1)[0]
    if module == "torch":
        return value.detach().cpu().tolist()
    if module == "omegaconf" and "omegaconf" in sys.modules:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value)
    if module == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    raise ValueError(f"{value!r} is not jsonable.")


#: Values `jsonable` returns as they are (exact types: subclasses take the slow path).
_PLAIN = frozenset({int, float, str, bool, type(None)})


def _jsonable_delta(dora: DoraConfig, delta: tp.Sequence[tp.Any]) -> list[tp.Any]:
    # ``jsonable([(k, v) for k, v in delta if not dora.is_excluded(k)])``, with the
    # (name, plain value) pairs of grids done inline: this runs once per XP.
    excluded = dora.excluded_names()
    out: list[tp.Any] = []
    for key, value in delta:
        skip = excluded.get(key) if type(key) is str else None
        if skip is None:
            skip = dora.is_excluded(key)
        if skip:
            continue
        if type(key) in _PLAIN and type(value) in _PLAIN:
            out.append([key, value])
        else:
            out.append(jsonable((key, value)))
    return out


def get_sig(delta: tp.Any) -> str:
    """Signature of an already-jsonable delta: 8 hex digits of SHA-1, as Dora."""
    return sha1(json.dumps(sorted(delta)).encode("utf8")).hexdigest()[:8]


def _child(folder: Path, name: str) -> Path:
    # ``folder / name`` for a plain file name (no separator), without parsing it again:
    # pathlib's own shortcut for directory listings where it has one (3.11, 3.12),
    # ~5 times cheaper than ``/``, which each of 100,000 XPs paid.
    make = getattr(folder, "_make_child_relpath", None)
    if make is not None and "/" not in name and name not in ("", ".", ".."):
        return tp.cast(Path, make(name))
    return folder / name


@dataclass(init=False)
class XP:
    """One experiment: a config, the argv that reproduces it, and its signature.

    ``delta`` is the list of ``[name, value]`` pairs that make the XP differ from
    the defaults (after exclusion); ``folder`` is ``<dir>/xps/<sig>``; ``link``
    reads and writes the metrics history. Two XPs are equal when their config,
    argv, signature and delta are.
    """

    dora: DoraConfig
    cfg: tp.Any
    argv: list[str]
    sig: str
    delta: list[tp.Any] | None
    link: Link = field(compare=False)

    def __init__(self, dora: DoraConfig, cfg: tp.Any, argv: tp.Sequence[str],
                 delta: tp.Sequence[tp.Any] | None = None, sig: str | None = None) -> None:
        self.dora = dora
        self.cfg = cfg
        self.argv = list(argv)
        if delta is not None:
            delta = _jsonable_delta(dora, delta)
        self.delta = delta  # type: ignore[assignment]
        if sig is None:
            if delta is None:
                raise ValueError("An XP needs a delta or a signature.")
            sig = get_sig(delta)
        self.sig = sig
        # ``link`` is made on first use (`__getattr__`): grids build 100,000s of XPs
        # whose link is never used, and its paths cost more than the rest of the XP.

    def __getattr__(self, name: str) -> tp.Any:
        # Only called for attributes not set: ``link`` before its first use.
        if name == "link":
            link = self.__dict__["link"] = Link(self.history)
            return link
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def folder(self) -> Path:
        """The XP folder, ``<dir>/xps/<sig>``: checkpoints belong here."""
        # Built once per output dir: grids of thousands of XPs ask for it a lot.
        cached = self.__dict__.get("_folder")
        dora = self.dora
        if cached is None or cached[0] is not dora.dir or cached[1] != dora.xps:
            cached = (dora.dir, dora.xps, _child(dora.xps_dir(), self.sig))
            self.__dict__["_folder"] = cached
        return tp.cast(Path, cached[2])

    @property
    def code_folder(self) -> Path:
        """Where the code of this XP runs from: its snapshot with git_save, else ``.``."""
        if self.dora.git_save:
            return self.folder / "code"
        return Path(".")

    @property
    def submitit(self) -> Path:
        """The submitit folder of the latest Slurm submission (Dora's layout)."""
        latest = self.folder / self.dora.shep.latest_submitit
        if latest.exists():
            return latest
        return self.folder / self.dora.shep.submitit_folder

    @property
    def rendezvous_file(self) -> Path:
        return self.folder / self.dora.rendezvous_file

    @property
    def history(self) -> Path:
        """Dora's ``history.json`` path (read when adopting a Dora folder)."""
        return self.folder / self.dora.history

    @property
    def _argv_cache(self) -> Path:
        return self.folder / ".argv.json"

    @property
    def _shared_folder(self) -> Path | None:
        if self.dora.shared is not None:
            return self.dora.shared / self.dora.xps / self.sig
        return None

    @property
    def _shared_argv_cache(self) -> Path | None:
        shared = self._shared_folder
        return None if shared is None else shared / ".argv.json"

    @contextmanager
    def enter(self, stack: bool = False) -> tp.Iterator[None]:
        """Pretend to run inside this XP: `get_xp` returns it for the duration.

        ``stack=True`` allows entering from within another XP.
        """
        with _context.enter_xp(self, stack):
            yield


class _Context:
    # The stack of XPs being run, so `get_xp()` works anywhere in training code.
    def __init__(self) -> None:
        self.xps: list[XP] = []

    @contextmanager
    def enter_xp(self, xp: XP, stack: bool = False) -> tp.Iterator[None]:
        if self.xps and not stack:
            raise RuntimeError("Already in a xp.")
        from .dora_alias import sharing_xp

        self.xps.append(xp)
        try:
            # Libraries importing Dora themselves (flashy) see this XP too.
            with sharing_xp(xp):
                yield
        finally:
            self.xps.pop()


_context = _Context()


def get_xp() -> XP:
    """Return the XP being run; raise `RuntimeError` outside of one (as Dora)."""
    if not _context.xps:
        raise RuntimeError("Not in a xp!")
    return _context.xps[-1]


def is_xp() -> bool:
    """True when called from inside a running XP."""
    return bool(_context.xps)
