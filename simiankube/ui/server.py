"""The web view's HTTP side: the bundled page, the graph as JSON, live frames as server-sent events.

`create_app(live)` is the app factory; `serve()` runs it next to whatever feeds
`live` (the local runner, the cluster reader) in the same event loop. Frames go
out every `FRAME_INTERVAL` to each open page, computed once per tick however
many pages listen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from simiankube.ui.view import Live

STATIC = Path(__file__).parent / "static"
FRAME_INTERVAL = 1.0  # seconds between frames; the issue asks for at least one a second


@dataclass
class Ticker:
    """The latest frame as SSE bytes, recomputed once per interval for every listener."""

    live: Live
    interval: float
    frame: bytes = b""
    changed: asyncio.Condition | None = None

    def render(self) -> None:
        body = _json(self.live.frame())
        self.frame = f"event: frame\ndata: {body}\n\n".encode()

    async def run(self) -> None:
        assert self.changed is not None
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            self.render()
            async with self.changed:
                self.changed.notify_all()
            due = max(due + self.interval, loop.time())  # a fixed rate, not interval + render time
            await asyncio.sleep(due - loop.time())


LIVE = web.AppKey("live", Live)
TICKER = web.AppKey("ticker", Ticker)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def graph(request: web.Request) -> web.Response:
    return web.json_response(request.app[LIVE].graph())


async def frame(request: web.Request) -> web.Response:
    return web.json_response(request.app[LIVE].frame())


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the graph once, then a frame every interval until the page goes away."""
    ticker = request.app[TICKER]
    assert ticker.changed is not None
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
    })
    await response.prepare(request)
    graph_body = _json(ticker.live.graph())
    await response.write(f"retry: 2000\nevent: graph\ndata: {graph_body}\n\n".encode())
    with contextlib.suppress(ConnectionResetError):
        while True:
            await response.write(ticker.frame)
            async with ticker.changed:
                await ticker.changed.wait()
    return response


def create_app(live: Live, interval: float = FRAME_INTERVAL) -> web.Application:
    app = web.Application()
    app[LIVE] = live
    app[TICKER] = Ticker(live, interval)

    async def ticking(app: web.Application) -> AsyncIterator[None]:
        ticker = app[TICKER]
        ticker.changed = asyncio.Condition()
        ticker.render()
        task = asyncio.create_task(ticker.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(ticking)
    app.router.add_get("/", index)
    app.router.add_get("/api/graph", graph)
    app.router.add_get("/api/frame", frame)
    app.router.add_get("/api/events", events)
    app.router.add_static("/static/", STATIC)
    return app


@contextlib.asynccontextmanager
async def serve(live: Live, host: str, port: int) -> AsyncIterator[str]:
    """Serve the view while the body runs; yields its URL (the real port when `port` is 0)."""
    runner = web.AppRunner(create_app(live), handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if port == 0 else port
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{bound}/"
    finally:
        await runner.cleanup()


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
