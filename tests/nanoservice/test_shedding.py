"""The connection-level shed: while an instance is at its in-flight limit, a request on an idle keep-alive
connection is answered 503 where it is parsed (no request object, no dispatch), over real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from simiankube.localrun.report import read_samples
from simiankube.contract import Behavior, Latency, NanoserviceConfig
from simiankube.nanoservice import keys
from simiankube.nanoservice.app import InstanceRunner, create_app
from simiankube.nanoservice.keys import Identity
from simiankube.nanoservice.resolver import Resolver

SHED_BODY = {"error": "overloaded: 1 requests in flight, retry another instance"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """A raw keep-alive connection that reads whole answers (Content-Length delimited)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.buffer = reader, writer, b""

    def send(self, *requests: str) -> None:
        self.writer.write("".join(requests).encode())

    async def answer(self, head: bool = False) -> Answer:
        while b"\r\n\r\n" not in self.buffer:
            await self.fill()
        end = self.buffer.index(b"\r\n\r\n")
        lines = self.buffer[:end].decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        length = 0 if head else int(headers["Content-Length"])
        while len(self.buffer) < end + 4 + length:
            await self.fill()
        body, self.buffer = self.buffer[end + 4:end + 4 + length], self.buffer[end + 4 + length:]
        return Answer(int(lines[0].split()[1]), headers, body)

    async def fill(self) -> None:
        chunk = await asyncio.wait_for(self.reader.read(65536), 5)
        assert chunk, f"connection closed; unread: {self.buffer!r}"
        self.buffer += chunk


@dataclass
class Instance:
    app: web.Application
    runner: InstanceRunner
    port: int

    async def connect(self) -> Connection:
        return Connection(*await asyncio.open_connection("127.0.0.1", self.port))

    def handled(self) -> int:
        """Requests that went through aiohttp's request loop (the connection-level shed bypasses it)."""
        assert isinstance(self.runner.server, web.Server)
        return self.runner.server.requests_count


def get(path: str, extra: str = "", method: str = "GET") -> str:
    return f"{method} {path} HTTP/1.1\r\nHost: db\r\n{extra}\r\n"


@pytest.fixture
async def overloaded() -> AsyncIterator[tuple[Instance, Connection]]:
    """A store whose requests wait 1 s with a limit of one in flight, and the connection holding that one."""
    config = NanoserviceConfig("t", "db", "store", "us-east-1", Behavior(latency=Latency("constant", 1000.0)),
                               (), None, callers=("svc-a",))
    app = create_app(config, Identity("db-0", "", "127.0.0.1", 1), resolver=Resolver({}), max_in_flight=1)
    runner = InstanceRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    instance = Instance(app, runner, runner.addresses[0][1])
    holder = await instance.connect()
    holder.send(get("/kv/held"))
    for _ in range(500):
        if app[keys.STATUS].in_flight == 1:
            break
        await asyncio.sleep(0.01)
    assert app[keys.STATUS].in_flight == 1
    try:
        yield instance, holder
    finally:
        await runner.cleanup()


async def idle_connection(instance: Instance) -> Connection:
    """A connection whose first request was answered, so the request loop waits on it (idle keep-alive)."""
    connection = await instance.connect()
    connection.send(get("/healthz"))
    assert (await connection.answer()).status == 200
    return connection


async def test_a_whole_request_with_its_body_is_shed_too(overloaded: tuple[Instance, Connection]) -> None:
    instance, _ = overloaded
    connection = await idle_connection(instance)
    before = instance.handled()
    connection.send(get("/kv/k", "Content-Length: 2\r\n", method="PUT") + "hi", get("/kv/k"))
    assert [(await connection.answer()).status for _ in range(2)] == [503, 503]
    assert instance.handled() == before


async def test_a_request_on_an_idle_connection_is_shed_without_a_request_object(
        overloaded: tuple[Instance, Connection]) -> None:
    instance, holder = overloaded
    connection = await idle_connection(instance)
    before = instance.handled()
    for _ in range(3):  # the connection stays open and keeps being answered
        connection.send(get("/kv/k1", "x-simiankube-caller: svc-a\r\n"))
        answer = await connection.answer()
        assert (answer.status, answer.headers["Retry-After"], json.loads(answer.body)) == (503, "1", SHED_BODY)
        assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
        assert "Connection" not in answer.headers and answer.headers["Server"].startswith("Python/")
    assert instance.handled() == before  # answered where it was parsed
    edge = instance.app[keys.METRICS].server("svc-a")
    assert (edge.requests, edge.answers[4], edge.errors, sum(edge.buckets)) == (3, 3, 3, 3)
    connection.send(get("/metrics"))
    samples = {name: (labels, value) for name, labels, value in read_samples((await connection.answer()).body.decode())}
    labels = {"package": "store", "service": "db"}
    assert samples["in_flight"] == (labels, 1.0)
    assert samples["in_flight_limit"] == (labels, 1.0)
    assert samples["shed_total"] == (labels, 3.0)
    assert (await holder.answer()).status == 404  # the admitted request was served meanwhile


async def test_pipelined_requests_are_answered_in_order_and_the_platform_is_never_shed(
        overloaded: tuple[Instance, Connection]) -> None:
    instance, _ = overloaded
    connection = await idle_connection(instance)
    connection.send(get("/kv/a"), get("/healthz"), get("/kv/b", method="HEAD"), get("/nope"), get("/readyz"))
    statuses = [(await connection.answer(head=head)).status for head in (False, False, True, False, False)]
    assert statuses == [503, 200, 503, 503, 200]
    assert instance.app[keys.STATUS].shed == 3


async def test_what_the_connection_cannot_shed_is_shed_by_the_request_loop(
        overloaded: tuple[Instance, Connection]) -> None:
    instance, _ = overloaded
    connection = await idle_connection(instance)
    before = instance.handled()
    connection.send(get("/kv/k", "Content-Length: 2\r\n", method="PUT"))  # a body still to come
    answer = await connection.answer()
    assert (answer.status, json.loads(answer.body)) == (503, SHED_BODY)
    connection.send("hi")
    connection.send(get("/kv/k", "Connection: close\r\n"))  # the connection must close after the answer
    answer = await connection.answer()
    assert (answer.status, answer.headers["Connection"], answer.headers["Retry-After"]) == (503, "close", "1")
    assert await asyncio.wait_for(connection.reader.read(), 5) == b""
    assert instance.handled() == before + 2
    assert instance.app[keys.STATUS].shed == 2


async def test_nothing_is_shed_below_the_limit(overloaded: tuple[Instance, Connection]) -> None:
    instance, holder = overloaded
    connection = await idle_connection(instance)
    assert (await holder.answer()).status == 404  # the held request is answered: nothing in flight
    connection.send(get("/kv/k"))
    assert (await connection.answer()).status == 404  # admitted and served (after its 1 s)
    assert instance.app[keys.STATUS].shed == 0


async def test_an_upgrade_request_is_left_to_aiohttp_and_the_connection_goes_on(
        overloaded: tuple[Instance, Connection]) -> None:
    instance, _ = overloaded
    connection = await idle_connection(instance)
    before = instance.handled()
    connection.send(get("/kv/k", "Connection: Upgrade\r\nUpgrade: websocket\r\n"), get("/kv/k"))
    assert [(await connection.answer()).status for _ in range(2)] == [503, 503]
    assert instance.handled() > before  # the upgrade request went through the request loop
