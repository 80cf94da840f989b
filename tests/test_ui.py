"""`adora ui`: the page model's deltas, the token gate, and the real page in headless chromium.

The browser test runs `adora ui` on a finished local grid and a running one, and drives
Debian's chromium (installed with apt when missing; skipped with the reason where it
cannot be). The screenshot of the compare view is kept as
``tests/artifacts/ui-compare.png`` (ignored by git).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import typing as tp
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from adora.engine.snapshots import HistoryView, XPSnapshot
from adora.ui._hub import Hub
from adora.ui._model import curve_update
from adora.ui._source import Frame

from .conftest import adora_cli

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts"


# -- the page model and the hub (no server) ---------------------------------------------------
@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def xp(sig: str, state: str | None, history: list[dict[str, tp.Any]]) -> XPSnapshot:
    return XPSnapshot(sig=sig, name=sig, grid="g", index=0, argv=(), delta=(), state=state,
                      reason="", exit_code=None, stale=False, job_id="1", log=None,
                      history=HistoryView(history))


def messages(page: tp.Any) -> list[tuple[str, dict[str, tp.Any]]]:
    out = []
    while True:
        try:
            raw = page.receive.receive_nowait()
        except Exception:
            return out
        event = re.search(r"event: (\w+)", raw)
        data = re.search(r"data: (.*)", raw)
        assert event and data
        out.append((event.group(1), json.loads(data.group(1))))


@pytest.mark.anyio
async def test_hub_sends_each_page_only_what_changed() -> None:
    hist_a: list[dict[str, tp.Any]] = [{"loss": 1.0}]
    hist_b: list[dict[str, tp.Any]] = []
    a, b = xp("a", "RUNNING", hist_a), xp("b", "PENDING", hist_b)
    grids = [{"name": "g", "base_name": "", "columns": [], "sigs": ["a", "b"]}]
    static = {s: {"params": [], "config": {}, "argv": [], "folder": ""} for s in "ab"}
    rows = {"g": {"a": {"index": 0, "name": "a", "cells": []},
                  "b": {"index": 1, "name": "b", "cells": []}}}
    hub = Hub()
    table_page = hub.connect()
    curve_page = hub.connect(["a"])
    hub.publish(Frame([a, b], rows, {"a": a, "b": b}, grids=grids, static=static))
    (kind, reset), = messages(curve_page)
    assert kind == "reset" and set(reset["xps"]) == {"a", "b"}
    assert reset["curves"] == {"a": [0, [{"loss": 1.0}]]}
    assert messages(table_page)[0][0] == "reset"

    # a gets two lines: its state part changes (n), its curve gets the two new lines only.
    hist_a += [{"loss": 0.5}, {"loss": 0.25}]
    a = xp("a", "RUNNING", hist_a)
    hub.publish(Frame([a], {}, {"a": a, "b": b}))
    (kind, delta), = messages(curve_page)
    assert kind == "delta" and set(delta["xps"]) == {"a"} and delta["xps"]["a"]["n"] == 3
    assert delta["curves"] == {"a": [1, [{"loss": 0.5}, {"loss": 0.25}]]}
    (_, table_delta), = messages(table_page)
    assert table_delta["curves"] == {} and "rows" not in table_delta

    # Nothing changed: nothing is sent.
    hub.publish(Frame([], {}, {"a": a, "b": b}))
    assert messages(curve_page) == [] and messages(table_page) == []

    # A page that connects now gets everything at once.
    late = hub.connect(["a", "b"])
    (kind, reset), = messages(late)
    assert kind == "reset" and reset["curves"] == {"a": [0, hist_a]}


def test_curve_update_is_incremental() -> None:
    history = [{"x": i} for i in range(5)]
    assert curve_update(history, 5) is None
    assert curve_update(history, 3) == (3, history[3:])
    assert curve_update(history, 9) == (0, history)  # rewritten shorter: all of it


async def asgi_get(app: tp.Any, target: str, headers: dict[str, str] | None = None
                   ) -> tuple[int, dict[str, str], bytes]:
    """One GET through the ASGI app, without a server or an HTTP client."""
    path, _, query = target.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": query.encode(), "root_path": "", "server": ("127.0.0.1", 1),
             "client": ("127.0.0.1", 2),
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
    sent: list[dict[str, tp.Any]] = []

    asked = []

    async def receive() -> dict[str, tp.Any]:
        if asked:  # the client stays connected (a response may listen for a disconnect)
            import anyio

            await anyio.sleep_forever()
        asked.append(1)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, tp.Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return (start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body)


@pytest.mark.anyio
async def test_token_gate() -> None:
    from adora.ui._app import create_app

    app = create_app(Hub(), "s3cret")
    for target in ("/", "/?token=wrong", "/api/state", "/static/plotly.min.js",
                   "/events?token=nope"):
        assert (await asgi_get(app, target))[0] == 403, target
    status, _, _ = await asgi_get(app, "/static/ui.js", {"Authorization": "token s3cret"})
    assert status == 200
    status, headers, body = await asgi_get(app, "/?token=s3cret")
    assert status == 200 and b"s3cret" in body
    # The page's cookie carries the token for what it loads next (plotly's bundled JS).
    cookie = headers["set-cookie"].split(";")[0]
    status, _, body = await asgi_get(app, "/static/plotly.min.js", {"Cookie": cookie})
    assert status == 200 and len(body) > 1_000_000


# -- the real page in headless chromium ----------------------------------------------------------
TRAIN = '''
"""Pushes one metric line per epoch; with --gate, each epoch from the 3rd waits for a file."""
import argparse
import os
import time

from adora import argparse_main, get_xp

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--gate", default="")


@argparse_main(parser=parser, dir="./outputs", exclude=["gate"])
def main():
    xp = get_xp()
    args = xp.cfg
    for epoch in range(len(xp.link.history), args.epochs):
        if args.lr < 0 and epoch == 1:
            raise ValueError("a negative learning rate")
        if args.gate and epoch >= 3:
            while not os.path.exists(f"{args.gate}.{epoch}"):
                time.sleep(0.1)
        xp.link.push_metrics({"train": {"loss": args.lr / (epoch + 1)},
                              "valid": {"loss": args.lr / (epoch + 2)}})
        print(f"epoch {epoch} lr {args.lr}", flush=True)
'''

GRID_DONE = '''
import treetable as tt
from adora import Explorer


class E(Explorer):
    def get_grid_metrics(self):
        return [tt.group("valid", [tt.leaf("loss", ".4f")])]


@E
def explorer(launcher):
    for lr in [0.1, 0.2, 0.4, -1.0]:
        launcher(lr=lr)
'''

GRID_LIVE = '''
from adora import Explorer


@Explorer
def explorer(launcher):
    launcher(lr=0.3, epochs=6, gate={gate!r})
'''


def make_project(root: Path, gate: Path) -> None:
    pkg = root / "uitoy"
    (pkg / "grids").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "train.py").write_text(TRAIN)
    (pkg / "grids" / "__init__.py").write_text("")
    (pkg / "grids" / "done.py").write_text(GRID_DONE)
    (pkg / "grids" / "live.py").write_text(GRID_LIVE.format(gate=str(gate)))


def grid_json(root: Path, name: str) -> list[dict[str, tp.Any]]:
    out = adora_cli("grid", name, "--json", cwd=root)
    assert out.returncode in (0, 1), out.stderr  # 1: some XP failed (the "done" grid has one)
    return tp.cast(list, json.loads(out.stdout)[name])


def wait_for(what: str, check: tp.Callable[[], tp.Any], timeout: float = 60) -> tp.Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def driver() -> tp.Iterator[tp.Any]:
    from adora.testing import browser

    reason = browser.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    try:
        d = browser.start()
    except Exception as exc:
        pytest.skip(f"headless chromium cannot run here: {exc}")
    try:
        yield d
    finally:
        d.quit()


def plot_points(driver: tp.Any) -> dict[str, list[int]]:
    return tp.cast(dict, driver.execute_script(
        "const out = {}; for (const p of document.querySelectorAll('.plot'))"
        " out[p.dataset.metric] = (p.data || []).map(t => t.y.length); return out;"))


def test_ui_in_headless_chromium(tmp_path: Path, driver: tp.Any) -> None:
    root = tmp_path / "proj"
    gate = tmp_path / "gate"
    make_project(root, gate)
    env = {"ADORA_BACKEND": "local"}
    assert adora_cli("grid", "done", cwd=root, env=env).returncode == 0
    done = wait_for("the done grid to end", lambda: (
        rows := grid_json(root, "done")) and all(r["state"] in ("COMPLETED", "FAILED")
                                                 for r in rows) and rows)
    failed = done.pop()
    assert failed["state"] == "FAILED" and [r["state"] for r in done] == ["COMPLETED"] * 3
    assert adora_cli("grid", "live", cwd=root, env=env).returncode == 0
    live_sig = grid_json(root, "live")[0]["sig"]
    history = root / "outputs" / "xps" / live_sig / "history.jsonl"
    wait_for("the live XP's 3 first lines", lambda: history.exists()
             and len(history.read_text().splitlines()) == 3)

    token = "t0k-" + os.urandom(8).hex()
    full_env = {k: v for k, v in os.environ.items() if k not in ("ADORA_PACKAGE",)}
    full_env.update(env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "adora", "ui", "-i", "0", "--token", token], cwd=root,
        env=full_env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        url = None
        assert proc.stderr is not None
        for line in proc.stderr:
            m = re.search(r"open (http://\S+)", line)
            if m:
                url = m.group(1)
                break
        assert url is not None, "adora ui printed no URL"
        base = url.split("?")[0]
        assert url == f"{base}?token={token}" and base.startswith("http://127.0.0.1:")

        # A wrong or missing token gets 403, everywhere.
        assert status_of(base) == 403
        assert status_of(base + "?token=wrong") == 403
        assert status_of(base + "api/state?token=" + token[:-1]) == 403
        assert status_of(base + "static/plotly.min.js") == 403
        assert status_of(url) == 200

        # The table lists every XP with its state.
        driver.get(url)
        sigs = [r["sig"] for r in done] + [live_sig]

        def states() -> dict[str, str]:
            return tp.cast(dict, driver.execute_script(
                "const out = {}; for (const tr of document.querySelectorAll('tbody tr'))"
                " out[tr.dataset.sig] = tr.querySelector('td.state').textContent;"
                " return out;"))
        shown = wait_for("every XP in the table", lambda: (s := states()) and len(s) == 5 and s)
        assert shown == {**{r["sig"]: "COM" for r in done}, live_sig: "RUN",
                         failed["sig"]: "FAI"}
        reason = driver.execute_script(
            f"return document.querySelector('tr[data-sig=\"{failed['sig']}\"] td.reason')"
            ".textContent;")
        assert reason == "exit code 1"
        text = driver.find_element("tag name", "body").text
        assert "Grid done" in text and "Grid live" in text and "valid.loss" in text

        # An XP page shows one point per history line.
        first = done[0]["sig"]
        driver.get(f"{url}#/xp/{first}")
        assert wait_for("the finished XP's curves", lambda: (p := plot_points(driver))
                        and p.get("valid.loss") == [3] and p)
        assert "epoch 2 lr 0.1" in wait_for(
            "its log", lambda: "epoch" in (t := driver.find_element("id", "xp-log").text) and t)

        # The running XP: a line pushed by the training shows up without a reload.
        driver.get(f"{url}#/xp/{live_sig}")
        wait_for("the running XP's 3 points", lambda: plot_points(driver).get("train.loss")
                 == [3])
        driver.execute_script("window.__not_reloaded = true;")
        (gate.parent / f"{gate.name}.3").write_text("")
        wait_for("the 4th point, live", lambda: plot_points(driver).get("train.loss") == [4],
                 timeout=30)
        assert driver.execute_script("return window.__not_reloaded === true;")

        # The compare view: every XP, grouped by lr; its screenshot is kept.
        driver.get(f"{url}#/compare?sigs={','.join(sigs)}&by=lr")
        wait_for("the compare view's curves", lambda: plot_points(driver).get("valid.loss")
                 == [3, 3, 3, 4])  # lr 0.1, 0.2, 0.4, then the running XP
        time.sleep(0.5)  # plotly's transitions
        shot = tmp_path / "ui-compare.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, ARTIFACTS / "ui-compare.png")
    finally:
        for epoch in (3, 4, 5):  # let the running XP end
            (gate.parent / f"{gate.name}.{epoch}").write_text("")
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, 130, -signal.SIGINT)


def test_help_imports_no_web_server(tmp_path: Path) -> None:
    code = ("import sys\nfrom adora.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(' '.join(m for m in ('starlette', 'uvicorn', 'plotly', 'selenium', "
            "'adora.ui._app') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "adora ui" not in proc.stdout.splitlines()[-1]
    assert proc.stdout.splitlines()[-1].strip() == ""
    assert " ui " in proc.stdout or "\n  ui" in proc.stdout
