"""`adora ui`: a live web view of grids, read-only, on the engine's event loop.

Layers, each calling only the one below it::

    _serve.py   the command: load grids read-only, run the watch and uvicorn together
    _app.py     the ASGI app (starlette): page, scripts, JSON, event stream, token gate
    _hub.py     open pages: one delta per refresh for all, each page's new curve lines
    _model.py   pure: what the page shows, and what changed between two refreshes
    _source.py  the engine's watch pipeline, one `Frame` per refresh

Needs the ``ui`` extra (``pip install 'adora[ui]'``: starlette, uvicorn, plotly for
its bundled JavaScript). Importing this package imports none of them.
"""

from __future__ import annotations

__all__: list[str] = []
