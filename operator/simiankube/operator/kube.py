"""The one module that talks to the Kubernetes API server.

Everything else in the operator is either pure (plans, status, victim
choice) or calls the methods here. Writes are counted through ``on_write`` so
the metrics (and the tests) can prove that a resync with nothing to do writes
nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from simiankube import contract
from simiankube.segmentation.kube import verify_namespace
from simiankube.segmentation.verify import VerificationReport

Object = dict[str, Any]
WriteObserver = Callable[[str, str], None]  # (verb, kind)

# JSON is YAML. With the charset parameter the client sends the bytes it is given (serialized by
# the C encoder) instead of walking every object to sanitize it first; the server drops the parameter.
APPLY_CONTENT_TYPE = "application/apply-patch+yaml; charset=utf-8"
MERGE_CONTENT_TYPE = "application/merge-patch+json"
# Metadata-only lists: the prune plan needs names, uids, owners and one annotation,
# not 1,000 ConfigMaps of nanoservice configuration.
METADATA_ACCEPT = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
# An apply's answer is not read: the server need only encode the object's metadata.
APPLY_ACCEPT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def root(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def collection(self, namespace: str | None) -> str:
        """The objects of one namespace, or of every namespace (``None``)."""
        return f"{self.root}/{self.plural}" if namespace is None else self.path(namespace)

    def path(self, namespace: str, name: str = "", subresource: str = "") -> str:
        path = f"{self.root}/namespaces/{namespace}/{self.plural}"
        if name:
            path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
        return path


RESOURCES: Mapping[str, Resource] = {
    "ConfigMap": Resource("", "v1", "configmaps"),
    "Service": Resource("", "v1", "services"),
    "Pod": Resource("", "v1", "pods"),
    "Deployment": Resource("apps", "v1", "deployments"),
    "StatefulSet": Resource("apps", "v1", "statefulsets"),
    "ReplicaSet": Resource("apps", "v1", "replicasets"),
    "NetworkPolicy": Resource("networking.k8s.io", "v1", "networkpolicies"),
    "Lease": Resource("coordination.k8s.io", "v1", "leases"),
    contract.KIND: Resource(contract.API_GROUP, contract.API_VERSION, contract.PLURAL),
}
# Every kind the render step can produce, in apply order (see simiankube.render.KIND_ORDER).
CHILD_KINDS = ("NetworkPolicy", "ConfigMap", "Service", "StatefulSet", "Deployment")
WATCH_SECONDS = 300  # one watch request; the next continues from the last resourceVersion seen


@dataclass(frozen=True)
class Payload:
    """One object to apply, already serialized: the event loop holds bytes while it applies
    thousands of objects, not the millions of small dicts the cyclic collector would walk."""

    kind: str
    namespace: str
    name: str
    body: bytes

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Payload:
        meta = obj["metadata"]
        return cls(obj["kind"], meta["namespace"], meta["name"], json.dumps(obj, separators=(",", ":")).encode())

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


class KubeError(Exception):
    """An API call failed; ``status`` is the HTTP status (0 when none came back)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status

    @property
    def retryable(self) -> bool:
        """Conflicts, throttling, server trouble and lost connections pass; bad requests do not."""
        return self.status in (0, 409, 429) or self.status >= 500


@dataclass(frozen=True)
class LiveObject:
    """What the plan needs to know about an existing object of a child kind."""

    kind: str
    name: str
    uid: str
    annotations: Mapping[str, str]
    owner_uids: tuple[str, ...]
    controller: str = ""  # the controlling owner, e.g. 'Architecture "shop"'; "" when none
    controller_uid: str = ""
    body: Mapping[str, Any] | None = None  # the whole object; None when only its metadata was listed

    @classmethod
    def from_item(cls, kind: str, item: Mapping[str, Any], *, whole: bool) -> LiveObject:
        meta = item["metadata"]
        refs = meta.get("ownerReferences") or []
        controller = next((ref for ref in refs if ref.get("controller")), None)
        return cls(
            kind=kind,
            name=meta["name"],
            uid=meta["uid"],
            annotations=meta.get("annotations") or {},
            owner_uids=tuple(ref["uid"] for ref in refs),
            controller=f"{controller['kind']} {json.dumps(controller['name'])}" if controller else "",
            controller_uid=str(controller["uid"]) if controller else "",
            body=item if whole else None,
        )


class Kube:
    """A thin asynchronous client: SSA apply, metadata lists, precondition deletes."""

    def __init__(self, api: client.ApiClient, field_manager: str, on_write: WriteObserver) -> None:
        self._api = api
        self.field_manager = field_manager
        self._on_write = on_write

    @classmethod
    async def connect(cls, field_manager: str, on_write: WriteObserver) -> Kube:
        """In-cluster credentials when running in a pod, else the current kubeconfig."""
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except ConfigException:
            await config.load_kube_config()
        return cls(client.ApiClient(), field_manager, on_write)

    async def close(self) -> None:
        await self._api.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, Any]] = (),
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        parse: bool = True,
    ) -> Any:
        """One API call; its answer parsed, or None when not ``parse`` (an apply's echo is not needed)."""
        try:
            return await self._api.call_api(
                path,
                method,
                query_params=list(query),
                header_params={"Content-Type": content_type, "Accept": accept},
                body=body,
                response_types_map={200: "object", 201: "object", 202: "object"} if parse else {},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
            )
        except ApiException as err:
            raise KubeError(int(err.status or 0), _reason(err)) from None
        except OSError as err:  # aiohttp's connection errors are OSErrors
            raise KubeError(0, str(err)) from None

    # -- reads ---------------------------------------------------------------------

    async def get(self, kind: str, namespace: str, name: str) -> Object | None:
        try:
            result: Object = await self._call("GET", RESOURCES[kind].path(namespace, name))
        except KubeError as err:
            if err.status == 404:
                return None
            raise
        return result

    async def serves(self, kind: str) -> bool:
        """Whether the API server serves this kind now (discovery, which every authenticated user may read)."""
        resource = RESOURCES[kind]
        try:
            result = await self._call("GET", resource.root)
        except KubeError as err:
            if err.status == 404:
                return False
            raise
        return any(item.get("name") == resource.plural for item in result.get("resources") or [])

    async def list_objects(self, kind: str, namespace: str, selector: str) -> list[Object]:
        result = await self._call("GET", RESOURCES[kind].path(namespace), query=[("labelSelector", selector)])
        return list(result.get("items") or [])

    async def list_children(self, namespace: str, selector: str, kinds: Sequence[str] = CHILD_KINDS,
                            *, whole: bool = True) -> list[LiveObject]:
        """Every object of these kinds that matches the selector ("" = all): whole, or metadata only.

        Whole objects let the plan see hand edits; metadata is enough to find
        who else holds a name.
        """
        query = [("labelSelector", selector)] if selector else []
        accept = "application/json" if whole else METADATA_ACCEPT
        # One list per kind, all at once: the API server encodes them in parallel.
        results = await asyncio.gather(*(self._call("GET", RESOURCES[kind].path(namespace), query=query, accept=accept)
                                         for kind in kinds))
        children: list[LiveObject] = []
        for kind, result in zip(kinds, results):
            # A list's items carry neither kind nor apiVersion: put them back, the plan compares whole objects.
            typed = {"apiVersion": RESOURCES[kind].api_version, "kind": kind}
            children.extend(LiveObject.from_item(kind, {**typed, **item}, whole=whole)
                            for item in result.get("items") or [])
        return children

    async def watch(self, kind: str, namespace: str | None, selector: str,
                    on_list: Callable[[list[Object]], None] | None = None) -> AsyncIterator[tuple[str, Object]]:
        """Events (type, object) of one kind matching the selector, filtered by the server, from now on.

        ``on_list`` gets every matching object first (a list, whole objects),
        for a caller that keeps them; without it only the list's version is read.
        Runs until cancelled; a watch that ends is resumed from the last
        resourceVersion seen (bookmarks keep it fresh). Raises KubeError when
        the server refuses or that version expired (410): the caller starts again.
        """
        path = RESOURCES[kind].collection(namespace)
        if on_list is None:
            listed = await self._call("GET", path, query=[("labelSelector", selector), ("limit", 1)],
                                      accept=METADATA_ACCEPT)
        else:
            listed = await self._call("GET", path, query=[("labelSelector", selector)])
            typed = {"apiVersion": RESOURCES[kind].api_version, "kind": kind}  # list items carry neither
            on_list([{**typed, **item} for item in listed.get("items") or []])
        version = str(listed["metadata"]["resourceVersion"])
        while True:
            query = [("watch", "true"), ("labelSelector", selector), ("resourceVersion", version),
                     ("allowWatchBookmarks", "true"), ("timeoutSeconds", WATCH_SECONDS)]
            try:
                response = await self._api.call_api(
                    path, "GET", query_params=query, header_params={"Accept": "application/json"},
                    auth_settings=["BearerToken"], _preload_content=False, _request_timeout=WATCH_SECONDS + 30)
                async with response:
                    if response.status != 200:
                        text = await response.text()
                        try:
                            message = str(json.loads(text)["message"])
                        except (ValueError, KeyError, TypeError):
                            message = text or str(response.reason)
                        raise KubeError(response.status, message)
                    async for event in _json_lines(response.content):
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            raise KubeError(int(obj.get("code") or 0), str(obj.get("message", "watch error")))
                        version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                        if event.get("type") != "BOOKMARK":
                            yield str(event.get("type")), obj
            except ApiException as err:
                raise KubeError(int(err.status or 0), _reason(err)) from None
            except (OSError, TimeoutError) as err:
                raise KubeError(0, str(err) or type(err).__name__) from None

    async def verify_segmentation(self, namespace: str, architecture: str,
                                  settle: Callable[[float], Awaitable[None]],
                                  rendered: Sequence[Mapping[str, Any]]) -> VerificationReport:
        """Verify the namespace's segmentation live (`simiankube.segmentation.kube`): reads and pod-proxy probes.

        ``architecture`` is the resource name (the pods' architecture label);
        ``settle`` waits until the newest NetworkPolicy may have taken effect;
        ``rendered``, the Architecture's policies, is what the result is judged against.
        """
        try:
            return await verify_namespace(self._api, namespace, architecture, sleep=settle, rendered=rendered)
        except ApiException as err:
            raise KubeError(int(err.status or 0), _reason(err)) from None
        except OSError as err:
            raise KubeError(0, str(err)) from None

    # -- writes --------------------------------------------------------------------

    async def apply(self, payload: Payload) -> None:
        """Server-side apply with this operator's one field manager, taking over conflicts."""
        path = RESOURCES[payload.kind].path(payload.namespace, payload.name)
        query = [("fieldManager", self.field_manager), ("force", "true")]
        await self._call("PATCH", path, query=query, body=payload.body, content_type=APPLY_CONTENT_TYPE,
                         accept=APPLY_ACCEPT, parse=False)
        self._on_write("apply", payload.kind)

    async def delete(self, kind: str, namespace: str, name: str, uid: str, grace_seconds: int | None = None) -> bool:
        """Delete exactly the object with this uid; False when it is already gone or replaced."""
        body: Object = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid},
                        "propagationPolicy": "Background"}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            await self._call("DELETE", RESOURCES[kind].path(namespace, name), body=body)
        except KubeError as err:
            if err.status in (404, 409):
                return False
            raise
        self._on_write("delete", kind)
        return True

    async def evict(self, namespace: str, name: str, uid: str, grace_seconds: int) -> str:
        """Evict exactly this pod: "evicted", "gone" (404/409: not there, or replaced), or "blocked: <why>"
        when a PodDisruptionBudget forbids it now (429) — what `kubectl drain` respects."""
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace},
                "deleteOptions": {"preconditions": {"uid": uid}, "gracePeriodSeconds": grace_seconds}}
        try:
            await self._call("POST", RESOURCES["Pod"].path(namespace, name, "eviction"), body=body)
        except KubeError as err:
            if err.status in (404, 409):
                return "gone"
            if err.status == 429:
                return f"blocked: {err}"
            raise
        self._on_write("evict", "Pod")
        return "evicted"

    async def get_lease(self, namespace: str, name: str) -> Object | None:
        return await self.get("Lease", namespace, name)

    async def write_lease(self, lease: Object) -> None:
        """Create the Lease, or replace it at the resourceVersion read (409 when someone wrote since)."""
        meta = lease["metadata"]
        if meta.get("resourceVersion"):
            await self._call("PUT", RESOURCES["Lease"].path(meta["namespace"], meta["name"]), body=lease)
        else:
            await self._call("POST", RESOURCES["Lease"].path(meta["namespace"]), body=lease)

    async def remove_finalizer(self, kind: str, namespace: str, name: str, finalizer: str) -> bool:
        """Drop one finalizer (at the resourceVersion read: a concurrent change makes it 409); False if absent."""
        obj = await self.get(kind, namespace, name)
        finalizers = list((obj or {}).get("metadata", {}).get("finalizers") or [])
        if obj is None or finalizer not in finalizers:
            return False
        rest = [f for f in finalizers if f != finalizer]
        patch = {"metadata": {"finalizers": rest or None, "resourceVersion": obj["metadata"]["resourceVersion"]}}
        await self._call("PATCH", RESOURCES[kind].path(namespace, name), body=patch, content_type=MERGE_CONTENT_TYPE)
        self._on_write("patch", kind)
        return True

    async def patch_status(self, namespace: str, name: str, patch: Object) -> None:
        """A JSON merge patch of an Architecture's status subresource."""
        path = RESOURCES[contract.KIND].path(namespace, name, "status")
        await self._call("PATCH", path, body={"status": patch}, content_type=MERGE_CONTENT_TYPE)
        self._on_write("patch", f"{contract.KIND}/status")


async def _json_lines(stream: Any) -> AsyncIterator[dict[str, Any]]:
    """One JSON document per line, however long (a ConfigMap can exceed aiohttp's line limit)."""
    buffer = b""
    async for chunk in stream.iter_any():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)


def _reason(err: ApiException) -> str:
    try:
        return str(json.loads(err.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return str(err.reason or err.body or "no response")
