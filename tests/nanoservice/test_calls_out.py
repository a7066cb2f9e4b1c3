"""`Package.calls_out`: requests of packages that never call another instance get no budget timer,
so it must be True for every package that may call one."""

from __future__ import annotations

import random
from typing import cast

import pytest

from simiankube.contract import Behavior, Dependency, Instance, NanoserviceConfig, Target
from simiankube.nanoservice.client import Caller
from simiankube.nanoservice.packages import PACKAGES, Context, build_package

DEPENDENCY = Dependency("db", "store", (Target("r1", "db-r1", "db-r1-peers"),))
PEERS = (Instance("self-0", "self-0", "zoneA"), Instance("self-1", "self-1", "zoneB"))


def calls_out(package: str, dependencies: tuple[Dependency, ...] = (), peers: tuple[Instance, ...] = ()) -> bool:
    config = NanoserviceConfig("arch", "self", package, "r1", Behavior(), dependencies, None, peers)
    return build_package(Context(config, "self-0", cast(Caller, None), random.Random(1))).calls_out


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_package_with_dependencies_calls_out(package: str) -> None:
    assert calls_out(package, (DEPENDENCY,))


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_a_lone_instance_without_dependencies_calls_nothing(package: str) -> None:
    assert not calls_out(package, peers=PEERS[:1])


@pytest.mark.parametrize("package", ["priamCassandra", "riak"])
def test_rings_call_their_peers(package: str) -> None:
    assert calls_out(package, peers=PEERS)
