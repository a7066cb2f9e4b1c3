"""The operator on the real control plane, with the chart's ServiceAccount and RBAC.

One operator subprocess serves the module, watching two namespaces that
enforce Pod Security "restricted"; it authenticates with a token of the
chart's ServiceAccount, so every test also proves the RBAC is enough. Every
test removes its Architectures and waits for garbage collection, so the next
one starts from an empty namespace. Waits poll conditions, never sleep.
"""

from __future__ import annotations

import copy
import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from simiankube import contract
from simiankube.operator.reconcile import ANNOTATION_APPLIED_HASH
from simiankube.testing.operator import OperatorProcess, install_crd, install_operator_identity
from simiankube.render import RenderSettings, render
from simiankube.cli import main
from simiankube.model.spec import parse_document
from simiankube.testing.controlplane import ControlPlane, RigError
from simiankube.testing.wait import wait_for
from simiankube.model.topology import expand

REPO = Path(__file__).resolve().parents[2]
SYSTEM = "sk-operator-system"
WATCHED = ("sk-arch-a", "sk-arch-b")
OUTSIDE = "sk-outside"
IMAGE = "simiankube/nanoservice:test"
WORKLOAD_KINDS = ("deployments", "statefulsets")
CHILD_RESOURCES = ("networkpolicies", "configmaps", "services", "statefulsets", "deployments")
KIND_OF = {"networkpolicies": "NetworkPolicy", "configmaps": "ConfigMap", "services": "Service",
           "statefulsets": "StatefulSet", "deployments": "Deployment"}
READY_TIMEOUT = 240.0
CHAOS_ON = ["--chaos=on"]  # the operator's default is dry-run; these tests kill

Body = dict[str, Any]


@pytest.fixture(scope="module")
def operator(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    install_crd(control_plane)
    for namespace in (SYSTEM, *WATCHED, OUTSIDE):
        control_plane.kubectl("create", "namespace", namespace)
    for namespace in WATCHED:
        control_plane.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    workdir = tmp_path_factory.mktemp("operator")
    kubeconfig = install_operator_identity(control_plane, SYSTEM, WATCHED, workdir)
    process = OperatorProcess(kubeconfig, WATCHED, workdir / "operator.log", image=IMAGE, extra_args=CHAOS_ON)
    process.start()
    try:
        yield process
    finally:
        process.stop()
        print(f"\n--- operator log (tail) ---\n{process.log_tail(40)}")


class Cluster:
    """kubectl as the test's admin, with helpers for Architectures and their children."""

    def __init__(self, cp: ControlPlane, operator: OperatorProcess) -> None:
        self.cp = cp
        self.operator = operator
        self.created: list[tuple[str, str]] = []

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.cp.kubectl(*args, input=input, check=check, timeout=120).stdout

    def get(self, namespace: str, *args: str) -> Any:
        return json.loads(self.kubectl("-n", namespace, "get", *args, "-o", "json"))

    def apply(self, namespace: str, body: Body) -> None:
        self.kubectl("-n", namespace, "apply", "--server-side", "--force-conflicts", "-f", "-",
                     input=json.dumps(body))
        if (namespace, body["metadata"]["name"]) not in self.created:
            self.created.append((namespace, body["metadata"]["name"]))

    def architecture(self, namespace: str, name: str) -> Body:
        return dict(self.get(namespace, "architecture", name))

    def wait_ready(self, namespace: str, name: str, timeout: float = READY_TIMEOUT) -> Body:
        """Ready=True for the current generation."""

        def ready() -> Body | None:
            arch = self.architecture(namespace, name)
            status = arch.get("status") or {}
            condition: Body = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
            current = status.get("observedGeneration") == arch["metadata"]["generation"]
            return arch if current and condition.get("status") == "True" else None

        try:
            return wait_for(ready, timeout, interval=0.5, message=f"{namespace}/{name} Ready")
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.operator.log_tail()}") from None

    def children(self, namespace: str, resource_name: str) -> list[Body]:
        selector = f"{contract.LABEL_ARCHITECTURE}={resource_name}"
        items = self.get(namespace, ",".join(CHILD_RESOURCES), "-l", selector)["items"]
        return list(items)

    def child_keys(self, namespace: str, resource_name: str) -> set[tuple[str, str]]:
        return {(o["kind"], o["metadata"]["name"]) for o in self.children(namespace, resource_name)}

    def events(self, namespace: str, name: str) -> list[Body]:
        selector = f"involvedObject.kind=Architecture,involvedObject.name={name}"
        return list(self.get(namespace, "events", "--field-selector", selector)["items"])

    def wait_event(self, namespace: str, name: str, reason: str) -> Body:
        return wait_for(lambda: next((e for e in self.events(namespace, name) if e["reason"] == reason), None),
                        60, interval=0.5, message=f"a {reason} Event on {name}")

    def delete_all(self) -> None:
        """Delete what the test created and wait for garbage collection of every child."""
        for namespace, name in self.created:
            self.kubectl("-n", namespace, "delete", "architecture", name, "--wait=true", "--timeout=120s",
                         check=False)
        for namespace, name in self.created:
            wait_for(lambda: not self.children(namespace, name) and not self.pods(namespace, name), 180,
                     interval=0.5, message=f"garbage collection of {namespace}/{name}")

    def pods(self, namespace: str, resource_name: str, extra: str = "") -> list[Body]:
        selector = f"{contract.LABEL_ARCHITECTURE}={resource_name}" + (f",{extra}" if extra else "")
        return list(self.get(namespace, "pods", "-l", selector)["items"])


@pytest.fixture
def cluster(control_plane: ControlPlane, operator: OperatorProcess) -> Iterator[Cluster]:
    helper = Cluster(control_plane, operator)
    try:
        yield helper
    finally:
        helper.delete_all()


def example(path: str, *, scale: int | None = None, edit: Callable[[Body], None] | None = None) -> Body:
    body: Body = yaml.safe_load((REPO / "architectures" / path).read_text())
    if scale is not None:
        body["spec"]["scale"] = {"percent": scale}
    if edit:
        edit(body)
    return body


def expected_objects(body: Body, namespace: str) -> list[Body]:
    return render(expand(parse_document(body)), RenderSettings(namespace=namespace, image=IMAGE))


def pod_ready(pod: Body) -> bool:
    status = pod.get("status") or {}
    return "deletionTimestamp" not in pod["metadata"] and status.get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])


def assert_matches_render(cluster: Cluster, namespace: str, body: Body) -> None:
    """Exactly the rendered objects, owned by the Architecture, labelled, with ready pods."""
    arch = cluster.architecture(namespace, body["metadata"]["name"])
    uid = arch["metadata"]["uid"]
    expected = expected_objects(body, namespace)
    resource_name = parse_document(body).resource_name
    live = {(o["kind"], o["metadata"]["name"]): o for o in cluster.children(namespace, resource_name)}
    assert set(live) == {(o["kind"], o["metadata"]["name"]) for o in expected}
    for obj in expected:
        have = live[(obj["kind"], obj["metadata"]["name"])]
        refs = have["metadata"]["ownerReferences"]
        assert [(r["uid"], r["controller"], r["blockOwnerDeletion"]) for r in refs] == [(uid, True, True)]
        assert obj["metadata"]["labels"].items() <= have["metadata"]["labels"].items()
        assert ANNOTATION_APPLIED_HASH in have["metadata"]["annotations"]
        if obj["kind"] in ("Deployment", "StatefulSet"):
            selector = ",".join(f"{k}={v}" for k, v in obj["spec"]["selector"]["matchLabels"].items())
            pods = [p for p in cluster.pods(namespace, resource_name, selector) if pod_ready(p)]
            assert len(pods) == obj["spec"]["replicas"], obj["metadata"]["name"]
            assert have["spec"]["replicas"] == obj["spec"]["replicas"]
    replicas = sum(o["spec"]["replicas"] for o in expected if o["kind"] in ("Deployment", "StatefulSet"))

    def status_settled() -> bool:
        # Status follows the workloads' own status, at most once a second: during a scale-down a
        # ReplicaSet can still count a terminating pod ready, so wait for it to settle.
        status = cluster.architecture(namespace, body["metadata"]["name"])["status"]
        return bool(status["instances"] == status["readyInstances"] == replicas
                    and status["notReadyServices"] == 0 and status["notReady"] == {})

    wait_for(status_settled, 30, interval=0.5, message="status counts equal the render")


# -- RBAC ------------------------------------------------------------------------------


@pytest.mark.parametrize(("verb", "resource", "namespace", "allowed"), [
    ("create", "pods/eviction", WATCHED[0], True),  # chaos evicts, so PodDisruptionBudgets hold
    ("delete", "pods", WATCHED[0], False),
    ("patch", "architectures.simiankube.io", WATCHED[1], True),
    ("patch", "deployments.apps", WATCHED[0], True),
    ("create", "events", WATCHED[0], True),
    ("delete", "pods", OUTSIDE, False),
    ("patch", "configmaps", OUTSIDE, False),
    ("list", "architectures.simiankube.io", OUTSIDE, False),
    ("get", "secrets", WATCHED[0], False),
    ("list", "secrets", WATCHED[0], False),
    ("create", "pods", WATCHED[0], False),
    ("delete", "architectures.simiankube.io", WATCHED[0], False),
    ("update", "deployments.apps", WATCHED[0], False),
    ("delete", "nodes", "", False),
    ("list", "namespaces", "", False),  # cluster-scoped: only the ClusterRole of the cluster-wide mode has it
])
def test_rbac_grants_what_the_operator_needs_and_nothing_more(
    control_plane: ControlPlane, operator: OperatorProcess, verb: str, resource: str, namespace: str, allowed: bool
) -> None:
    scope = ["-n", namespace] if namespace else []
    resource, _, subresource = resource.partition("/")
    scope += [f"--subresource={subresource}"] if subresource else []
    result = control_plane.kubectl("auth", "can-i", verb, resource, *scope, check=False,
                                   kubeconfig=operator.kubeconfig)
    assert result.stdout.strip() == ("yes" if allowed else "no"), (verb, resource, namespace, result.stderr)


# -- examples, update, prune, delete ----------------------------------------------------------


def test_every_example_architecture_reaches_ready(cluster: Cluster) -> None:
    """All examples at once (small scales; netflixoss whole), in restricted namespaces."""
    examples = [("lamp.yaml", 20), ("riak.yaml", 10), ("netflixoss.yaml", None)] + [
        (f"migration/step{i}.yaml", 5) for i in range(10)]
    bodies = []
    for i, (path, scale) in enumerate(examples):
        body = example(path, scale=scale)
        namespace = WATCHED[i % 2]
        cluster.apply(namespace, body)
        bodies.append((namespace, body))
    for namespace, body in bodies:
        cluster.wait_ready(namespace, body["metadata"]["name"])
    for namespace, body in bodies:
        assert_matches_render(cluster, namespace, body)
    namespace, lamp = bodies[0]
    assert cluster.wait_event(namespace, "lamp", "Applied")["type"] == "Normal"


def test_update_converges_prunes_and_delete_collects(cluster: Cluster) -> None:
    namespace = WATCHED[0]
    body = example("lamp.yaml", scale=20)
    cluster.apply(namespace, body)
    cluster.wait_ready(namespace, "lamp")

    def edit(spec_body: Body) -> None:
        services = [s for s in spec_body["spec"]["services"] if s["name"] != "memcache"]
        for service in services:
            service["dependencies"] = [d for d in service["dependencies"] if d != "memcache"]
            if service["name"] == "webserver":
                service["count"] = 30  # 6 at 20%
        spec_body["spec"]["services"] = services

    changed = copy.deepcopy(body)
    edit(changed)
    cluster.apply(namespace, changed)
    arch = cluster.wait_ready(namespace, "lamp")
    assert arch["metadata"]["generation"] == 2
    assert_matches_render(cluster, namespace, changed)
    assert not [key for key in cluster.child_keys(namespace, "lamp") if "memcache" in key[1]]
    assert cluster.wait_event(namespace, "lamp", "Pruned")

    # A workload deleted by hand comes back (a new object), and the architecture is Ready again.
    workload = "lamp-webserver-us-east-1"
    old_uid = cluster.get(namespace, "deployment", workload)["metadata"]["uid"]
    cluster.kubectl("-n", namespace, "delete", "deployment", workload, "--wait=true")

    def recreated() -> bool:
        items = cluster.get(namespace, "deployments", "--field-selector", f"metadata.name={workload}")["items"]
        return bool(items) and items[0]["metadata"]["uid"] != old_uid

    wait_for(recreated, 60, interval=0.5, message="the deleted Deployment re-created")
    cluster.wait_ready(namespace, "lamp")
    assert_matches_render(cluster, namespace, changed)

    cluster.kubectl("-n", namespace, "delete", "architecture", "lamp", "--wait=true", "--timeout=60s")
    wait_for(lambda: not cluster.children(namespace, "lamp") and not cluster.pods(namespace, "lamp"), 120,
             interval=0.5, message="garbage collection of lamp's children")


def test_hand_edits_and_deleted_children_are_repaired_within_30_s(cluster: Cluster) -> None:
    """kubectl scale, an image change, a deleted NetworkPolicy and Service: all restored, with an Event."""
    namespace = WATCHED[0]
    body = example("lamp.yaml", scale=20)
    cluster.apply(namespace, body)
    cluster.wait_ready(namespace, "lamp")
    rendered = {(o["kind"], o["metadata"]["name"]): o for o in expected_objects(body, namespace)}
    workload = "lamp-webserver-us-east-1"
    replicas = rendered[("Deployment", workload)]["spec"]["replicas"]
    old_uids = {kind: cluster.get(namespace, kind, name)["metadata"]["uid"]
                for kind, name in (("networkpolicy", "lamp-webserver"), ("service", workload))}
    cluster.kubectl("-n", namespace, "scale", "deployment", workload, f"--replicas={replicas + 3}")
    cluster.kubectl("-n", namespace, "set", "image", f"deployment/{workload}", "nanoservice=example.com/evil:1")
    cluster.kubectl("-n", namespace, "delete", "networkpolicy", "lamp-webserver", "--wait=true")
    cluster.kubectl("-n", namespace, "delete", "service", workload, "--wait=true")

    def restored() -> bool:
        live = {(o["kind"], o["metadata"]["name"]): o for o in cluster.children(namespace, "lamp")}
        deployment = live[("Deployment", workload)]
        return (deployment["spec"]["replicas"] == replicas
                and deployment["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
                and ("NetworkPolicy", "lamp-webserver") in live and ("Service", workload) in live)

    wait_for(restored, 30, interval=0.5, message="the hand edits undone")
    assert cluster.get(namespace, "networkpolicy", "lamp-webserver")["metadata"]["uid"] != old_uids["networkpolicy"]
    assert cluster.get(namespace, "service", workload)["metadata"]["uid"] != old_uids["service"]
    event = cluster.wait_event(namespace, "lamp", "Repaired")
    assert event["type"] == "Normal" and f"Deployment/{workload}" in event["message"]
    cluster.wait_ready(namespace, "lamp")
    assert_matches_render(cluster, namespace, body)


def small(name: str, service: str) -> Body:
    return {"apiVersion": "simiankube.io/v1alpha1", "kind": "Architecture", "metadata": {"name": name},
            "spec": {"arch": name, "services": [{"name": service, "package": "karyon", "count": 1}]}}


def wait_not_reconciled(cluster: Cluster, namespace: str, name: str, reason: str) -> Body:
    def failed() -> Body | None:
        status = cluster.architecture(namespace, name).get("status") or {}
        condition: Body = next((c for c in status.get("conditions") or [] if c["type"] == "Reconciled"), {})
        return condition if condition.get("status") == "False" and condition.get("reason") == reason else None

    return wait_for(failed, 60, interval=0.5, message=f"Reconciled=False ({reason}) on {name}")


def test_a_name_another_owner_holds_is_left_untouched(cluster: Cluster) -> None:
    """shop/cart-api and shop-cart/api render the same names: the newcomer is refused, as AlreadyOwned."""
    namespace = WATCHED[1]
    cluster.apply(namespace, small("shop", "cart-api"))
    cluster.wait_ready(namespace, "shop")
    before = cluster.get(namespace, "deployment", "shop-cart-api")
    cluster.apply(namespace, small("shop-cart", "api"))
    condition = wait_not_reconciled(cluster, namespace, "shop-cart", "AlreadyOwned")
    assert 'Deployment "shop-cart-api" already exists, controlled by Architecture "shop"' in condition["message"]
    event = cluster.wait_event(namespace, "shop-cart", "AlreadyOwned")
    assert event["type"] == "Warning" and 'Architecture "shop"' in event["message"]
    after = cluster.get(namespace, "deployment", "shop-cart-api")
    assert after["metadata"]["ownerReferences"] == before["metadata"]["ownerReferences"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert not cluster.children(namespace, "shop-cart"), "nothing partly applied"
    ready = next(c for c in cluster.architecture(namespace, "shop-cart")["status"]["conditions"]
                 if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "AlreadyOwned")

    # An object nobody owns is not taken over either; once it is gone, the retry succeeds.
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "lonely-web"}, "data": {"mine": "yes"}}
    cluster.kubectl("-n", namespace, "create", "-f", "-", input=json.dumps(config))
    try:
        cluster.apply(namespace, small("lonely", "web"))
        condition = wait_not_reconciled(cluster, namespace, "lonely", "AlreadyOwned")
        assert 'ConfigMap "lonely-web" already exists, not controlled by any owner' in condition["message"]
        assert cluster.get(namespace, "configmap", "lonely-web")["data"] == {"mine": "yes"}
    finally:
        cluster.kubectl("-n", namespace, "delete", "configmap", "lonely-web")
    cluster.wait_ready(namespace, "lonely")


def test_invalid_spec_is_reported_and_changes_nothing(cluster: Cluster) -> None:
    namespace = WATCHED[1]
    body = example("lamp.yaml", scale=20)
    cluster.apply(namespace, body)
    cluster.wait_ready(namespace, "lamp")

    def snapshot() -> dict[tuple[str, str], tuple[str, int, str]]:
        return {(o["kind"], o["metadata"]["name"]): (o["metadata"]["uid"], o["metadata"].get("generation", 0),
                                                     o["metadata"]["annotations"][ANNOTATION_APPLIED_HASH])
                for o in cluster.children(namespace, "lamp")}

    before = snapshot()
    broken = copy.deepcopy(body)
    broken["spec"]["services"][2]["dependencies"].append("nowhere")
    broken["spec"]["victim"] = "nobody"
    cluster.apply(namespace, broken)

    def invalid() -> Body | None:
        status = cluster.architecture(namespace, "lamp").get("status") or {}
        condition: Body = next((c for c in status.get("conditions") or [] if c["type"] == "Invalid"), {})
        return condition if status.get("observedGeneration") == 2 and condition.get("status") == "True" else None

    condition = wait_for(invalid, 60, interval=0.5, message="Invalid=True")
    assert "nowhere" in condition["message"] and "nobody" in condition["message"]
    event = cluster.wait_event(namespace, "lamp", "InvalidSpec")
    assert event["type"] == "Warning" and "nowhere" in event["message"]
    assert snapshot() == before
    assert all(pod_ready(p) for p in cluster.pods(namespace, "lamp"))

    cluster.apply(namespace, body)  # fixed again: valid, nothing to apply
    cluster.wait_ready(namespace, "lamp")
    status = cluster.architecture(namespace, "lamp")["status"]
    assert next(c for c in status["conditions"] if c["type"] == "Invalid")["status"] == "False"
    assert snapshot() == before


@pytest.mark.parametrize(("edit", "complaint"), [
    (lambda b: b["spec"]["services"][0].update(count="three"), "count"),
    (lambda b: b["spec"].pop("services"), "services"),
    (lambda b: b["spec"]["services"][0].update(count=-1), "count"),
])
def test_schema_violations_are_rejected_at_apply(
    cluster: Cluster, edit: Callable[[Body], None], complaint: str
) -> None:
    body = example("lamp.yaml", edit=edit)
    with pytest.raises(RigError) as rejected:
        cluster.kubectl("-n", WATCHED[0], "apply", "-f", "-", input=json.dumps(body))
    assert complaint in str(rejected.value)
    assert cluster.kubectl("-n", WATCHED[0], "get", "architectures", "-o", "name").strip() == ""


# -- server-side filtering ------------------------------------------------------------------


def deployment(name: str, labels: dict[str, str], replicas: int = 0) -> Body:
    selector = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": {**selector, **labels}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": selector},
                     "template": {"metadata": {"labels": selector},
                                  "spec": {"containers": [{"name": "c", "image": IMAGE}]}}}}


def test_unrelated_workloads_never_reach_the_operator(cluster: Cluster, operator: OperatorProcess) -> None:
    """Its workload watches carry a label selector the API server applies: others' Deployments are not sent."""
    namespace = WATCHED[0]
    events = "simiankube_operator_watch_events_total"
    before = operator.total(events, kind="Deployment")
    unrelated = [f"unrelated-{i}" for i in range(20)]
    try:
        items = [deployment(name, {}) for name in unrelated]
        cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                               "items": items}))
        cluster.kubectl("-n", namespace, "scale", "deployment", *unrelated, "--replicas=1")
        cluster.kubectl("-n", namespace, "scale", "deployment", *unrelated, "--replicas=0")

        def settled() -> bool:  # the controllers are done with them: every event they cause has happened
            items = cluster.get(namespace, "deployments", "-l", "app")["items"]
            return len(items) == len(unrelated) and all(
                (d.get("status") or {}).get("observedGeneration") == d["metadata"]["generation"] for d in items)

        wait_for(settled, 60, interval=0.5, message="the unrelated Deployments settled")
        # Each caused >= 4 events (created, scaled twice, status); none arrived. A look-alike carrying this
        # operator's labels does arrive on the same watch, after them: the watch was live all along.
        ours = {contract.LABEL_ARCHITECTURE: "none", contract.LABEL_MANAGED_BY: contract.MANAGED_BY}
        cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(deployment("look-alike", ours)))
        wait_for(lambda: operator.total(events, kind="Deployment") > before, 30, interval=0.2,
                 message="the look-alike's watch event")
        assert operator.total(events, kind="Deployment") - before < len(unrelated), operator.log_tail()
    finally:
        cluster.kubectl("-n", namespace, "delete", "deployment", "look-alike", *unrelated, "--ignore-not-found")


# -- idempotence and restarts ----------------------------------------------------------------


def test_noop_resync_makes_no_writes(cluster: Cluster, operator: OperatorProcess) -> None:
    namespace = WATCHED[0]
    cluster.apply(namespace, example("riak.yaml", scale=10))
    cluster.wait_ready(namespace, "riak")
    # A metadata change makes kopf call the update handler: a full reconcile with nothing to do.
    writes = operator.writes()
    unchanged = operator.total("simiankube_operator_reconciles_total", result="unchanged")
    cluster.kubectl("-n", namespace, "annotate", "architecture", "riak", "example.com/resync=1")
    wait_for(lambda: operator.total("simiankube_operator_reconciles_total", result="unchanged") > unchanged,
             60, message="a reconcile with nothing to do")
    assert operator.writes() == writes
    # A restarted operator resumes every Architecture: again no write at all.
    operator.restart()
    wait_for(lambda: operator.total("simiankube_operator_reconciles_total", result="unchanged") >= 1,
             60, message="the resume reconcile")
    assert operator.writes() == 0, operator.metrics()
    assert cluster.architecture(namespace, "riak")["status"]["readyInstances"] > 0


def test_killed_mid_reconcile_restarts_without_duplicates_or_orphans(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    namespace = WATCHED[1]
    generated = tmp_path / "generated.yaml"
    assert main(["generate", "--services", "120", "--seed", "7", "--name", "big", "--file", str(generated)]) == 0
    body = yaml.safe_load(generated.read_text())
    body["spec"]["scale"] = {"percent": 1}
    total = len(expected_objects(body, namespace))
    operator.restart(extra_args=[*CHAOS_ON, "--apply-concurrency=1"])  # a slow apply, to be cut short
    try:
        cluster.apply(namespace, body)

        def under_way() -> int:
            applied = len(cluster.child_keys(namespace, "big"))
            return applied if applied >= 10 else 0

        applied = wait_for(under_way, 120, interval=0.1, message="the apply under way")
        operator.kill()
        assert applied < total, "the apply finished before the kill; nothing was cut short"
    finally:
        operator.restart(extra_args=CHAOS_ON)
    cluster.wait_ready(namespace, "big")
    assert_matches_render(cluster, namespace, body)
    rendered = {o["metadata"]["name"] for o in expected_objects(body, namespace)}
    assert {p["metadata"]["labels"][contract.LABEL_INSTANCE] for p in cluster.pods(namespace, "big")} <= rendered


# -- chaos ----------------------------------------------------------------------------------------


def chaos_status(cluster: Cluster, namespace: str, name: str) -> Body:
    return dict((cluster.architecture(namespace, name).get("status") or {}).get("chaos") or {})


def test_chaos_guards_dry_run_and_kills_with_recovery(cluster: Cluster, operator: OperatorProcess) -> None:
    namespace = WATCHED[0]
    body = example("lamp.yaml", scale=20)  # webserver: 3 instances; rds-mysql: 1
    cluster.apply(namespace, body)
    cluster.wait_ready(namespace, "lamp")
    lookalike = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "look-alike", "labels": {contract.LABEL_ARCHITECTURE: "lamp",
                                                     contract.LABEL_SERVICE: "webserver"}},
        "spec": {"containers": [{"name": "c", "image": IMAGE, "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
            "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}}]},
    }
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(lookalike))
    try:
        check_chaos(cluster, operator, namespace, body)
    finally:
        cluster.kubectl("-n", namespace, "delete", "pod", "look-alike", "--wait=false")


def check_chaos(cluster: Cluster, operator: OperatorProcess, namespace: str, body: Body) -> None:
    wait_for(lambda: pod_ready(cluster.get(namespace, "pod", "look-alike")), 60, message="the look-alike running")
    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in cluster.pods(namespace, "lamp")}
    fast = {"enabled": True, "intervalSeconds": 1, "minPodAgeSeconds": 0, "gracePeriodSeconds": 0}

    def set_chaos(victim: str, **chaos: Any) -> None:
        changed = copy.deepcopy(body)
        changed["spec"]["victim"] = victim
        changed["spec"]["chaos"] = {**fast, **chaos}
        cluster.apply(namespace, changed)

    def outcome_starts(prefix: str) -> Callable[[], bool]:
        return lambda: str(chaos_status(cluster, namespace, "lamp").get("lastOutcome", "")).startswith(prefix)

    # The ready-instance guard: rds-mysql has one instance, and minReady 1 keeps it.
    set_chaos("rds-mysql", minReady=1)
    wait_for(outcome_starts("skipped: only 1 ready"), 60, message="the minReady guard")
    # Dry run: reported, nothing deleted.
    set_chaos("webserver", dryRun=True)
    wait_for(outcome_starts("dry run: would delete"), 60, message="a dry run")
    assert cluster.wait_event(namespace, "lamp", "DryRun")
    now = {p["metadata"]["name"]: p["metadata"]["uid"] for p in cluster.pods(namespace, "lamp")}
    assert now == uids, "the guard and the dry run deleted nothing"
    # Real kills, at most two, each recovered.
    set_chaos("webserver", maxKills=2)
    wait_for(lambda: chaos_status(cluster, namespace, "lamp").get("kills", 0) >= 2
             and "lastRecoverySeconds" in chaos_status(cluster, namespace, "lamp")
             and outcome_starts("skipped: maxKills 2 reached")(), 120, message="two kills, recovered")
    chaos = chaos_status(cluster, namespace, "lamp")
    assert chaos["kills"] == 2 and chaos["lastRecoverySeconds"] > 0
    assert chaos["lastKill"]["service"] == "webserver"
    # Kills may hit a replacement of an earlier victim: count them in the Events.
    def victims() -> list[str]:
        killings = [e for e in cluster.events(namespace, "lamp") if e["reason"] == "Killing"]
        return [e["message"].split()[3] for e in killings for _ in range(e.get("count") or 1)]

    killed = wait_for(lambda: victims() if len(victims()) >= 2 else None, 30, message="two Killing Events")
    assert len(killed) == 2 and all(name.startswith("lamp-webserver-") for name in killed), killed
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in cluster.pods(namespace, "lamp")}
    untouched = {name: uid for name, uid in uids.items() if not name.startswith("lamp-webserver-")}
    assert {name: after.get(name) for name in untouched} == untouched, "only the victim service lost pods"
    assert after["look-alike"] == uids["look-alike"]
    assert operator.total("simiankube_chaos_pods_deleted_total", architecture="lamp", service="webserver") == 2
    assert operator.total("simiankube_chaos_recovery_seconds_count", architecture="lamp") >= 1
    cluster.wait_ready(namespace, "lamp")


def test_chaos_respects_a_pod_disruption_budget(cluster: Cluster) -> None:
    """Kills are evictions: with a PodDisruptionBudget allowing no disruption, no pod dies, nothing counts."""
    namespace = WATCHED[1]
    body = example("lamp.yaml", scale=20)
    body["spec"]["victim"] = "webserver"
    cluster.apply(namespace, body)
    cluster.wait_ready(namespace, "lamp")
    budget = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "webserver"},
              "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {
                  contract.LABEL_ARCHITECTURE: "lamp", contract.LABEL_SERVICE: "webserver"}}}}
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(budget))
    try:
        uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in cluster.pods(namespace, "lamp")}
        body["spec"]["chaos"] = {"enabled": True, "intervalSeconds": 1, "minPodAgeSeconds": 0, "minReady": 0}
        cluster.apply(namespace, body)
        def refused() -> Body | None:
            """A refused kill's status: an attempt in flight shows its kill counted until the refusal undoes it."""
            status = chaos_status(cluster, namespace, "lamp")
            return status if "PodDisruptionBudget forbids it" in str(status.get("lastOutcome", "")) else None

        status = wait_for(refused, 60, message="the budget respected")
        assert status.get("kills") == 0
        assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in cluster.pods(namespace, "lamp")} == uids
    finally:
        cluster.kubectl("-n", namespace, "delete", "poddisruptionbudget", "webserver")


# -- segmentation verification ------------------------------------------------------------------


def test_periodic_segmentation_verification_is_recorded(cluster: Cluster, operator: OperatorProcess) -> None:
    """On kwok no container runs, so no probe is answered: every cell is unobserved, none proven."""
    namespace = WATCHED[1]

    def every_5s(spec_body: Body) -> None:
        spec_body["spec"].setdefault("segmentation", {})["verifyIntervalSeconds"] = 5

    body = example("lamp.yaml", scale=20, edit=every_5s)
    cluster.apply(namespace, body)
    cluster.wait_ready(namespace, "lamp")

    def recorded() -> Body | None:
        return (cluster.architecture(namespace, "lamp").get("status") or {}).get("segmentation")

    segmentation = wait_for(recorded, 180, interval=0.5, message="status.segmentation")
    services = len({p["metadata"]["labels"][contract.LABEL_SERVICE] for p in cluster.pods(namespace, "lamp")})
    cells = services * services
    # Nothing observed, so enforcement is unknown: no `enforced` key (a merge patch cannot store null).
    assert segmentation == {"time": segmentation["time"], "correct": 0, "incorrect": cells, "unobserved": cells}, \
        segmentation
    assert segmentation["time"].endswith("Z")
    event = cluster.wait_event(namespace, "lamp", "SegmentationMismatch")
    assert event["type"] == "Warning" and f"({cells} not observed)" in event["message"]
    assert operator.total("simiankube_segmentation_verifications_total", architecture="lamp",
                          result="mismatch") >= 1
    assert operator.total("simiankube_segmentation_unobserved", architecture="lamp") == cells
    # Periodic: the next verification moves the time.
    wait_for(lambda: (recorded() or {}).get("time") != segmentation["time"], 120, interval=0.5,
             message="a second verification")


def test_health_probes_leave_the_log_quiet(operator: OperatorProcess) -> None:
    url = f"http://127.0.0.1:{operator.health_port}/healthz"
    for _ in range(3):
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
    assert "/healthz" not in operator.log_tail(10_000)
