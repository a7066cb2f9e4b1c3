"""docker-compose files (v1, v2, v3 / the Compose Specification) as spigo architectures, as spigo's
`compose2arch` converts them.

The rules are spigo's (`compose/compose.go`, `ComposeArch`), with the image rule added for databases:

| compose | architecture service |
|---|---|
| a service named `db` | staash, 1 instance, depending on the named volumes it mounts (spigo) |
| a service named `redis`, or whose image is a database (`DATABASE_IMAGES`) | store, 1 instance |
| image `memcached` | cache, 1 instance; `cassandra` → priamCassandra, `riak` → riak, 3 instances (a ring per zone) |
| any other service | monolith, 3 instances (one per zone) |
| `links` (`db:alias` → `db`) and `depends_on` (list or mapping) | dependencies |
| a published port (`"8080:80"`, or `published:` in the long syntax) | a `www-<service>` denominator calling it |
| a top-level network | an elb (one cross-zone instance) depending on the services attached to it |
| a top-level named volume | a store (one cross-zone instance) |

Bind mounts (`./src:/app`), anonymous volumes and every other key (environment, command, ...) have no
counterpart in an architecture and are left out. What cannot be mapped is an error naming the field:
a service with neither `image` nor `build`, `extends`, a link, dependency or network to nothing
defined, and names that collide.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

DATABASE_IMAGES = frozenset({
    "redis", "postgres", "mysql", "mariadb", "mongo", "mongodb", "couchdb", "elasticsearch", "influxdb",
    "neo4j", "rethinkdb", "couchbase", "cockroachdb", "etcd", "consul", "zookeeper", "minio",
})
IMAGE_PACKAGES = {"memcached": "cache", "cassandra": "priamCassandra", "riak": "riak"}
RING_COUNT = 3
MONOLITH_COUNT = 3


class ComposeError(Exception):
    """Everything in a compose file that has no counterpart, each naming its field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def is_compose(document: Any) -> bool:
    """A compose file: `services` as a mapping (v2/v3), or (v1) a mapping of service mappings with an image or
    build — a spigo file lists its services, a CR has a kind."""
    if not isinstance(document, dict) or not document or "kind" in document or "arch" in document:
        return False
    if isinstance(document.get("services"), dict):
        return True
    return all(isinstance(v, dict) and ("image" in v or "build" in v) for v in document.values())


def image_name(image: str) -> str:
    """`registry:5000/library/postgres:9.4@sha256:...` → `postgres`."""
    name = image.split("@")[0].rsplit("/", 1)[-1]
    return name.split(":")[0].lower()


def package_of(name: str, image: str) -> tuple[str, int]:
    """(package, count) of a compose service, by spigo's name rules first, then by image."""
    if name == "db":
        return "staash", 1
    base = image_name(image) if image else ""
    if name == "redis" or base in DATABASE_IMAGES:
        return "store", 1
    if base in IMAGE_PACKAGES:
        package = IMAGE_PACKAGES[base]
        return package, 1 if package == "cache" else RING_COUNT
    return "monolith", MONOLITH_COUNT


def compose_to_spigo(document: Any, name: str) -> dict[str, Any]:
    """A spigo architecture document (arch-0.1) for a compose document; raises ComposeError."""
    if not isinstance(document, dict):
        raise ComposeError([f"document: expected a mapping, got {type(document).__name__}"])
    v1 = not isinstance(document.get("services"), dict)
    at = "" if v1 else "services."
    services_data: dict[str, Any] = document if v1 else document["services"]
    networks_data = {} if v1 else _mapping_keys(document.get("networks"))
    volumes_data = {} if v1 else _mapping_keys(document.get("volumes"))
    problems: list[str] = []
    if not services_data:
        problems.append("services: no services defined")
    version = document.get("version")
    if not v1 and version is not None and not isinstance(version, (str, int, float)):
        problems.append(f"version: expected a string, got {version!r}")

    names = set(services_data)
    out: list[dict[str, Any]] = []
    attached: dict[str, list[str]] = {n: [] for n in networks_data}
    for service, options in services_data.items():
        here = f"{at}{service}"
        if not isinstance(options, dict):
            problems.append(f"{here}: expected a mapping of options, got {options!r}")
            continue
        if "extends" in options:
            problems.append(f"{here}.extends: cannot be mapped; inline the extended service")
        image = options.get("image")
        build = options.get("build")
        container = image if isinstance(image, str) else _build_context(build)
        if not container:
            problems.append(f"{here}: needs an image or a build to be mapped")
        deps: list[str] = []
        for dep, where in _dependencies(options, here, problems):
            if dep not in names:
                problems.append(f"{where}: {dep!r} is not a service in this file")
            elif dep not in deps:
                deps.append(dep)
        for network, where in _networks(options, here, problems):
            if network in attached:
                attached[network].append(service)
            elif network != "default":
                problems.append(f"{where}: network {network!r} is not defined under networks")
        package, count = package_of(service, image if isinstance(image, str) else "")
        if package == "staash":
            deps += [v for v in _named_volumes(options, volumes_data) if v not in deps]
        out.append({"name": service, "package": package, "count": count, "regions": 1,
                    "dependencies": deps, "machine": "machine", "container": container or ""})
        if _publishes(options.get("ports")):
            out.append({"name": f"www-{service}", "package": "denominator", "count": 0, "regions": 0,
                        "dependencies": [service], "machine": "external"})
    for network, members in attached.items():
        out.append({"name": network, "package": "elb", "count": 0, "regions": 1, "dependencies": members,
                    "machine": "network"})
    for volume in volumes_data:
        out.append({"name": volume, "package": "store", "count": 0, "regions": 1, "dependencies": [],
                    "machine": "volume"})
    seen: dict[str, int] = {}
    for entry in out:
        seen[entry["name"]] = seen.get(entry["name"], 0) + 1
    for duplicate in sorted(n for n, c in seen.items() if c > 1):
        problems.append(f"{duplicate}: the name of more than one of service, www- entry point, network and volume")
    if problems:
        raise ComposeError(problems)
    return {"arch": name, "version": "arch-0.1", "description": "compose yaml", "services": out}


def arch_name(path: str) -> str:
    """spigo names the architecture after the file: `docker-compose.yml` → `docker-compose`."""
    return PurePath(path).stem


def _mapping_keys(value: Any) -> dict[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _build_context(build: Any) -> str:
    if isinstance(build, str):
        return build
    if isinstance(build, dict) and isinstance(build.get("context"), str):
        return str(build["context"])
    return ""


def _dependencies(options: dict[str, Any], here: str, problems: list[str]) -> list[tuple[str, str]]:
    """(service, field path) of links (`name:alias` → name) and depends_on (list or mapping form)."""
    found = []
    links = options.get("links") or []
    if not isinstance(links, list):
        problems.append(f"{here}.links: expected a list, got {links!r}")
        links = []
    for i, link in enumerate(links):
        if isinstance(link, str) and link:
            found.append((link.split(":")[0], f"{here}.links[{i}]"))
        else:
            problems.append(f"{here}.links[{i}]: expected a service name, got {link!r}")
    depends = options.get("depends_on") or []
    if isinstance(depends, dict):
        found += [(str(d), f"{here}.depends_on.{d}") for d in depends]
    elif isinstance(depends, list):
        for i, dep in enumerate(depends):
            if isinstance(dep, str) and dep:
                found.append((dep, f"{here}.depends_on[{i}]"))
            else:
                problems.append(f"{here}.depends_on[{i}]: expected a service name, got {dep!r}")
    else:
        problems.append(f"{here}.depends_on: expected a list or a mapping, got {depends!r}")
    return found


def _networks(options: dict[str, Any], here: str, problems: list[str]) -> list[tuple[str, str]]:
    networks = options.get("networks") or []
    if isinstance(networks, dict):
        return [(str(n), f"{here}.networks.{n}") for n in networks]
    if isinstance(networks, list) and all(isinstance(n, str) for n in networks):
        return [(n, f"{here}.networks[{i}]") for i, n in enumerate(networks)]
    problems.append(f"{here}.networks: expected a list of names or a mapping, got {networks!r}")
    return []


def _named_volumes(options: dict[str, Any], defined: dict[str, Any]) -> list[str]:
    """Top-level named volumes a service mounts (short `name:/path` or long `source: name` syntax)."""
    names = []
    for volume in options.get("volumes") or []:
        source = volume.split(":")[0] if isinstance(volume, str) else (
            volume.get("source") if isinstance(volume, dict) else None)
        if isinstance(source, str) and source in defined and source not in names:
            names.append(source)
    return names


def _publishes(ports: Any) -> bool:
    """Whether a port is published on the host (spigo: a port with a `host:container` mapping)."""
    for port in ports if isinstance(ports, list) else []:
        if isinstance(port, str) and len(port.split(":")) >= 2:
            return True
        if isinstance(port, dict) and port.get("published") is not None:
            return True
    return False
