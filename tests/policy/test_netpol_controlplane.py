"""The rendered NetworkPolicies of netflixoss, accepted and read back by a real kube-apiserver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client, config

from simiankube.segmentation.kube import read_namespace
from simiankube.segmentation.reachability import Model
from simiankube.render import RenderSettings, render
from simiankube.model.spec import load_file
from simiankube.model.topology import expand

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "segmentation-test"


def rendered_policies() -> list[dict[str, Any]]:
    arch = load_file(ROOT / "architectures" / "spigo" / "netflixoss_arch.json")
    objects = render(expand(arch), RenderSettings(namespace=NAMESPACE))
    return [o for o in objects if o["kind"] == "NetworkPolicy"]


async def test_server_side_apply_accepts_and_returns_the_policies(control_plane: Any) -> None:
    policies = rendered_policies()
    control_plane.kubectl("create", "namespace", NAMESPACE)
    control_plane.kubectl("apply", "--server-side", "--field-manager=simiankube-test", "-f", "-",
                          input=yaml.safe_dump_all(policies, sort_keys=False))
    listed = json.loads(control_plane.kubectl("get", "networkpolicies", "-n", NAMESPACE, "-o", "json").stdout)
    stored = {item["metadata"]["name"]: item for item in listed["items"]}
    assert set(stored) == {p["metadata"]["name"] for p in policies}
    for policy in policies:
        assert stored[policy["metadata"]["name"]]["spec"] == policy["spec"]

    # What verify reads from the API judges the same as what was rendered.
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(control_plane.kubeconfig), client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        state = await read_namespace(api, NAMESPACE, "netflixoss")
    assert len(state.policies) == len(policies)
    assert state.newest_policy is not None
    assert NAMESPACE in {n.name for n in state.namespaces}
    assert len(Model([], state.namespaces, state.policies).policies) == len(policies)
