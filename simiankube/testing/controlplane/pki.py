"""Certificates (one CA signs everything) and kubeconfigs for the rig's components."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from simiankube.testing.controlplane.errors import RigError


def openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RigError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


def make_ca(pki: Path) -> None:
    config = pki / "ca.cnf"
    config.write_text(
        "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = ext\n"
        "[dn]\nCN = simiankube-rig-ca\n"
        "[ext]\nbasicConstraints = critical,CA:TRUE\n"
        "keyUsage = critical,keyCertSign,cRLSign,digitalSignature\n"
        "subjectKeyIdentifier = hash\n"
    )
    openssl(
        "req", "-x509", "-new", "-config", str(config), "-newkey", "ec",
        "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3650",
        "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"),
    )  # fmt: skip


def make_cert(
    pki: Path,
    name: str,
    *,
    common_name: str,
    organization: str | None = None,
    server_names: Sequence[str] = (),
) -> None:
    """Issue ``pki/<name>.crt`` + ``.key`` signed by the rig CA."""
    dn = f"CN = {common_name}\n" + (f"O = {organization}\n" if organization else "")
    ext = (
        "basicConstraints = critical,CA:FALSE\n"
        "keyUsage = critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage = {'serverAuth,clientAuth' if server_names else 'clientAuth'}\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
    )
    if server_names:
        sans = [f"IP:{n}" if n[0].isdigit() else f"DNS:{n}" for n in server_names]
        ext += f"subjectAltName = {','.join(sans)}\n"
    config = pki / f"{name}.cnf"
    config.write_text(
        "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = ext\n"
        f"[dn]\n{dn}[ext]\n{ext}"
    )
    openssl(
        "req", "-x509", "-new", "-config", str(config), "-newkey", "ec",
        "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3650",
        "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
        "-keyout", str(pki / f"{name}.key"), "-out", str(pki / f"{name}.crt"),
    )  # fmt: skip


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_file: Path,
    user: dict[str, str],
    namespace: str | None = None,
) -> Path:
    """Write a kubeconfig (JSON, which every YAML reader accepts), mode 0600."""
    context: dict[str, str] = {"cluster": "simiankube-rig", "user": "rig-user"}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "simiankube-rig",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_file)},
            }
        ],
        "users": [{"name": "rig-user", "user": user}],
        "contexts": [{"name": "simiankube-rig", "context": context}],
        "current-context": "simiankube-rig",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(config, handle, indent=2)
        handle.write("\n")
    return path


def kubeconfig_for_token(
    token: str, path: Path, *, server: str, ca_file: Path, namespace: str | None = None
) -> Path:
    """Write a kubeconfig that authenticates with a bearer token (e.g. a ServiceAccount's)."""
    return _write_kubeconfig(
        path, server=server, ca_file=ca_file, user={"token": token}, namespace=namespace
    )


def client_cert_kubeconfig(path: Path, *, server: str, pki: Path, name: str) -> Path:
    return _write_kubeconfig(
        path,
        server=server,
        ca_file=pki / "ca.crt",
        user={
            "client-certificate-data": _b64(pki / f"{name}.crt"),
            "client-key-data": _b64(pki / f"{name}.key"),
        },
    )
