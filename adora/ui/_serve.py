"""`adora ui`: load the grids (read-only), watch them, and serve the page on one event loop.

The watch pipeline and the HTTP server (uvicorn) share anyio's event loop: one
refresh of the watch becomes one delta for every open page, whatever their number.
"""

from __future__ import annotations

import secrets
import socket
import sys
import typing as tp
from dataclasses import dataclass, field

import anyio

from ..conf import SubmitRules
from ..engine.grids import list_grids, load_explorer
from ..engine.run import GridResult, RunGridArgs, resolve_backend, run_grid
from ..errors import AdoraError, ConfigError
from ._hub import Hub
from ._source import frames

if tp.TYPE_CHECKING:
    from ..backends.base import Backend
    from ..main import DecoratedMain

__all__ = ["UIOptions", "load_results", "read_log_tail", "serve"]


def _log(message: str) -> None:
    print(f"adora ui: {message}", file=sys.stderr, flush=True)


@dataclass
class UIOptions:
    """What `adora ui` was asked for."""

    words: list[str] = field(default_factory=list)
    backend: str | None = "auto"
    cluster: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    interval: float | None = None
    open_browser: bool = False


def split_words(main: DecoratedMain, words: tp.Sequence[str]) -> tuple[list[str], list[str], bool]:
    """(grids, patterns, named): leading words naming grids, then patterns, as `adora grid`
    takes them; no grid named means every grid of the project."""
    known = list_grids(main)
    grids: list[str] = []
    rest = list(words)
    while rest and rest[0] in known:
        grids.append(rest.pop(0))
    if not grids and rest:
        load_explorer(main, rest[0])  # raises, listing the grids there are
    return (grids or known), rest, bool(grids)


async def load_results(main: DecoratedMain, names: tp.Sequence[str], patterns: list[str],
                       backend: Backend, *, skip_broken: bool) -> list[GridResult]:
    """Each grid's XPs and jobs, read-only: nothing is submitted, cancelled or written."""
    results = []
    args = RunGridArgs(patterns=patterns, read_only=True, silent=True)
    slurm = main.get_slurm_config()
    for name in names:
        try:
            explorer, grid_file = load_explorer(main, name)
            result = await run_grid(main, explorer, name, SubmitRules(), slurm, args,
                                    backend=backend, grid_file=grid_file, log=_log)
        except AdoraError as exc:
            if not skip_broken:
                raise
            _log(f"grid {name} skipped: {exc}")
            continue
        results.append(result)
    return results


async def read_log_tail(backend: Backend, path: str | None, size: int) -> str | None:
    """The last ``size`` bytes of a log (whole lines), through the backend (SFTP for SSH)."""
    if not path:
        return None
    got = await backend.read_file(path, 1 << 62)
    if got is None:
        return None
    start = max(0, got[1].size - size)
    got = await backend.read_file(path, start)
    if got is None:
        return None
    text = got[0].decode(errors="replace")
    if start > 0:
        text = text.partition("\n")[2]
    return text


def _bind(host: str, port: int) -> socket.socket:
    try:
        sock = socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        raise ConfigError(f"Cannot listen on {host}:{port}: {exc}") from exc
    sock.setblocking(False)
    return sock


def _url(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


def serve(main: DecoratedMain, options: UIOptions) -> int:
    """Run `adora ui` until interrupted; the exit status."""
    import uvicorn

    from ._app import create_app, plotly_js

    plotly_js()  # fail now, with how to install it, rather than on the first page
    names, patterns, named = split_words(main, options.words)
    if not names:
        raise ConfigError("The project has no grid to show.")
    backend = resolve_backend(main, options.backend, None, options.cluster)
    token = options.token or secrets.token_urlsafe(24)
    if options.host not in ("127.0.0.1", "localhost", "::1"):
        _log(f"warning: listening on {options.host}: anyone who can reach it and has the "
             "token can read these grids")

    async def pipeline() -> int:
        results = await load_results(main, names, patterns, backend, skip_broken=not named)
        results = [r for r in results if r.sheeps]
        if not results:
            _log("The grids select no XP.")
            return 0
        hub = Hub()
        by_sig = {s.xp.sig: s for r in results for s in r.sheeps}

        def job_of(sig: str) -> dict[str, tp.Any] | None:
            sheep = by_sig.get(sig)
            return None if sheep is None or sheep.job is None else sheep.job.to_json()

        hub.model.job_of = job_of

        async def read_log(sig: str, size: int) -> str | None:
            sheep = by_sig.get(sig)
            return None if sheep is None else \
                await read_log_tail(backend, None if sheep.log is None else str(sheep.log), size)

        title = ", ".join(r.name for r in results)
        app = create_app(hub, token, read_log=read_log, title=f"adora: {title}")
        sock = _bind(options.host, options.port)
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1)
        server = uvicorn.Server(config)

        async def watch() -> None:
            async for frame in frames(main, results, interval=options.interval,
                                      wanted=hub.wanted):
                hub.publish(frame)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            url = _url(options.host, port, token)
            count = len({s.xp.sig for r in results for s in r.sheeps})
            _log(f"{len(results)} grid(s), {count} XPs, on {backend.describe()}; read-only. "
                 "Ctrl-C stops.")
            _log(f"open {url}")
            if options.open_browser:
                import webbrowser

                webbrowser.open(url)
            await server.serve(sockets=[sock])
            hub.close()
            tg.cancel_scope.cancel()
        await backend.aclose()
        return 0

    try:
        return anyio.run(pipeline, backend="asyncio")
    except KeyboardInterrupt:
        return 130
