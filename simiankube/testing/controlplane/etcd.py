"""etcd: the rig's store, on loopback, without fsync (test data is thrown away)."""

from __future__ import annotations

from pathlib import Path

from simiankube.testing.controlplane.binaries import binary


def client_url(port: int) -> str:
    """The URL the API server reaches etcd at."""
    return f"http://127.0.0.1:{port}"


def argv(*, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    """Command line of a one-member etcd cluster."""
    url = client_url(client_port)
    peer_url = f"http://127.0.0.1:{peer_port}"
    return [
        str(binary("etcd")),
        "--name=rig",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={url}",
        f"--advertise-client-urls={url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=rig={peer_url}",
        "--initial-cluster-state=new",
        "--unsafe-no-fsync=true",  # test data: speed over durability
        "--log-level=warn",
    ]
