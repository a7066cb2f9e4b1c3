"""The view's HTTP side: the page and its bundle, the graph, frames as server-sent events."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Awaitable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from simiankube.cli import main
from simiankube.model.spec import load_file
from simiankube.model.topology import expand
from simiankube.ui.server import create_app
from simiankube.ui.view import Live

ARCHITECTURES = Path(__file__).resolve().parents[2] / "architectures"
Client = Callable[..., Awaitable[TestClient[Any, Any]]]


def live() -> Live:
    return Live(expand(load_file(ARCHITECTURES / "lamp.yaml")), "test")


async def test_page_and_bundle_are_served(aiohttp_client: Client) -> None:
    client = await aiohttp_client(create_app(live()))
    page = await client.get("/")
    assert page.status == 200 and '<script src="/static/app.js">' in await page.text()
    bundle = await client.get("/static/app.js")
    assert bundle.status == 200 and len(await bundle.read()) > 100_000  # cytoscape is inside, no CDN
    assert (await client.get("/static/style.css")).status == 200


async def test_graph_and_frame_as_json(aiohttp_client: Client) -> None:
    client = await aiohttp_client(create_app(live()))
    graph = await (await client.get("/api/graph")).json()
    assert graph["architecture"] == "lamp" and len(graph["services"]) == 5
    frame = await (await client.get("/api/frame")).json()
    assert set(frame["all"]["services"]) == {"rds-mysql", "memcache", "webserver", "webserver-elb", "www"}


async def test_events_stream_the_graph_then_a_frame_every_interval(aiohttp_client: Client) -> None:
    view = live()
    client = await aiohttp_client(create_app(view, interval=0.05))
    response = await client.get("/api/events")
    assert response.headers["Content-Type"] == "text/event-stream"
    events: list[tuple[str, Any]] = []
    name = ""
    while len(events) < 4:
        line = (await response.content.readline()).decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[len("data: "):])))
    response.close()
    assert [n for n, _ in events] == ["graph", "frame", "frame", "frame"]
    assert events[0][1]["architecture"] == "lamp"
    times = [data["t"] for _, data in events[1:]]
    assert times == sorted(times) and times[-1] > times[0]  # fresh frames, not the same one again


def test_run_rejects_a_bad_listen_address(capsys: Any) -> None:
    try:
        main(["run", str(ARCHITECTURES / "lamp.yaml"), "--ui", "localhost:http"])
    except SystemExit as exit:
        assert exit.code == 2
    assert "not a listen address: 'localhost:http'" in capsys.readouterr().err


def test_run_says_when_the_view_cannot_listen(capsys: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["run", str(ARCHITECTURES / "lamp.yaml"), "--ui", f"127.0.0.1:{port}", "--duration", "1"]) == 1
    assert f"--ui: cannot serve the live view on 127.0.0.1:{port}" in capsys.readouterr().err
