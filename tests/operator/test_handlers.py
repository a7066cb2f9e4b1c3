"""What kopf watches for the operator: Architectures only.

kopf filters labels in the client, so a kopf handler on Deployments would
make the operator receive (and hold) every Deployment of the cluster; the
operator's own watches filter on the server instead (tests/operator/test_operator_rig.py
proves unrelated workloads never arrive).
"""

from __future__ import annotations

import kopf

from simiankube import contract
from simiankube.operator import handlers  # noqa: F401  (registers the handlers)

# kopf keeps its resource handlers in these registries (no public listing exists).
REGISTRIES = ("_watching", "_changing", "_indexing", "_spawning")


def test_kopf_watches_nothing_but_architectures() -> None:
    registry = kopf.get_default_registry()
    watched = {(name, handler.selector.group, handler.selector.any_name)
               for name in REGISTRIES for handler in getattr(registry, name).get_all_handlers()}
    assert {(group, plural) for (_, group, plural) in watched} == {(contract.API_GROUP, contract.PLURAL)}
    assert {name for (name, _, _) in watched} >= {"_watching", "_changing", "_spawning"}
