"""The ASGI app of `adora ui`: one page, its script and plotly's, JSON and an event stream.

Read-only: nothing here submits, cancels or writes. Every request must carry the
token (``?token=``, the ``adora_ui_token`` cookie the page gets, or an
``Authorization: token ...`` header), else 403, as Jupyter does.
"""

from __future__ import annotations

import importlib.util
import secrets
import typing as tp
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from ._hub import Hub
from ._model import dumps

if tp.TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["COOKIE", "create_app", "plotly_js"]

STATIC = Path(__file__).parent / "static"
COOKIE = "adora_ui_token"
#: Seconds between keep-alive comments on the event stream (finds closed tabs).
KEEPALIVE = 15.0

ReadLog = tp.Callable[[str, int], tp.Awaitable[str | None]]


def plotly_js() -> Path:
    """plotly's bundled ``plotly.min.js``, found without importing plotly."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("plotly is not installed: pip install 'adora[ui]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "package_data" / "plotly.min.js"
    if not path.exists():
        raise FileNotFoundError(f"plotly has no bundled plotly.min.js ({path})")
    return path


class _TokenGate:
    # Pure ASGI: also guards the event stream, before any byte of it is sent.
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    def _given(self, scope: Scope) -> str | None:
        from starlette.datastructures import Headers, QueryParams

        query = QueryParams(scope.get("query_string", b"").decode("latin-1"))
        if "token" in query:
            return query["token"]
        headers = Headers(scope=scope)
        auth = headers.get("authorization", "")
        if auth.lower().startswith("token "):
            return auth[6:].strip()
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return value
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = self._given(scope)
            if given is None or not secrets.compare_digest(given.encode(), self.token.encode()):
                response = PlainTextResponse(
                    "403: this adora ui needs the token of its URL (printed by `adora ui`).",
                    status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(hub: Hub, token: str, *, read_log: ReadLog | None = None,
               title: str = "adora") -> ASGIApp:
    """The app serving ``hub``'s state, behind ``token``."""
    index_html = (STATIC / "index.html").read_text()

    async def index(request: Request) -> Response:
        html = index_html.replace("{{TITLE}}", title).replace("{{TOKEN}}", token)
        response = HTMLResponse(html, headers={"Cache-Control": "no-store"})
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "plotly.min.js":
            path = plotly_js()
        elif name in ("ui.js", "ui.css"):
            path = STATIC / name
        else:
            return PlainTextResponse("not found", status_code=404)
        # plotly's file never changes for one installed version: the browser keeps it.
        cache = "max-age=86400" if name == "plotly.min.js" else "no-cache"
        return FileResponse(path, headers={"Cache-Control": cache})

    async def state(request: Request) -> Response:
        await hub.ready.wait()
        return Response(dumps(hub.model.snapshot()), media_type="application/json")

    async def xp(request: Request) -> Response:
        await hub.ready.wait()
        details = hub.model.details(request.path_params["sig"])
        if details is None:
            return JSONResponse({"error": "no such XP"}, status_code=404)
        return Response(dumps(details), media_type="application/json")

    async def history(request: Request) -> Response:
        await hub.ready.wait()
        sig = request.path_params["sig"]
        if sig not in hub.model.xps:
            return JSONResponse({"error": "no such XP"}, status_code=404)
        return Response(dumps(list(hub.model.history(sig))),
                        media_type="application/json")

    async def log(request: Request) -> Response:
        await hub.ready.wait()
        sig = request.path_params["sig"]
        if sig not in hub.model.xps:
            return JSONResponse({"error": "no such XP"}, status_code=404)
        try:
            size = max(1, min(int(request.query_params.get("bytes", 8192)), 1 << 20))
        except ValueError:
            size = 8192
        text = None if read_log is None else await read_log(sig, size)
        return JSONResponse({"log": text})

    async def events(request: Request) -> Response:
        curves = [s for s in request.query_params.get("curves", "").split(",") if s]
        page = hub.connect(curves)

        async def stream() -> tp.AsyncIterator[str]:
            try:
                yield "retry: 2000\n\n"
                while True:
                    message = ": keep-alive\n\n"
                    # No yield inside the cancel scope: it must not span the generator's
                    # suspension.
                    with anyio.move_on_after(KEEPALIVE):
                        try:
                            message = await page.receive.receive()
                        except anyio.EndOfStream:
                            return  # dropped for being behind: the browser reconnects
                    yield message
            finally:
                hub.disconnect(page)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    app = Starlette(routes=[
        Route("/", index),
        Route("/static/{name}", static),
        Route("/api/state", state),
        Route("/api/xp/{sig}", xp),
        Route("/api/xp/{sig}/history", history),
        Route("/api/xp/{sig}/log", log),
        Route("/events", events),
    ])
    return _TokenGate(app, token)
