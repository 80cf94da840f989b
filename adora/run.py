"""Running one experiment in the foreground, in this process (`adora run`)."""

from __future__ import annotations

import os
import sys
import typing as tp

from .files import clear_folder
from .main import DecoratedMain
from .xp import XP

__all__ = ["clear_xp", "refuse_if_live_job", "run_xp"]


def clear_xp(xp: XP) -> bool:
    """Delete the folder of ``xp`` (checkpoints, metrics, logs); True if there was one.

    A folder that is a link to another folder is emptied there (`clear_folder`).
    """
    return clear_folder(xp.folder)


def refuse_if_live_job(main: DecoratedMain, xp: XP,
                       warn: tp.Callable[[str], None] | None = None) -> None:
    """Raise `XPBusyError` if ``xp`` has a job that is pending or running on the local
    backend or Slurm: training it here too would mix two runs in one folder."""
    from .jobs import load_record

    record = load_record(xp.folder)
    if record is None or record.final is not None or record.job_id is None:
        return
    if record.backend not in ("local", "slurm"):
        return  # a remote cluster's job trains in the remote folder
    import anyio

    from .engine.run import resolve_backend
    from .errors import AdoraError, XPBusyError

    async def _ask() -> tp.Any:
        backend = resolve_backend(main, record.backend)
        try:
            return (await backend.query([record])).get(tp.cast(str, record.job_id))
        finally:
            await backend.aclose()
    try:
        status = anyio.run(_ask)
    except AdoraError as exc:
        if warn is not None:
            warn(f"Could not check XP {xp.sig}'s job {record.job_id} on {record.backend} "
                 f"({exc}); running it anyway.")
        return
    if status is not None and not status.state.is_final:
        raise XPBusyError(
            f"XP {xp.sig} has job {record.job_id} on the {record.backend} backend, "
            f"{status.state.value}: training it here too would mix two runs in {xp.folder}. "
            f"Cancel the job first (`adora info -f {xp.sig} -C`), or pass --force.")


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
