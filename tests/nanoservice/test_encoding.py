"""The hand-built JSON answers are byte for byte what web.json_response sends, on the wire."""

from __future__ import annotations

import asyncio
import enum
import json
import re
from typing import Any

import pytest
from aiohttp import web

from simiankube.nanoservice.app import Answer, encode_json, json_answer


class Level(enum.IntEnum):
    LOW = 1


BODIES: list[dict[str, Any]] = [
    {},
    {"key": "key1", "found": False},
    {"key": "k", "value": "v", "found": True, "served_by": "store-0"},
    {"key": "k", "stored": True, "replicas": 2, "served_by": "x", "missing": None},
    {"error": 'quote " backslash \\ newline \n tab \t nul \x00 non-ascii é 漢 😀'},
    {"ünïcode key": -12345678901234567890},
    {"key": "k", "via": ["a", "b"]},  # nested: json.dumps
    {"latency": 0.25, "nan": float("nan")},  # floats: json.dumps
    {1: "integer key"},  # json.dumps turns it into a string
    {"level": Level.LOW},  # int subclass: json.dumps
]


@pytest.mark.parametrize("body", BODIES)
def test_encode_json_equals_json_dumps(body: dict[str, Any]) -> None:
    assert encode_json(body) == json.dumps(body).encode()


# (method, version line, extra request headers): keep-alive, HEAD, HTTP/1.0 with and without keep-alive, close
REQUESTS = [("GET", "HTTP/1.1", ""), ("HEAD", "HTTP/1.1", ""), ("GET", "HTTP/1.0", "Connection: keep-alive\r\n"),
            ("GET", "HTTP/1.0", ""), ("GET", "HTTP/1.1", "Connection: close\r\n")]


async def raw_answer(response: web.StreamResponse, request_line: tuple[str, str, str]) -> bytes:
    """What a low-level aiohttp server writes on a real socket when its handler returns `response`."""
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return response

    runner = web.ServerRunner(web.Server(handler), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        method, version, extra = request_line
        writer.write(f"{method} /x {version}\r\nHost: h\r\n{extra}\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + (
                0 if method == "HEAD" else int(re.search(rb"Content-Length: (\d+)", data).group(1))):  # type: ignore[union-attr]
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            assert chunk, f"connection closed after {data!r}"
            data += chunk
        writer.close()
        return re.sub(rb"Date: [^\r]+", b"Date: -", data)  # the clock may tick between the two answers
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("request_line", REQUESTS)
@pytest.mark.parametrize("status", [200, 404, 503])
async def test_answers_are_written_as_aiohttp_writes_them(status: int, request_line: tuple[str, str, str]) -> None:
    body = {"key": "k", "found": False}
    theirs = web.json_response(body, status=status)
    theirs.headers["Retry-After"] = "1"  # after Content-Type, as the 503 of a shed request and the 405's Allow
    ours = Answer(encode_json(body), status, headers="Retry-After: 1\r\n")
    expected = await raw_answer(theirs, request_line)
    assert expected.startswith(f"{request_line[1]} {status} ".encode())  # the comparison compares something
    assert await raw_answer(ours, request_line) == expected


async def test_json_answer_is_json_response() -> None:
    body = {"key": "k", "via": ["a", "b"]}
    assert await raw_answer(json_answer(body, 504), REQUESTS[0]) == await raw_answer(
        web.json_response(body, status=504), REQUESTS[0])
