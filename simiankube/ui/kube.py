"""`simiankube ui ARCH -n NS`: the live view of an architecture on a cluster, with the user's credentials.

The only module of the view that talks to an API server. Every `POLL_INTERVAL` it
lists the architecture's pods and reads each ready pod's /metrics through the API
server's pod proxy (`GET .../pods/NAME:8080/proxy/metrics`, as `verify` probes),
so it needs no port-forward and no Prometheus: `get` on pods and pods/proxy in
the namespace, and `get` on the Architecture.

Pods are matched to the topology's instances (StatefulSet pods by name, a
Deployment's pods to free replicas, sticky across polls): when a pod goes away its
replica shows down and a `pod deleted` event goes on the timeline (a `kill` when the
operator's chaos controller names it in `status.chaos.lastKill`); its successor
starts from zero counters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from simiankube import contract
from simiankube.model.spec import parse_document
from simiankube.model.topology import expand
from simiankube.segmentation.kube import api_configuration
from simiankube.ui.server import serve
from simiankube.ui.view import Live, policy_of_edges

POLL_INTERVAL = 2.0  # seconds, as the local runner scrapes
SCRAPE_CONCURRENCY = 16  # pod proxy requests in flight
SCRAPE_TIMEOUT = 5.0  # seconds per /metrics through the API server


@dataclass
class Replicas:
    """The pods of one workload matched to its instances, sticky across polls."""

    instances: tuple[str, ...]  # the topology's instance names of the workload, by ordinal
    pod_of: dict[str, str] = field(default_factory=dict)  # instance -> pod

    def match(self, pods: Iterable[str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Match the live pod names; returns (gone, new) as (instance, pod) pairs."""
        live = set(pods)
        gone = [(i, p) for i, p in self.pod_of.items() if p not in live]
        for instance, _ in gone:
            del self.pod_of[instance]
        taken = set(self.pod_of.values())
        new = []
        for instance in self.instances:  # a StatefulSet pod is named like its instance
            if instance in live and instance not in taken and instance not in self.pod_of:
                self.pod_of[instance] = instance
                taken.add(instance)
                new.append((instance, instance))
        free = [i for i in self.instances if i not in self.pod_of]
        for instance, pod in zip(free, sorted(live - taken)):
            self.pod_of[instance] = pod
            new.append((instance, pod))
        return gone, new


def pod_ready(pod: Mapping[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or ()
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@dataclass
class ClusterView:
    """Feeds a `Live` from one namespace: pods, their /metrics, the Architecture's last verification."""

    api: ApiClient
    namespace: str
    name: str
    live: Live
    replicas: dict[str, Replicas]  # workload -> its replicas
    polls: int = 0
    last_kill: dict[str, Any] | None = None  # status.chaos.lastKill as last seen

    @classmethod
    async def open(cls, api: ApiClient, namespace: str, name: str) -> ClusterView:
        """Read the Architecture once: its spec is the graph (a changed spec needs a new view)."""
        resource = await client.CustomObjectsApi(api).get_namespaced_custom_object(
            contract.API_GROUP, contract.API_VERSION, namespace, contract.PLURAL, name)
        topology = expand(parse_document(resource))
        live = Live(topology, f"namespace {namespace}", policy_of_edges(topology), verification(resource))
        replicas = {p.workload: Replicas(tuple(i.name for i in p.instances)) for p in topology.placements}
        return cls(api, namespace, name, live, replicas)

    async def poll(self) -> None:
        core = client.CoreV1Api(self.api)
        resource = await client.CustomObjectsApi(self.api).get_namespaced_custom_object(
            contract.API_GROUP, contract.API_VERSION, self.namespace, contract.PLURAL, self.name)
        self.live.verification = verification(resource)
        elapsed = round(self.live.clock() - self.live.started, 2)
        kill = chaos_kill(resource)
        if kill is not None and kill != self.last_kill:
            if self.polls:  # the operator's monkey: a kill on the victim, by name
                instance = next((i for r in self.replicas.values() for i, p in r.pod_of.items() if p == kill["pod"]),
                                "")
                self.live.event({"t_s": elapsed, "event": "kill", "instance": instance, "pod": kill["pod"],
                                 "by": "chaos"})
            self.last_kill = kill
        listed = await core.list_namespaced_pod(
            self.namespace, label_selector=f"{contract.LABEL_ARCHITECTURE}={self.name}")
        pods = [self.api.sanitize_for_serialization(p) for p in listed.items]
        by_name = {p["metadata"]["name"]: p for p in pods}
        by_workload: dict[str, list[str]] = {}
        for pod in pods:
            workload = (pod["metadata"].get("labels") or {}).get(contract.LABEL_INSTANCE, "")
            if not pod["metadata"].get("deletionTimestamp"):
                by_workload.setdefault(workload, []).append(pod["metadata"]["name"])
        for workload, replicas in self.replicas.items():
            gone, new = replicas.match(by_workload.get(workload, ()))
            for instance, pod in gone:
                self.live.replaced(instance)
                if pod != (self.last_kill or {}).get("pod"):  # else the kill is on the timeline already
                    self.live.event({"t_s": elapsed, "event": "pod deleted", "instance": instance, "pod": pod})
            for instance, pod in new:
                self.live.replaced(instance)
                if self.polls:
                    self.live.event({"t_s": elapsed, "event": "pod created", "instance": instance, "pod": pod})
        scrapes = [(instance, pod) for r in self.replicas.values() for instance, pod in r.pod_of.items()]
        limit = asyncio.Semaphore(SCRAPE_CONCURRENCY)

        async def scrape(instance: str, pod: str) -> None:
            """Readiness is the pod's; a pod whose /metrics cannot be read shows no traffic."""
            ready = pod_ready(by_name[pod])
            text = None
            if ready:
                async with limit:
                    try:
                        text = await core.connect_get_namespaced_pod_proxy_with_path(
                            f"{pod}:{contract.HTTP_PORT}", self.namespace, contract.PATH_METRICS.lstrip("/"),
                            _request_timeout=SCRAPE_TIMEOUT)
                    except (client.ApiException, asyncio.TimeoutError, OSError):
                        pass
            if isinstance(text, str):
                self.live.scraped(instance, text, time.monotonic())
            self.live.set_ready(instance, ready)

        await asyncio.gather(*(scrape(i, p) for i, p in scrapes))
        for instance in {i for r in self.replicas.values() for i in r.instances} - {i for i, _ in scrapes}:
            self.live.set_ready(instance, False)
        self.polls += 1

    async def follow(self, interval: float = POLL_INTERVAL) -> None:
        """Poll until cancelled; a failed poll (API server restarting) is retried at the next tick."""
        while True:
            try:
                await self.poll()
            except (client.ApiException, asyncio.TimeoutError, OSError):
                pass
            await asyncio.sleep(interval)


def chaos_kill(resource: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Architecture's `status.chaos.lastKill` ({pod, service, time}): the operator's latest kill."""
    found = ((resource.get("status") or {}).get("chaos") or {}).get("lastKill")
    return dict(found) if isinstance(found, Mapping) and found.get("pod") else None


def verification(resource: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Architecture's `status.segmentation`: what the operator's last verify found."""
    found = (resource.get("status") or {}).get("segmentation")
    return dict(found) if isinstance(found, Mapping) else None


async def serve_cluster(kubeconfig: str | None, namespace: str, name: str, listen: tuple[str, int],
                        progress: TextIO) -> None:
    """Open the view of `name` in `namespace` and serve it until cancelled (Ctrl-C)."""
    async with ApiClient(await api_configuration(kubeconfig)) as api:
        view = await ClusterView.open(api, namespace, name)
        await view.poll()
        follower = asyncio.create_task(view.follow())
        try:
            async with serve(view.live, *listen) as url:
                print(f"live view of {name} in namespace {namespace}: {url} (Ctrl-C to stop)", file=progress, flush=True)
                await asyncio.Event().wait()
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
