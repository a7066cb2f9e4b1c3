"""The Kubernetes side of `verify`: read what is in a namespace, probe through the pod proxy.

The only module of the segmentation feature that talks to an API server.
Probes go `POST /api/v1/namespaces/NS/pods/NAME:8080/proxy/probe`: one
request per source pod, answered by that pod's nanoservice, which opens the
connections from inside the pod (so the probes cross exactly the policies
under test; no `kubectl exec`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client import ApiClient, ApiException

from simiankube import contract
from simiankube.model.spec import Architecture, parse_document
from simiankube.model.topology import expand
from simiankube.render import RenderSettings, render
from simiankube.segmentation.reachability import ContainerPort, Namespace, Pod
from simiankube.segmentation.verify import ProbeResult, ProbeTarget, VerificationReport, parse_probe_response, probe_request, verify

DEFAULT_SETTLE_SECONDS = 5.0  # as cyclonus: policies take effect asynchronously in the dataplane
DEFAULT_TIMEOUT_MS = 1000


@dataclass(frozen=True)
class NamespaceState:
    pods: tuple[Pod, ...]  # the architecture's running pods with an IP
    namespaces: tuple[Namespace, ...]
    policies: tuple[dict[str, Any], ...]  # raw, as the API returns them (camelCase)
    newest_policy: dt.datetime | None


def pod_from_api(pod: Mapping[str, Any]) -> Pod:
    """A Pod of the model from an API pod (camelCase dict)."""
    return Pod(
        namespace=pod["metadata"]["namespace"],
        name=pod["metadata"]["name"],
        labels=dict(pod["metadata"].get("labels") or {}),
        ip=(pod.get("status") or {}).get("podIP") or "",
        ports=tuple(
            ContainerPort(port=p["containerPort"], protocol=p.get("protocol", "TCP"), name=p.get("name", ""))
            for c in pod["spec"].get("containers") or ()
            for p in c.get("ports") or ()
        ),
    )


def probeable(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and bool(status.get("podIP")) and not pod["metadata"].get("deletionTimestamp")


def newest_creation(policies: Sequence[Mapping[str, Any]]) -> dt.datetime | None:
    stamps = [_timestamp(p["metadata"]["creationTimestamp"]) for p in policies if p["metadata"].get("creationTimestamp")]
    return max(stamps, default=None)


def _timestamp(value: str | dt.datetime) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def settle_remaining(newest: dt.datetime | None, now: dt.datetime, settle_seconds: float) -> float:
    """Seconds to wait so that the newest policy has had `settle_seconds` to take effect."""
    if newest is None:
        return 0.0
    return max(0.0, settle_seconds - (now - newest).total_seconds())


async def read_namespace(api: ApiClient, namespace: str, architecture: str) -> NamespaceState:
    core = client.CoreV1Api(api)
    selector = f"{contract.LABEL_ARCHITECTURE}={architecture}"
    pods = await core.list_namespaced_pod(namespace, label_selector=selector)
    policies = await client.NetworkingV1Api(api).list_namespaced_network_policy(namespace)
    try:
        namespaces = [
            Namespace(n.metadata.name, dict(n.metadata.labels or {})) for n in (await core.list_namespace()).items
        ]
    except ApiException as err:
        if err.status != 403:
            raise
        namespaces = [Namespace(namespace)]  # selectors then see only the name label (set by the API server)
    raw_pods = [api.sanitize_for_serialization(p) for p in pods.items]
    raw_policies = tuple(api.sanitize_for_serialization(p) for p in policies.items)
    return NamespaceState(
        pods=tuple(pod_from_api(p) for p in raw_pods if probeable(p)),
        namespaces=tuple(namespaces),
        policies=raw_policies,
        newest_policy=newest_creation(raw_policies),
    )


class PodProxyProber:
    """`probe(source, targets)` through the API server's pod proxy."""

    def __init__(self, api: ApiClient, timeout_ms: int = DEFAULT_TIMEOUT_MS, port: int = contract.HTTP_PORT) -> None:
        self.api = api
        self.timeout_ms = timeout_ms
        self.port = port

    async def __call__(self, source: Pod, targets: Sequence[ProbeTarget]) -> Sequence[ProbeResult]:
        # The nanoservice probes concurrently; give the whole request a few timeouts' worth.
        request_timeout = 3 * self.timeout_ms / 1000 + 10
        path = f"/api/v1/namespaces/{quote(source.namespace)}/pods/{quote(source.name)}:{self.port}/proxy/probe"
        body, _, _ = await self.api.call_api(
            path,
            "POST",
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            body=probe_request(targets, self.timeout_ms),
            auth_settings=["BearerToken"],
            response_types_map={200: "object"},
            _request_timeout=request_timeout,
        )
        return parse_probe_response(body)


async def verify_namespace(
    api: ApiClient,
    namespace: str,
    architecture: str,
    *,
    by_pod: bool = False,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rendered: Sequence[Mapping[str, Any]] | None = None,
) -> VerificationReport:
    """Verify the live namespace: for the operator (`report.status()`) and the CLI.

    ``rendered``: the NetworkPolicies the Architecture renders. Expected
    reachability then comes from them (plus the namespace's other policies),
    not from the live copies, so a policy deleted or edited by hand is found
    (``missing_policies``, and the probes that now pass) instead of trusted.
    """
    state = await read_namespace(api, namespace, architecture)
    wait = settle_remaining(state.newest_policy, dt.datetime.now(dt.timezone.utc), settle_seconds)
    if wait:
        await sleep(wait)
    policies, missing = judged_policies(state.policies, rendered, architecture)
    report = await verify(state.pods, state.namespaces, policies, PodProxyProber(api, timeout_ms), by_pod=by_pod)
    return dataclasses.replace(report, missing_policies=missing,
                               judged_against="present" if rendered is None else "rendered")


def judged_policies(
    live: Sequence[Mapping[str, Any]], rendered: Sequence[Mapping[str, Any]] | None, architecture: str
) -> tuple[list[Mapping[str, Any]], tuple[str, ...]]:
    """The policies to judge against, and the rendered ones missing from ``live``.

    The architecture's live policies are replaced by the rendered ones (an
    edited or deleted copy counts as what it should be); other policies of
    the namespace stay, they act on the same pods. No render: what is live.
    """
    if rendered is None:
        return list(live), ()
    ours = [p for p in live if (p["metadata"].get("labels") or {}).get(contract.LABEL_ARCHITECTURE) == architecture]
    present = {p["metadata"]["name"] for p in ours}
    missing = tuple(sorted(p["metadata"]["name"] for p in rendered if p["metadata"]["name"] not in present))
    return [p for p in live if p not in ours] + list(rendered), missing


def rendered_policies(arch: Architecture, namespace: str) -> list[dict[str, Any]]:
    """The NetworkPolicies an architecture renders into ``namespace``: what verification judges against."""
    return [obj for obj in render(expand(arch), RenderSettings(namespace=namespace)) if obj["kind"] == "NetworkPolicy"]


async def read_architecture(api: ApiClient, namespace: str, name: str) -> Architecture | None:
    """The Architecture resource's model; None when it is not there or not readable (403)."""
    try:
        body = await client.CustomObjectsApi(api).get_namespaced_custom_object(
            contract.API_GROUP, contract.API_VERSION, namespace, contract.PLURAL, name)
    except ApiException as err:
        if err.status in (403, 404):
            return None
        raise
    return parse_document({**body, "metadata": {"name": body["metadata"]["name"]}})


async def api_configuration(kubeconfig: str | None) -> client.Configuration:
    """A kubeconfig file, else the in-cluster config, else the default kubeconfig ($KUBECONFIG, ~/.kube/config)."""
    configuration = client.Configuration()
    if kubeconfig is None:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config(client_configuration=configuration)
    else:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return configuration


async def verify_with_kubeconfig(
    kubeconfig: str | None, namespace: str, architecture: str, arch: Architecture | None = None, **options: Any
) -> VerificationReport:
    """The CLI's entry, with the user's credentials (see `api_configuration`).

    Judged against the policies ``arch`` renders (the file given), else those
    of the Architecture resource, else (not readable) those present.
    """
    async with ApiClient(await api_configuration(kubeconfig)) as api:
        if arch is None:
            arch = await read_architecture(api, namespace, architecture)
        rendered = rendered_policies(arch, namespace) if arch is not None else None
        return await verify_namespace(api, namespace, architecture, rendered=rendered, **options)
