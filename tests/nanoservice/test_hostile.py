"""Hostile input against real nanoservice processes: every bad request is a JSON 4xx, counted, and harmless."""

from __future__ import annotations

import socket
import time

import pytest

from simiankube import contract
from simiankube.localrun.runner import pick_addresses
from simiankube.nanoservice.probe import Scope

from tests.nanoservice.conftest import Mesh

TEXT = {"Content-Type": "text/plain; charset=utf-8"}


def test_bad_bodies_and_unknown_routes_are_json_4xx_never_500_and_every_answer_is_counted(mesh: Mesh) -> None:
    mesh.load([{"name": "db", "package": "store", "count": 1}])
    mesh.start_all()
    [db] = mesh.service("db")
    nested = b"[" * 30_000 + b"]" * 30_000  # within the body limit, deeper than the parser's stack

    answers = [
        (mesh.call(db, "PUT", "/kv/k", b"\xff\xfe\xfd", TEXT), 400, "utf-8"),
        (mesh.call(db, "PUT", "/kv/k", b"v", {"Content-Type": "text/plain; charset=no-such-charset"}), 400,
         "charset"),
        (mesh.call(db, "PUT", "/kv/k", nested, {"Content-Type": "application/json"}), 400, "JSON"),
        (mesh.call(db, "POST", "/probe", nested, {"Content-Type": "application/json"}), 400, "JSON"),
        (mesh.call(db, "POST", "/replicate", b'{"key": "\xff"}', {"Content-Type": "application/json"}), 400,
         "utf-8"),
        (mesh.call(db, "GET", "/nothing"), 404, "/nothing"),
        (mesh.call(db, "DELETE", "/kv/k"), 405, "DELETE"),
        (mesh.call(db, "PUT", "/kv/k", b"x" * 100_000, TEXT), 413, "65536"),
        (mesh.call(db, "GET", "/kv/a%3Fdirect=1"), 400, "key"),  # would become another key when forwarded
        (mesh.call(db, "PUT", "/kv/k", b"dmFsdWU=", {"Content-Type": "text/plain; charset=base64"}), 400,
         "charset"),  # a codec, but not a text encoding
    ]

    for (status, body), expected, named in answers:
        assert (status, named in body.get("error", "")) == (expected, True), body
    # bytes that are not UTF-8 in the caller header (a metrics label) must not break later scrapes
    assert mesh.call(db, "GET", "/kv/k", headers={"x-simiankube-caller": "\u00c3("})[0] == 404
    assert mesh.metric(db, "server_requests_total") == len(answers) + 1  # 404/405/413, view errors included
    assert mesh.metric(db, "server_errors_total") == 0  # not one 500
    assert mesh.call(db, "PUT", "/kv/k", "é".encode("latin-1"), {"Content-Type": "text/plain; charset=latin-1"}) \
        == (200, {"key": "k", "stored": True, "replicating": 0, "served_by": db.name})
    assert mesh.call(db, "GET", "/kv/k")[1]["value"] == "é"  # a known charset is honoured


def exchange(address: str, port: int, head: bytes) -> tuple[socket.socket, bytes]:
    """Send a request head on a new connection and read what comes back first (an answer or an interim 100)."""
    sock = socket.create_connection((address, port), timeout=10)
    sock.sendall(head)
    return sock, sock.recv(65536)


def test_routing_answers_as_aiohttps_router_did(mesh: Mesh) -> None:
    """The nanoservice routes with its own table (not web.Application's router): HEAD, Expect, a quoted slash,
    and methods per path must answer as the router did."""
    mesh.load([{"name": "db", "package": "store", "count": 1}])
    mesh.start_all()
    [db] = mesh.service("db")
    address, port = db.address, db.launch.port

    sock, interim = exchange(address, port, b"PUT /kv/big HTTP/1.1\r\nHost: db\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 2000\r\nExpect: 100-continue\r\n\r\n")
    with sock:
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"  # asked for the body before it was sent
        sock.sendall(b"v" * 2000)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
    assert mesh.call(db, "GET", "/kv/big")[1]["value"] == "v" * 2000
    sock, answer = exchange(address, port, b"PUT /kv/big HTTP/1.1\r\nHost: db\r\nContent-Length: 1\r\n"
                            b"Expect: teapot\r\n\r\n")
    sock.close()
    assert answer.startswith(b"HTTP/1.1 417 ") and b'"error": "Expect: unknown expectation' in answer

    sock, answer = exchange(address, port, f"HEAD {contract.PATH_HEALTH} HTTP/1.1\r\nHost: db\r\n\r\n".encode())
    sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Type: application/json" in head and body == b""

    assert mesh.call(db, "GET", "/kv/a%2Fb") == (400, {"error": "key: 'a/b' has a character a forwarded path "
                                                          "cannot carry (?#%/\\ or control)"})
    for path in ("/kv/", "/kv/a/b", "/kv/a{b", "/kv", "/healthz/"):
        assert mesh.call(db, "GET", path)[0] == 404, path
    status, body = mesh.call(db, "POST", "/kv/k", b"v", TEXT)
    assert (status, body) == (405, {"error": "method POST not allowed on /kv/k (allowed: GET,HEAD,PUT)"})
    assert mesh.call(db, "GET", "/replicate") == (405, {"error": "method GET not allowed on /replicate "
                                                               "(allowed: POST)"})


def test_a_put_is_never_reported_stored_when_it_was_not(mesh: Mesh) -> None:
    mesh.load([
        {"name": "db", "package": "store", "count": 1},
        {"name": "web", "package": "karyon", "count": 1, "dependencies": ["db"]},
        {"name": "bank", "package": "store", "count": 1},
        {"name": "pirate", "package": "pirate", "count": 1, "dependencies": ["bank"]},
    ])
    mesh.start_all()
    [web], [db], [pirate] = mesh.service("web"), mesh.service("db"), mesh.service("pirate")
    grows = b"\x01" * 30_000  # 30 KB here, 180 KB as JSON on the way to db: more than any service accepts

    status, body = mesh.call(web, "PUT", "/kv/k", grows, TEXT)

    assert status == 413 and "value" in body["error"], body
    assert mesh.call(db, "GET", "/kv/k")[0] == 404
    # 24 KB of emoji here, 72 KB as JSON escapes: even a leaf refuses what it could not pass on
    status, body = mesh.call(db, "PUT", "/kv/k", "\U0001F600".encode() * 6000, TEXT)
    assert status == 413 and "value" in body["error"], body
    assert mesh.metric(db, "server_requests_total") == 2  # the GET and the PUT above: nothing was sent on

    # A dependency's 4xx comes back as that 4xx: the bank (a store) keeps no coins. A pirate's put is one
    # tick of its chat (a name-drop or a gift of a random share), so tick until a gift has been tried.
    answers = [mesh.call(pirate, "PUT", "/kv/k", b"give", TEXT) for _ in range(20)]
    refused = [body for status, body in answers if status == 404]
    assert refused and all("coins" in body["error"] for body in refused), answers
    assert {status for status, _ in answers} <= {200, 404}, answers
    assert not any(body.get("given") for _, body in answers), answers  # never reported given
    assert mesh.call(pirate, "GET", "/kv/k")[1]["coins"] == 100  # no coin was given away


def test_callers_cannot_raise_the_budget_or_the_hop_limit_above_the_configured_ones(mesh: Mesh) -> None:
    mesh.load([{"name": "db", "package": "store", "count": 1}], traffic={"deadlineMs": 5000, "maxHops": 20})
    mesh.start_all()
    [db] = mesh.service("db")  # not a traffic source: it learns the limits from its configuration
    for header, value in [("x-simiankube-max-hops", "21"), ("x-simiankube-deadline-ms", "5000.5"),
                          ("x-simiankube-hops", "0")]:
        status, body = mesh.call(db, "GET", "/kv/k", headers={header: value})
        assert (status, header in body.get("error", "")) == (400, True), (header, body)
    assert mesh.call(db, "GET", "/kv/k", headers={"x-simiankube-max-hops": "20",
                                                  "x-simiankube-deadline-ms": "5000"})[0] == 404
    assert mesh.call(db, "GET", "/kv/k", headers={"x-simiankube-hops": "21", "x-simiankube-max-hops": "20"})[0] == 508


def _connect(address: str) -> socket.socket:
    return socket.create_connection((address, contract.HTTP_PORT), timeout=10)


def _closed_after(conn: socket.socket) -> tuple[float, bytes]:
    """Seconds until the server closed the connection, and what it sent before."""
    started, received = time.monotonic(), b""
    while chunk := conn.recv(4096):
        received += chunk
    return time.monotonic() - started, received


def test_slow_clients_cannot_hold_connections(mesh: Mesh) -> None:
    mesh.load([{"name": "db", "package": "store", "count": 1}])
    [db] = mesh.service("db")
    mesh.start(db.name, read_timeout=1.0, keepalive=1.0)  # a pod has both at 10 s

    with _connect(db.address) as headers_only:  # never finishes its headers
        headers_only.sendall(b"GET /kv/k HTTP/1.1\r\nHost: db\r\n")
        elapsed, received = _closed_after(headers_only)
    assert received == b"" and elapsed < 5  # closed at the keep-alive timeout (1 s), not held

    with _connect(db.address) as half_body:  # announces 100 bytes, sends 10
        half_body.sendall(b"PUT /kv/k HTTP/1.1\r\nHost: db\r\nContent-Type: text/plain\r\n"
                          b"Content-Length: 100\r\n\r\n0123456789")
        elapsed, received = _closed_after(half_body)
    assert received.startswith(b"HTTP/1.1 408") and b'"error"' in received, received
    assert elapsed < 5
    assert mesh.call(db, "GET", "/kv/k")[0] == 404  # nothing was stored, and prompt clients are served


def test_store_memory_is_bounded_in_bytes_not_only_keys(mesh: Mesh) -> None:
    mesh.load([{"name": "db", "package": "store", "count": 1}])
    mesh.start_all()
    [db] = mesh.service("db")
    value = b"x" * 60_000
    for i in range(1200):  # 72 MB in 1,200 keys: far below the key bound, above the 64 MiB byte bound
        assert mesh.call(db, "PUT", f"/kv/k{i}", value, TEXT)[0] == 200
    assert mesh.call(db, "GET", "/kv/k0")[0] == 404  # the oldest went
    assert mesh.call(db, "GET", "/kv/k1199")[0] == 200


def test_probe_reaches_only_targets_of_this_architecture(mesh: Mesh) -> None:
    mesh.load([{"name": "db", "package": "store", "count": 1}, {"name": "web", "package": "karyon", "count": 1}])
    mesh.start_all()
    [web], [db] = mesh.service("web"), mesh.service("db")
    allowed = [{"host": "t-db-us-east-1", "port": 8080}, {"host": db.address, "port": 8080}]
    assert mesh.call(web, "POST", "/probe", {"targets": allowed})[0] == 200
    [spare] = pick_addresses(1)
    for target, named in [({"host": "example.com", "port": 8080}, "example.com"),
                          ({"host": "8.8.8.8", "port": 8080}, "8.8.8.8"),
                          ({"host": "169.254.169.254", "port": 8080}, "169.254.169.254"),  # cloud metadata
                          ({"host": db.address, "port": 22}, "port 22"),
                          ({"host": f"{spare}", "port": 9}, "port 9"),
                          ({"host": "other-arch-db", "port": 8080}, "other-arch-db")]:
        status, body = mesh.call(web, "POST", "/probe", {"targets": [*allowed, target]})
        assert (status, named in body.get("error", "")) == (400, True), (target, body)


@pytest.mark.parametrize(("host", "port", "allowed"), [
    ("t-db-us-east-1", 8080, True),  # a configured host
    ("t-anything", 8080, True),  # a Service of the architecture, own namespace
    ("t-db.other-namespace", 8080, False),
    ("other-db", 8080, False),
    ("t-db-us-east-1", 22, False),
    ("10.244.1.7", 8080, True), ("100.64.3.4", 8080, True), ("fd00::7", 8080, True), ("127.0.93.4", 8080, True),
    ("169.254.169.254", 8080, False), ("fe80::1", 8080, False), ("0.0.0.0", 8080, False),
    ("224.0.0.1", 8080, False), ("1.1.1.1", 8080, False), ("2001:4860::8888", 8080, False),
])
def test_probe_scope(host: str, port: int, allowed: bool) -> None:
    scope = Scope(frozenset({"t-db-us-east-1"}), "t", 8080)
    assert (scope.refuses(host, port) is None) == allowed, scope.refuses(host, port)
