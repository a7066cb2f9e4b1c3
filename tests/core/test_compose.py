"""`simiankube import` of docker-compose files, as spigo's compose2arch converts them."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from simiankube.model.compose import ComposeError, compose_to_spigo, image_name, is_compose, package_of
from simiankube.model.spec import parse_document
from simiankube.model.topology import expand
from tests.core.paths import DATA, SPIGO
from tests.core.test_cli import simiankube

COMPOSE = DATA / "compose"


def imported(name: str) -> dict[str, Any]:
    result = simiankube("import", str(COMPOSE / name))
    assert result.returncode == 0, result.stderr
    resource: dict[str, Any] = yaml.safe_load(result.stdout)
    return resource


def services(resource: dict[str, Any]) -> dict[str, tuple[str, int, int, list[str]]]:
    return {s["name"]: (s["package"], s["count"], s["regions"], s["dependencies"]) for s in resource["spec"]["services"]}


def test_v2_voting_app_as_spigo_converts_it() -> None:
    """spigo's compose/composeV2_arch.json for the same file, service by service."""
    resource = imported("voting-v2.yml")
    assert resource["metadata"]["name"] == "voting-v2" and resource["spec"]["version"] == "arch-0.1"
    assert services(resource) == {
        "voting-app": ("monolith", 3, 1, ["redis"]),
        "www-voting-app": ("denominator", 0, 0, ["voting-app"]),
        "result-app": ("monolith", 3, 1, ["db"]),
        "www-result-app": ("denominator", 0, 0, ["result-app"]),
        "worker": ("monolith", 3, 1, ["db", "redis"]),
        "redis": ("store", 1, 1, []),  # ports: ["6379"] publishes nothing
        "db": ("staash", 1, 1, ["db-data"]),
        "front-tier": ("elb", 0, 1, ["voting-app", "result-app"]),
        "back-tier": ("elb", 0, 1, ["voting-app", "result-app", "worker", "redis", "db"]),
        "db-data": ("store", 0, 1, []),
    }
    containers = {s["name"]: s.get("container") for s in resource["spec"]["services"]}
    assert containers["db"] == "postgres:9.4" and containers["worker"] == "./worker"


def test_v1_services_at_the_top_level() -> None:
    assert services(imported("app-v1.yml")) == {
        "web": ("monolith", 3, 1, ["db"]),  # db:redis → db
        "nginx": ("monolith", 3, 1, ["web"]),
        "www-nginx": ("denominator", 0, 0, ["nginx"]),
        "db": ("staash", 1, 1, []),  # spigo's rule: a service named db is staash; app: is no named volume
    }


def test_v3_depends_on_long_ports_and_images_to_packages() -> None:
    got = services(imported("shop-v3.yml"))
    assert got["frontend"] == ("monolith", 3, 1, ["cart", "catalog"])
    assert got["www-frontend"] == ("denominator", 0, 0, ["frontend"])
    assert got["cart"] == ("monolith", 3, 1, ["sessions", "orders"])
    assert got["orders"][:2] == ("store", 1) and got["sessions"][:2] == ("cache", 1)
    assert got["search"][:2] == ("priamCassandra", 3) and got["images"][:2] == ("store", 1)
    assert got["catalog-data"] == ("store", 0, 1, []) and "www-images" not in got


@pytest.mark.parametrize("name", ["voting-v2.yml", "app-v1.yml", "shop-v3.yml"])
def test_imports_validate_and_expand(name: str) -> None:
    assert expand(parse_document(imported(name))).instances


def test_image_rules() -> None:
    assert image_name("registry:5000/library/postgres:9.4@sha256:ab") == "postgres"
    assert package_of("db", "mysql") == ("staash", 1)
    assert package_of("cache", "memcached") == ("cache", 1)
    assert package_of("api", "nginx") == ("monolith", 3)


def test_what_is_not_compose() -> None:
    assert not is_compose({"arch": "x", "services": []})  # spigo
    assert not is_compose({"kind": "Architecture", "spec": {}})
    assert not is_compose({"web": "nginx"})
    assert is_compose({"services": {}}) and is_compose({"web": {"image": "nginx"}})


@pytest.mark.parametrize(("document", "problem"), [
    ({"services": {"web": {"image": "nginx", "links": ["api"]}}},
     "services.web.links[0]: 'api' is not a service in this file"),
    ({"services": {"web": {"image": "nginx", "depends_on": {"api": {}}}}},
     "services.web.depends_on.api: 'api' is not a service in this file"),
    ({"services": {"web": {"image": "nginx", "networks": ["front"]}}},
     "services.web.networks[0]: network 'front' is not defined under networks"),
    ({"services": {"web": {"environment": {"A": "1"}}}}, "services.web: needs an image or a build to be mapped"),
    ({"services": {"web": {"extends": {"service": "base"}, "image": "x"}}},
     "services.web.extends: cannot be mapped; inline the extended service"),
    ({"services": {"web": "nginx"}}, "services.web: expected a mapping of options, got 'nginx'"),
    ({"services": {"edge": {"image": "nginx"}}, "networks": {"edge": {}}},
     "edge: the name of more than one of service, www- entry point, network and volume"),
    ({"services": {}}, "services: no services defined"),
])
def test_what_cannot_be_mapped_is_named(document: dict[str, Any], problem: str) -> None:
    with pytest.raises(ComposeError) as caught:
        compose_to_spigo(document, "x")
    assert problem in caught.value.problems


def test_cli_error_names_the_file_and_field(tmp_path: Any) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("services:\n  web:\n    image: nginx\n    depends_on: [api]\n")
    result = simiankube("import", str(bad))
    assert result.returncode == 1 and result.stdout == ""
    assert "bad.yml" in result.stderr and "services.web.depends_on[0]: 'api' is not a service" in result.stderr


def test_spigo_files_still_import() -> None:
    result = simiankube("import", str(SPIGO / "lamp_arch.json"))
    assert result.returncode == 0 and "name: lamp" in result.stdout
