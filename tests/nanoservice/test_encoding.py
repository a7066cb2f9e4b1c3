"""The hand-built JSON answers are byte for byte what web.json_response sends."""

from __future__ import annotations

import enum
import json
from typing import Any

import pytest
from aiohttp import web

from simiankube.nanoservice.app import encode_json, json_answer


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


@pytest.mark.parametrize("status", [200, 404, 504])
def test_json_answer_equals_json_response(status: int) -> None:
    body = {"key": "k", "found": False}
    ours, theirs = json_answer(body, status), web.json_response(body, status=status)
    assert (ours.status, ours.body, dict(ours.headers)) == (theirs.status, theirs.body, dict(theirs.headers))
    assert (ours.content_type, ours.charset) == (theirs.content_type, theirs.charset)
