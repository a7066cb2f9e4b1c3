"""DNS mode (pods) against a DNS server of the test: a transient failure keeps the last good answer.

The caller runs as a real nanoservice process in a mount namespace of its own
whose /etc/resolv.conf names a tiny UDP DNS server in this test, so the
process's own getaddrinfo sees answers, SERVFAIL or NXDOMAIN as the test
chooses. Needs root (mount namespace); elsewhere the test fails with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from simiankube.localrun.runner import pick_addresses
from simiankube.nanoservice.resolver import REFRESH_SECONDS
from simiankube.testing.wait import wait_for

from tests.nanoservice.conftest import Mesh

NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3


class DnsServer:
    """Answers every A query with `address` (rcode NOERROR), or with `rcode` alone; counts the queries."""

    def __init__(self, host: str, address: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 53))
        self.address = socket.inet_aton(address)
        self.rcode = NOERROR
        self.queries = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                query, peer = self.sock.recvfrom(512)
            except OSError:
                return
            self.queries += 1
            end = 12
            while query[end]:
                end += query[end] + 1
            question = query[12:end + 5]
            qtype = struct.unpack("!H", query[end + 1:end + 3])[0]
            answer = b""
            if self.rcode == NOERROR and qtype == 1:
                answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + self.address
            header = query[:2] + struct.pack("!HHHHH", 0x8180 | self.rcode, 1, 1 if answer else 0, 0, 0)
            self.sock.sendto(header + question + answer, peer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def dns() -> Iterator[tuple[str, list[DnsServer]]]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("needs root and unshare(1): the caller gets a resolv.conf of its own in a mount namespace")
    [host] = pick_addresses(1)
    servers: list[DnsServer] = []
    yield host, servers
    for server in servers:
        server.close()


def test_a_transient_dns_failure_keeps_the_last_good_answer(mesh: Mesh, dns: tuple[str, list[DnsServer]],
                                                            tmp_path: Path) -> None:
    mesh.load([{"name": "db", "package": "store", "count": 1},
               {"name": "web", "package": "karyon", "count": 1, "dependencies": ["db"]}])
    [db], [web] = mesh.service("db"), mesh.service("web")
    mesh.start(db.name)
    host, servers = dns
    server = DnsServer(host, db.address)
    servers.append(server)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {host}\noptions timeout:1 attempts:1\n")
    spec = tmp_path / "web.json"  # web resolves by DNS: no hosts table
    spec.write_text(json.dumps({"parent": os.getpid(), "launches": [asdict(replace(web.launch, hosts_path=""))]}))
    process = subprocess.Popen(
        ["unshare", "--mount", "sh", "-c", f"mount --bind {resolv} /etc/resolv.conf && exec "
         f"{sys.executable} -m simiankube.localrun.worker {spec}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "web.log", "ab"), start_new_session=True)
    mesh.processes.append(process)
    wait_for(lambda: process.poll() is None and mesh.ready(web), 30, interval=0.05, message="web ready")
    assert mesh.call(web, "GET", "/kv/k")[0] == 404  # db found through DNS

    def two_refreshes() -> None:
        seen = server.queries
        wait_for(lambda: server.queries > seen + 2, 3 * REFRESH_SECONDS, message="web resolved again")
        seen = server.queries
        wait_for(lambda: server.queries > seen + 2, 3 * REFRESH_SECONDS, message="web resolved again")

    server.rcode = SERVFAIL  # the DNS server is in trouble: nothing is known about db's instances
    two_refreshes()
    assert mesh.call(web, "GET", "/kv/k")[0] == 404  # still db, from the last good answer

    server.rcode = NXDOMAIN  # db has no ready instance any more: that is an answer
    two_refreshes()
    status, body = mesh.call(web, "GET", "/kv/k")
    assert status == 502 and "no healthy instance" in body["error"], body
