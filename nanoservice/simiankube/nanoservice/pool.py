"""HTTP/1.1 keep-alive connections for calls between nanoservices, without a client framework.

A profile of a local worker at ~1,000 calls/s spent more CPU in aiohttp's
ClientSession.request (URL building, request and response objects, a task and
a shield per call to keep reading a late answer) than in serving requests.
Calls between instances need little of it: a request line, a few headers,
maybe a JSON body, and an answer with a Content-Length. Here a call is one
write and one future that the connection's protocol completes; a timed-out
call leaves its connection reading the late answer for a while, so the
connection goes back to the pool instead of being replaced.

The wire is HTTP/1.1 as before: the same request line, Host, Accept and
Content-Type/Content-Length as aiohttp's client sends (minus its
User-Agent, which nanoservices skipped, and Accept-Encoding: no compressed
answers). Answers may be framed by Content-Length, chunked, or by the end of
the connection.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable

from yarl import URL

MAX_HEAD_BYTES = 64 * 1024  # status line and headers of an answer
MAX_BODY_BYTES = 16 * 1024 * 1024
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
# Characters a request target may carry as they are (RFC 3986 unreserved, sub-delims, ":@/?"); anything else is
# percent-encoded the way aiohttp's client (yarl) encoded it.
_PLAIN_TARGET = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*")


class ProtocolError(ConnectionError):
    """The peer's answer is not HTTP/1.x that this client can read: counted like a broken connection."""


class Disconnected(ConnectionError):
    """The connection closed before a whole answer arrived."""


def authority(address: str, port: int) -> str:
    """The Host header's value: an IPv6 address in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def request_head(method: str, target: str, authority: str, headers: Iterable[tuple[str, str]],
                 body_length: int | None, content_type: str = "application/json") -> bytes:
    """The request line and headers of one request, ready to write."""
    if _PLAIN_TARGET.fullmatch(target) is None:
        target = URL(target).raw_path_qs  # as yarl (aiohttp's client) encodes it
    lines = [f"{method} {target} HTTP/1.1", f"Host: {authority}"]
    for name, value in headers:
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name}: a newline would end the header")
        lines.append(f"{name}: {value}")
    lines.append("Accept: */*")
    if body_length is not None:
        lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {body_length}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


class _Answer:
    """Parses one answer from the bytes received so far."""

    __slots__ = ("head_bytes", "status", "length", "chunked", "close", "body")

    def __init__(self) -> None:
        self.head_bytes = -1  # length of the head including its blank line, -1 until it is complete
        self.status = 0
        self.length = -1  # Content-Length; -1: chunked or until the connection ends
        self.chunked = False
        self.close = False  # the peer will not take another request on this connection
        self.body = b""

    def feed(self, buffer: bytearray, no_body: bool) -> bool:
        """True once the whole answer is in `buffer` (then `body` holds it)."""
        if self.head_bytes < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise ProtocolError(f"answer head longer than {MAX_HEAD_BYTES} bytes")
                return False
            self._head(bytes(buffer[:end]), no_body)
            self.head_bytes = end + 4
        if self.length >= 0:
            if len(buffer) - self.head_bytes < self.length:
                return False
            self.body = bytes(buffer[self.head_bytes:self.head_bytes + self.length])
            return True
        if self.chunked:
            return self._chunks(buffer)
        if len(buffer) - self.head_bytes > MAX_BODY_BYTES:
            raise ProtocolError(f"answer body longer than {MAX_BODY_BYTES} bytes")
        return False  # until the connection ends

    def _head(self, head: bytes, no_body: bool) -> None:
        lines = head.split(b"\r\n")
        status_line = lines[0]
        if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12 or not status_line[9:12].isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:64]!r}")
        self.status = int(status_line[9:12])
        self.close = status_line.startswith(b"HTTP/1.0")
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    self.length = int(value)
                except ValueError:
                    raise ProtocolError(f"Content-Length: {value.strip()[:32]!r}") from None
                if not 0 <= self.length <= MAX_BODY_BYTES:
                    raise ProtocolError(f"Content-Length: {self.length} out of range")
            elif name == b"transfer-encoding":
                self.chunked = b"chunked" in value.lower()
            elif name == b"connection":
                tokens = value.lower()
                self.close = b"close" in tokens or (self.close and b"keep-alive" not in tokens)
        if no_body or self.status in (204, 304) or 100 <= self.status < 200:
            self.length, self.chunked = 0, False  # an answer without a body, whatever its headers say
        elif self.chunked:
            self.length = -1  # chunked framing wins over a Content-Length (RFC 9112 6.3)
        elif self.length < 0:
            self.close = True  # the answer ends with the connection

    def _chunks(self, buffer: bytearray) -> bool:
        parts: list[bytes] = []
        at = self.head_bytes
        while True:
            line_end = buffer.find(b"\r\n", at)
            if line_end < 0:
                return False
            try:
                size = int(bytes(buffer[at:line_end]).partition(b";")[0], 16)
            except ValueError:
                raise ProtocolError("a chunk size that is not hexadecimal") from None
            if size == 0:
                trailer_end = buffer.find(b"\r\n\r\n", line_end)
                if trailer_end < 0 and buffer[line_end:line_end + 4] != b"\r\n\r\n":
                    return False
                self.body = b"".join(parts)
                return True
            start = line_end + 2
            if len(buffer) < start + size + 2:
                return False
            parts.append(bytes(buffer[start:start + size]))
            at = start + size + 2
            if at - self.head_bytes > MAX_BODY_BYTES:
                raise ProtocolError(f"answer body longer than {MAX_BODY_BYTES} bytes")

    def at_end(self, buffer: bytearray) -> bool:
        """The connection ended: complete for an answer framed by its end."""
        if self.head_bytes >= 0 and self.length < 0 and not self.chunked:
            self.body = bytes(buffer[self.head_bytes:])
            return True
        return False


class Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request at a time."""

    def __init__(self, pool: Pool, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.answer: _Answer | None = None  # the answer being read, None when idle
        self.no_body = False
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.late: asyncio.TimerHandle | None = None  # closes a connection whose late answer takes too long
        self.idle_since = 0.0
        self.used = False  # has carried a request before the current one
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP connection's transport

    def send(self, data: bytes, no_body: bool, waiter: asyncio.Future[tuple[int, bytes]]) -> None:
        assert self.transport is not None
        self.answer, self.no_body, self.waiter = _Answer(), no_body, waiter
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        answer = self.answer
        if answer is None:  # nobody asked: the peer is not speaking HTTP to us
            self.close()
            return
        self.buffer += data
        try:
            done = answer.feed(self.buffer, self.no_body)
        except ProtocolError as err:
            self._fail(err)
            return
        if done:
            self._complete(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pool.forget(self)
        answer = self.answer
        if answer is not None and answer.at_end(self.buffer):
            self._complete(answer)
        else:
            self._fail(Disconnected(f"connection to {self.key[0]}:{self.key[1]} closed before the whole answer"
                                    + (f": {exc}" if exc else "")))

    def _complete(self, answer: _Answer) -> None:
        waiter = self.waiter
        leftover = len(self.buffer) - answer.head_bytes - len(answer.body) if not answer.chunked else 0
        self.answer, self.waiter = None, None
        self.buffer.clear()
        if self.late is not None:
            self.late.cancel()
            self.late = None
        if waiter is not None and not waiter.done():
            waiter.set_result((answer.status, answer.body))
        if answer.close or leftover or self.lost:
            self.close()
        else:
            self.used = True
            self.pool.release(self)

    def _fail(self, err: Exception) -> None:
        waiter = self.waiter
        self.answer, self.waiter = None, None
        if self.late is not None:
            self.late.cancel()
            self.late = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(err)
        self.close()

    def abandon(self, late_seconds: float) -> None:
        """The caller stopped waiting: read the answer for `late_seconds` more, then give the connection up."""
        if self.answer is not None and self.late is None and not self.lost:
            self.waiter = None
            self.late = asyncio.get_running_loop().call_later(late_seconds, self.close)

    def closing(self) -> bool:
        return self.lost or self.transport is None or self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class Pool:
    """Keep-alive connections by (address, port): one per pod, or one per local worker process, whose instances
    all connect from the same loopback address and so reuse each other's connections (every request still
    names its caller). Unbounded, as a bound would queue calls behind it and turn overload into timeouts of
    healthy instances. An idle connection is let go after `idle_seconds` (half a callee's read timeout, well
    before the callee would close it under a request); the most recently used one is taken first, so a quiet
    period lets the extra ones age out."""

    def __init__(self, idle_seconds: float, late_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self.late_seconds = late_seconds
        self.idle: dict[tuple[str, int], list[Connection]] = {}
        self.busy: set[Connection] = set()
        self.opened = 0  # connections opened so far (the cost a pool exists to avoid)
        self.closed = False
        self._sweeper: asyncio.TimerHandle | None = None

    async def request(self, method: str, address: str, port: int, head: bytes, body: bytes | None,
                      timeout: float) -> tuple[int, bytes]:
        """(status, body) of one exchange; asyncio.TimeoutError after `timeout` seconds; OSError (refused,
        reset, closed early) or ProtocolError otherwise. A reused connection that turns out closed is tried
        once more on a new one for idempotent methods (RFC 9112 9.3.1), as aiohttp's client did."""
        if self.closed:
            raise ConnectionError("the connection pool is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        data = head if body is None else head + body
        for attempt in range(2):
            connection = self._take((address, port), loop.time())
            if connection is None:
                connection = await self._open(address, port, deadline - loop.time())
            waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()
            connection.send(data, method == "HEAD", waiter)
            self.busy.add(connection)
            timer = loop.call_at(deadline, _expire, waiter)
            try:
                return await waiter
            except Disconnected:
                if attempt or not connection.used or method not in IDEMPOTENT or loop.time() >= deadline:
                    raise
            finally:
                timer.cancel()
                self.busy.discard(connection)
                if not waiter.done() or waiter.cancelled() or isinstance(waiter.exception(), TimeoutError):
                    connection.abandon(self.late_seconds)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _open(self, address: str, port: int, timeout: float) -> Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(max(timeout, 0.0)):
            transport, connection = await loop.create_connection(lambda: Connection(self, (address, port)),
                                                                 address, port)
        connection.transport = transport  # uvloop may call connection_made only after this returns
        self.opened += 1
        return connection

    def _take(self, key: tuple[str, int], now: float) -> Connection | None:
        idle = self.idle.get(key)
        while idle:
            connection = idle.pop()
            if now - connection.idle_since < self.idle_seconds and not connection.closing():
                return connection
            connection.close()
        return None

    def release(self, connection: Connection) -> None:
        if self.closed:
            connection.close()
            return
        loop = asyncio.get_running_loop()
        connection.idle_since = loop.time()
        self.idle.setdefault(connection.key, []).append(connection)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.idle_seconds / 2, self._sweep)

    def forget(self, connection: Connection) -> None:
        """A connection that ended: never handed out again."""
        idle = self.idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)

    def _sweep(self) -> None:
        """Close connections idle longer than `idle_seconds`; again every half of it while any are idle."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for key in list(self.idle):
            idle = self.idle[key]
            fresh = [c for c in idle if now - c.idle_since < self.idle_seconds]
            for connection in idle:
                if now - connection.idle_since >= self.idle_seconds:
                    connection.close()
            if fresh:
                self.idle[key] = fresh
            else:
                del self.idle[key]
        self._sweeper = loop.call_later(self.idle_seconds / 2, self._sweep) if self.idle else None

    async def close(self) -> None:
        """Close every connection, idle or busy."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in [c for idle in self.idle.values() for c in idle] + list(self.busy):
            connection.close()
        self.idle.clear()
        self.busy.clear()
        await asyncio.sleep(0)  # let the transports finish closing


def _expire(waiter: asyncio.Future[tuple[int, bytes]]) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())
