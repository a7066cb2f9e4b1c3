"""The keep-alive pool for calls between nanoservices, against raw servers over real loopback sockets: how
answers are framed, when a connection is reused, closed or tried again, and what failures look like."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from yarl import URL

from simiankube.nanoservice.pool import Pool, ProtocolError, authority, request_head

Answer = Callable[[bytes], bytes | None]  # request head → bytes to write (None: close the connection)


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Let the loop run until `condition` holds (a fixed sleep would guess at how long the pool takes)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.01)


class RawServer:
    """Answers each request head with `answer(head)`; counts connections and requests."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.heads: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.heads.append(head + await reader.readexactly(length))
                reply = self.answer(head)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    def close_idle(self) -> None:
        """The server ends every connection (as a server's keep-alive timeout would)."""
        for writer in self.writers:
            writer.close()


Serve = Callable[[Answer], Awaitable[RawServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[RawServer] = []

    async def start(answer: Answer) -> RawServer:
        raw = RawServer(answer)
        raw.server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        raw.port = raw.server.sockets[0].getsockname()[1]
        servers.append(raw)
        return raw

    yield start
    for raw in servers:
        assert raw.server is not None
        raw.close_idle()
        raw.server.close()


def ok(body: bytes = b'{"a": 1}') -> Answer:
    return lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def get(pool: Pool, raw: RawServer, method: str = "GET", timeout: float = 2.0,
              body: bytes | None = None) -> tuple[int, bytes]:
    head = request_head(method, "/kv/x", authority("127.0.0.1", raw.port), [("x-simiankube-caller", "web")],
                        None if body is None else len(body))
    return await pool.request(method, "127.0.0.1", raw.port, head, body, timeout)


async def test_sequential_calls_share_one_connection_and_send_the_usual_headers(serve: Serve) -> None:
    raw = await serve(ok())
    pool = Pool(idle_seconds=5, late_seconds=1)
    assert await get(pool, raw) == (200, b'{"a": 1}')
    assert await get(pool, raw, "PUT", body=b'{"value": "v"}') == (200, b'{"a": 1}')
    assert raw.connections == 1 and pool.opened == 1
    assert raw.heads[0] == (b"GET /kv/x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nx-simiankube-caller: web\r\n"
                            b"Accept: */*\r\n\r\n" % raw.port)
    assert raw.heads[1].endswith(b"Content-Type: application/json\r\nContent-Length: 14\r\n\r\n"
                                 b'{"value": "v"}')
    await pool.close()


@pytest.mark.parametrize("reply, body, reused", [
    (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n", b"abcde", True),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b"", True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi", b"hi", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", b"hi", False),
])
async def test_answers_framed_every_way_http_allows(serve: Serve, reply: bytes, body: bytes, reused: bool) -> None:
    raw = await serve(lambda head: reply)
    pool = Pool(idle_seconds=5, late_seconds=1)
    assert await get(pool, raw) == (int(reply[9:12]), body)
    assert await get(pool, raw) == (int(reply[9:12]), body)
    assert pool.opened == (1 if reused else 2)
    await pool.close()


async def test_an_answer_ended_by_closing_the_connection(serve: Serve) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Pool(idle_seconds=5, late_seconds=1)
    head = request_head("GET", "/", authority("127.0.0.1", port), [], None)
    assert await pool.request("GET", "127.0.0.1", port, head, None, 2.0) == (200, b"until the end")
    await pool.close()
    server.close()


async def test_a_timed_out_call_reads_its_late_answer_and_returns_the_connection(serve: Serve) -> None:
    raw = await serve(lambda head: b"")  # holds the answer back: the test writes it
    pool = Pool(idle_seconds=5, late_seconds=1)
    with pytest.raises(asyncio.TimeoutError):
        await get(pool, raw, timeout=0.1)
    raw.writers[0].write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")  # the answer comes after the caller gave up, within late_seconds
    await until(lambda: any(pool.idle.values()), "the connection back in the pool")
    raw.answer = ok(b"next")
    assert await get(pool, raw) == (200, b"next")
    assert pool.opened == 1 and raw.connections == 1
    await pool.close()


async def test_a_late_answer_that_never_comes_costs_the_connection(serve: Serve) -> None:
    raw = await serve(lambda head: b"")  # never answers
    pool = Pool(idle_seconds=5, late_seconds=0.1)
    with pytest.raises(asyncio.TimeoutError):
        await get(pool, raw, timeout=0.05)
    raw.answer = ok()
    await until(lambda: raw.writers[0].is_closing(), "the pool closing the connection after late_seconds")
    assert await get(pool, raw) == (200, b'{"a": 1}')
    assert pool.opened == 2
    await pool.close()


async def test_a_reused_connection_the_server_closed_is_tried_again_only_when_idempotent(serve: Serve) -> None:
    closes = [0]

    def answer(head: bytes) -> bytes | None:
        if closes[0]:  # the server ends the connection instead of answering (its keep-alive ran out meanwhile)
            closes[0] -= 1
            return None
        return ok()(head)

    raw = await serve(answer)
    pool = Pool(idle_seconds=5, late_seconds=1)
    assert await get(pool, raw) == (200, b'{"a": 1}')
    closes[0] = 1
    assert await get(pool, raw) == (200, b'{"a": 1}')  # tried again on a new connection
    assert pool.opened == 2
    closes[0] = 1
    with pytest.raises(ConnectionError, match="closed before the whole answer"):
        await get(pool, raw, "POST", body=b"{}")  # might have been acted on: not sent twice
    closes[0] = 1
    with pytest.raises(ConnectionError):  # a new connection that fails says something about the server
        await get(pool, raw)
    assert pool.opened == 3  # and it is not tried again
    raw.close_idle()
    assert await get(pool, raw) == (200, b'{"a": 1}')
    await pool.close()


async def test_refused_and_garbled_answers_are_connection_errors(serve: Serve) -> None:
    raw = await serve(lambda head: b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    pool = Pool(idle_seconds=5, late_seconds=1)
    with pytest.raises(ProtocolError, match="not an HTTP/1.x status line"):
        await get(pool, raw)
    raw.answer = lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n"
    with pytest.raises(ProtocolError, match="Content-Length"):
        await get(pool, raw)
    assert raw.server is not None
    raw.server.close()
    raw.close_idle()
    await raw.server.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await get(pool, raw)
    await pool.close()


async def test_idle_connections_are_let_go_after_idle_seconds(serve: Serve) -> None:
    raw = await serve(ok())
    pool = Pool(idle_seconds=0.2, late_seconds=1)
    await get(pool, raw)
    await until(lambda: pool.idle == {}, "the idle connection swept")
    assert pool.idle == {}  # swept
    await get(pool, raw)
    assert pool.opened == 2
    await pool.close()


def test_request_targets_are_encoded_as_aiohttp_encoded_them_and_headers_cannot_be_split() -> None:
    for target in ["/kv/ключ", "/kv/a b?direct=1", "/kv/漢😀"]:
        head = request_head("GET", target, "h:1", [], None)
        assert head.split(b" ")[1].decode() == URL(target).raw_path_qs
    assert request_head("GET", "/kv/plain-key_1.~", "h:1", [], None).startswith(b"GET /kv/plain-key_1.~ HTTP/1.1")
    assert authority("fd00::1", 8080) == "[fd00::1]:8080"
    with pytest.raises(ValueError, match="tracestate"):
        request_head("GET", "/", "h:1", [("tracestate", "a\r\nx-evil: 1")], None)
