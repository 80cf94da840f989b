"""Decorated training mains: the object adora drives.

``@argparse_main(parser=...)`` (and ``@hydra_main`` in `adora.hydra`) wrap the
user's ``main()``. The result knows how to turn an argv into an `XP`, where XP
folders live, how to name XPs and how to run ``main`` inside an XP. It pickles
by import path, so a job on another machine re-imports the user's module.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import socket
import sys
import threading
import typing as tp
from pathlib import Path

from .conf import DoraConfig, SlurmConfig
from .errors import (
    ArgumentsError,
    RecordError,
    SignatureCollisionError,
    XPBusyError,
    XPNotFoundError,
)
from .fast_argparse import FastParser, parser_errors
from .files import folder_error, read_small
from .jobs import write_json_atomic, write_json_new
from .names import NamesMixin
from .xp import XP, _context

#: Serialises argument parsing when XP folders are initialised from several threads.
_GET_XP_LOCK = threading.Lock()

__all__ = ["ArgparseMain", "DecoratedMain", "argparse_main", "get_module_name"]

MainFun = tp.Callable[..., tp.Any]


def _load_main(full_name: str) -> DecoratedMain:
    module_name, fun_name = full_name.rsplit(".", 1)
    module = importlib.import_module(module_name)
    return tp.cast(DecoratedMain, getattr(module, fun_name))


def get_module_name(module: str) -> str | None:
    """The importable name of module ``module`` (Dora's name for it): ``python -m
    pkg.train`` runs the module as ``__main__``, whose real name is in its spec."""
    if module == "__main__":
        spec = getattr(sys.modules.get(module), "__spec__", None)
        return None if spec is None else tp.cast(str, spec.name)
    return module


#: Set (to 1) by ``adora run --force``: train even if another process holds the XP.
FORCE_RUN_ENV = "ADORA_FORCE_RUN"
RUN_LOCK = ".adora_run.lock"


@contextlib.contextmanager
def _run_lock(xp: XP) -> tp.Iterator[None]:
    """Hold the XP folder's run lock while training (rank 0 only: the other ranks of
    a distributed run share the folder with it). A second training of the same XP,
    from any command or job on a machine sharing this file system, is refused."""
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    import fcntl

    path = xp.folder / RUN_LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield  # a read-only or odd file system: train unguarded, as Dora does
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            if os.environ.get(FORCE_RUN_ENV) != "1":
                raise XPBusyError(
                    f"XP {xp.sig} is being trained already, by {holder} (it holds {path}). "
                    f"A second training in {xp.folder} would interleave its metrics and "
                    f"checkpoints with the first. Wait for it to end, stop it (its job: "
                    f"`adora info -f {xp.sig} -C`), or pass --force to `adora run` to run "
                    f"anyway.") from None
            print(f"adora: --force: training XP {xp.sig} although {holder} holds it.",
                  file=sys.stderr)
        except OSError:
            pass  # no locks on this file system (some NFS mounts): unguarded
        else:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


class DecoratedMain(NamesMixin):
    """A user's ``main`` with everything adora needs to schedule and run it.

    Calling it runs ``main()`` inside the XP given by ``sys.argv[1:]``: the XP
    folder is created, ``.argv.json`` written, the metrics history loaded,
    then `get_xp` returns that XP until ``main`` returns.
    """

    _slow = False

    def __init__(self, main: MainFun, dora: DoraConfig) -> None:
        self.main = main
        self.dora = dora
        module_name = get_module_name(main.__module__)
        if module_name is None:
            self.package, self.main_module = "unknown", "train"
        elif "." in module_name:
            self.package, self.main_module = module_name.rsplit(".", 1)
        else:
            self.package, self.main_module = "unknown", module_name
        self.name = self.package
        self._full_name = f"{module_name or main.__module__}.{main.__name__}"

    def __call__(self) -> tp.Any:
        argv = self._get_argv()
        if not self._is_active(argv):
            return self._main()
        xp = self.get_xp(argv)
        self.init_xp(xp)
        with _run_lock(xp):
            xp.link.load()
            with _context.enter_xp(xp):
                return self._main()

    def __reduce__(self) -> tuple[tp.Any, ...]:
        return _load_main, (self._full_name,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._full_name})"

    def _is_active(self, argv: list[str]) -> bool:
        return True

    def _main(self) -> tp.Any:
        return self.main()

    def _get_argv(self) -> list[str]:
        return sys.argv[1:]

    def get_xp(self, argv: tp.Sequence[str]) -> XP:
        """Return the XP for a list of training arguments."""
        raise NotImplementedError

    def value_to_argv(self, arg: tp.Any) -> list[str]:
        """Convert grid values to training arguments: a str is kept verbatim, lists and
        tuples are flattened, each dict item becomes one argument (`dict_item_to_argv`)."""
        if isinstance(arg, str):
            return [arg]
        if isinstance(arg, dict):
            return [self.dict_item_to_argv(key, value) for key, value in arg.items()]
        if isinstance(arg, (list, tuple)):
            return [a for part in arg for a in self.value_to_argv(part)]
        raise ValueError(f"Can only process dict, tuple, lists and str, but got {arg!r}")

    def dict_item_to_argv(self, key: str, value: tp.Any) -> str:
        """The training argument for ``launcher(key=value)``."""
        raise NotImplementedError

    def init_xp(self, xp: XP) -> XP:
        """Create the XP folder and record its argv so its signature can be looked up.

        Refuses (`SignatureCollisionError`) when the folder already belongs to
        an XP with a different delta: two experiments must never share a folder.
        """
        self.init_xp_folder(xp)
        return xp

    def init_xp_folder(self, xp: XP, on_existing: tp.Callable[[Path], tp.Any] | None = None
                       ) -> bool:
        """`init_xp`; True if it created the folder. ``on_existing(folder)`` is called
        first when the folder was already there (the engine cleans up after killed runs).

        A grid submission calls this for every XP: a folder it creates costs two system
        calls and a write (``mkdir``, then ``.argv.json`` created in place: no one else
        can have it yet), an existing one a collision check and an atomic rewrite.
        """
        folder = xp.folder
        try:
            try:
                os.mkdir(folder)
            except FileNotFoundError:
                folder.parent.mkdir(parents=True, exist_ok=True)
                os.mkdir(folder)
        except FileExistsError as exc:
            if not folder.is_dir():  # a file, or a link to nothing
                raise folder_error(folder, exc, "the XP folder") from exc
            created = False
            if on_existing is not None:
                on_existing(folder)
            self.check_collision(xp)  # a new folder holds no other XP's argv
            write_json_atomic(xp._argv_cache, xp.argv)
        except OSError as exc:
            raise folder_error(folder, exc, "the XP folder") from exc
        else:
            created = True
            write_json_new(f"{folder}/.argv.json", xp.argv)
        shared = xp._shared_argv_cache
        if shared is not None:
            for folder in (shared.parent.parent, shared.parent):
                folder.mkdir(exist_ok=True, parents=True, mode=0o777)
                try:
                    folder.chmod(0o777)
                except PermissionError:
                    pass
            write_json_atomic(shared, xp.argv)
            try:
                shared.chmod(0o777)
            except PermissionError:
                pass
        return created

    def check_collision(self, xp: XP) -> None:
        """Raise if the folder of ``xp`` holds the argv of an XP with another delta.

        Cheap when the folder is absent or holds this XP's own argv (one read, the
        bytes compared as written): the engine checks every XP it shows.
        """
        try:
            text = read_small(f"{xp.folder}/.argv.json")
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError:
            return  # unreadable: other commands say so; a collision is not proven
        self.check_argv_json(xp, text)

    def check_argv_json(self, xp: XP, text: bytes) -> None:
        """`check_collision` with the bytes of the folder's ``.argv.json`` already read."""
        if text == json.dumps(xp.argv).encode():
            return
        try:
            old_argv = json.loads(text)
        except ValueError:
            return
        if not _is_argv(old_argv):
            return  # unreadable: it cannot be this XP's twin (init_xp writes a good one)
        if old_argv == xp.argv or xp.delta is None:
            return
        try:
            with _GET_XP_LOCK:  # init_xp runs in several threads; parsers are not thread-safe
                other = self.get_xp(old_argv)
        except ArgumentsError:
            return  # the old argv no longer parses: it cannot be this XP's twin
        if other.sig == xp.sig and sorted(other.delta or []) != sorted(xp.delta):
            raise SignatureCollisionError(xp.sig, xp.delta, other.delta,
                                          where=f"folder {xp.folder}")

    def get_argv_from_sig(self, sig: str) -> list[str]:
        """The argv recorded for ``sig`` (in the XP folder, else the shared folder)."""
        xp = XP(sig=sig, dora=self.dora, cfg=None, argv=[])
        for path in (xp._argv_cache, xp._shared_argv_cache):
            if path is not None and path.exists():
                return _read_argv(path, sig)
        raise XPNotFoundError(sig, f"Could not find an experiment with signature {sig!r} "
                                   f"(no {xp._argv_cache}). Run or submit it once, or "
                                   "initialise it with `adora grid NAME --init`.")

    def get_xp_from_sig(self, sig: str) -> XP:
        """The XP with signature ``sig``; it must have been initialised before."""
        return self.get_xp(self.get_argv_from_sig(sig))

    def get_xp_history(self, xp: XP) -> list[dict[str, tp.Any]]:
        """The metrics of ``xp``; override to read them from elsewhere."""
        xp.link.load()
        return xp.link.history

    def get_slurm_config(self) -> SlurmConfig:
        """The default Slurm config for `adora grid` and `adora launch`."""
        return SlurmConfig()


def _is_argv(value: tp.Any) -> bool:
    return isinstance(value, list) and all(isinstance(arg, str) for arg in value)


def _read_argv(path: Path, sig: str) -> list[str]:
    # .argv.json is adora's (or Dora's): a JSON list of strings, the XP's training arguments.
    try:
        argv = json.loads(path.read_text())
    except ValueError as exc:
        argv, reason = None, f"not valid JSON ({exc})"
    else:
        reason = ("a JSON list whose items are not all strings" if isinstance(argv, list)
                  else f"a JSON {type(argv).__name__}, not a list of strings")
    if not _is_argv(argv):
        raise RecordError(
            f"The arguments of XP {sig} in {path} are unreadable: {reason}. Recreate the "
            "file: `adora grid NAME --init` with a grid that has this XP, or run or submit "
            "the XP from its arguments (or write them there as a JSON list of strings).")
    return tp.cast(list[str], argv)


def _raising_parser(parser: argparse.ArgumentParser, argv: tp.Sequence[str]
                    ) -> tp.ContextManager[None]:
    # argparse reports errors by printing usage and exiting; turn that into an
    # exception that says which arguments were refused, without touching the
    # parser for anyone else.
    def error(message: str) -> tp.NoReturn:
        raise ArgumentsError(
            f"Invalid training arguments {list(argv)}: {message}. "
            "See `adora run -- --help` for the accepted arguments.",
            argv=argv, reason=message)
    return parser_errors(parser, error)


class ArgparseMain(DecoratedMain):
    """`DecoratedMain` for training code configured with `argparse`.

    The delta is every ``(dest, value)`` whose parsed value differs from
    ``parser.get_default(dest)``. With ``use_underscore=False``,
    ``launcher(batch_size=32)`` becomes ``--batch-size=32``.
    """

    def __init__(self, main: MainFun, dora: DoraConfig, parser: argparse.ArgumentParser,
                 slurm: SlurmConfig | None = None, use_underscore: bool = True) -> None:
        super().__init__(main, dora)
        self.parser = parser
        self.use_underscore = use_underscore
        self.slurm = slurm
        self._fast = FastParser(parser)

    def get_xp(self, argv: tp.Sequence[str]) -> XP:
        argv = list(argv)
        fast = self._fast
        args = fast.parse(argv)
        if args is None:
            with _raising_parser(self.parser, argv):
                args = self.parser.parse_args(argv)
        delta = fast.delta(args)
        return XP(dora=self.dora, cfg=args, argv=argv, delta=delta)

    def dict_item_to_argv(self, key: str, value: tp.Any) -> str:
        if not self.use_underscore:
            key = key.replace("_", "-")
        return f"--{key}" if value is True else f"--{key}={value}"

    def get_slurm_config(self) -> SlurmConfig:
        return self.slurm if self.slurm is not None else super().get_slurm_config()


def argparse_main(parser: argparse.ArgumentParser, *, dir: str | Path = "./outputs",
                  exclude: tp.Sequence[str] = (), slurm: SlurmConfig | None = None,
                  shared: str | Path | None = None, use_underscore: bool = True,
                  **kwargs: tp.Any) -> tp.Callable[[MainFun], ArgparseMain]:
    """Decorate a training ``main()`` configured by ``parser``.

    ``dir`` is where XP folders go; ``exclude`` lists fnmatch patterns of
    argument names (argparse *dest* names) kept out of the signature; ``slurm``
    is the default `SlurmConfig`; other keywords (``git_save``,
    ``grid_package``, ``use_rendezvous``...) go to `DoraConfig`::

        parser = argparse.ArgumentParser()
        parser.add_argument("--lr", type=float, default=0.1)

        @argparse_main(parser=parser, exclude=["num_workers"])
        def main():
            xp = get_xp()
            for epoch in range(len(xp.link.history), 10):
                xp.link.push_metrics({"loss": 1 / (epoch + 1)})
    """
    from .conf import update_from_dict

    def _decorator(main: MainFun) -> ArgparseMain:
        dora = DoraConfig(dir=Path(dir), shared=None if shared is None else Path(shared),
                          exclude=list(exclude))
        update_from_dict(dora, kwargs, what="argparse_main keyword / DoraConfig")
        return ArgparseMain(main, dora, parser, slurm=slurm, use_underscore=use_underscore)

    return _decorator
