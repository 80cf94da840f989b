"""The open pages and what each must be sent: one delta per refresh, shared by all.

Each page holds one server-sent-events stream. It gets the whole state once, when
it connects (``reset``), then one ``delta`` per refresh in which something changed:
the table rows and XP states that changed (encoded once for every page), and the
new lines of the histories this page draws (its ``curves``), from where it is.
"""

from __future__ import annotations

import typing as tp
from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._model import PageModel, curve_update, dumps

if tp.TYPE_CHECKING:
    from ._source import Frame

__all__ = ["Hub", "Page", "sse"]

#: Messages a page may be behind before it is dropped (its browser reconnects and
#: gets a fresh ``reset``): a stuck tab must not make the server hold every delta.
BACKLOG = 32


def sse(event: str, data: str) -> str:
    """One server-sent event (``data`` is one line of JSON)."""
    return f"event: {event}\ndata: {data}\n\n"


@dataclass(eq=False)
class Page:
    """One open page: where its messages go and how much of each curve it has."""

    send: MemoryObjectSendStream[str]
    receive: MemoryObjectReceiveStream[str]
    curves: dict[str, int] = field(default_factory=dict)


class Hub:
    """Turns each refresh into messages for every open page."""

    def __init__(self, model: PageModel | None = None) -> None:
        self.model = model or PageModel()
        self.pages: set[Page] = set()
        #: Set after the first refresh: pages that connect earlier wait for it.
        self.ready = anyio.Event()
        #: Bytes queued for pages by the last `publish` (benchmarks read it).
        self.last_bytes = 0
        self._open = anyio.Event()

    def connect(self, curves: tp.Iterable[str] = ()) -> Page:
        """A new page, with its ``reset`` message already queued (once ready)."""
        send, receive = anyio.create_memory_object_stream[str](BACKLOG)
        page = Page(send, receive, {sig: 0 for sig in curves if sig})
        self.pages.add(page)
        self._open.set()
        if self.ready.is_set():
            send.send_nowait(self._reset(page))
        return page

    def disconnect(self, page: Page) -> None:
        self.pages.discard(page)
        page.send.close()
        if not self.pages:
            self._open = anyio.Event()

    async def wanted(self) -> None:
        """Return once a page is open: with none, the server does not refresh (nothing
        polls the backend or reads metrics for nobody)."""
        await self._open.wait()

    def _curves(self, page: Page) -> dict[str, tp.Any]:
        out: dict[str, tp.Any] = {}
        for sig, sent in page.curves.items():
            got = curve_update(self.model.history(sig), sent)
            if got is not None:
                start, lines = got
                out[sig] = [start, lines]
                page.curves[sig] = start + len(lines)
        return out

    def _reset(self, page: Page) -> str:
        data = self.model.snapshot()
        for sig in page.curves:
            page.curves[sig] = 0
        data["curves"] = self._curves(page)
        return sse("reset", dumps(data))

    def publish(self, frame: Frame) -> None:
        """Take one refresh of the watch and queue what changed for every page."""
        delta = self.model.update(frame)
        first = not self.ready.is_set()
        self.ready.set()
        common = None if delta is None else dumps(delta)
        self.last_bytes = 0
        for page in list(self.pages):
            if first:
                message = self._reset(page)
            else:
                curves = self._curves(page)
                if common is None and not curves:
                    continue
                body = common[:-1] if common is not None else \
                    '{"v":' + str(self.model.version)
                message = sse("delta", body + ',"curves":' + dumps(curves) + "}")
            try:
                page.send.send_nowait(message)
            except anyio.WouldBlock:
                self.disconnect(page)  # too far behind: it reconnects and starts afresh
                continue
            self.last_bytes += len(message)

    def close(self) -> None:
        for page in list(self.pages):
            self.disconnect(page)
