"""The reachability model against upstream-style cases (namespaces x/y/z, pods a/b/c).

Every expectation is written out by hand as a matrix: rows are sources,
columns destinations, `.` allowed, `X` blocked. Pods serve TCP 80 and 81
(named serve-80-tcp, serve-81-tcp) as in the upstream e2e suite.
"""

from __future__ import annotations

from typing import Any

import pytest

from simiankube.segmentation.reachability import (
    ContainerPort,
    Model,
    Namespace,
    PolicyError,
    Pod,
    Target,
    selector_matches,
)

NAMESPACES = [Namespace(n, {"ns": n}) for n in ("x", "y", "z")]
PORTS = (ContainerPort(80, "TCP", "serve-80-tcp"), ContainerPort(81, "TCP", "serve-81-tcp"),
         ContainerPort(80, "UDP", "serve-80-udp"))
PODS = [
    Pod(namespace=ns, name=name, labels={"pod": name}, ip=f"10.0.{i}.{j + 1}", ports=PORTS)
    for i, ns in enumerate(("x", "y", "z"))
    for j, name in enumerate(("a", "b", "c"))
]
DNS = Pod("kube-system", "coredns", {"k8s-app": "kube-dns"}, "10.96.0.10",
          (ContainerPort(53, "UDP", "dns"), ContainerPort(53, "TCP", "dns-tcp")))


def policy(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def table(policies: list[dict[str, Any]], port: int = 80, protocol: str = "TCP") -> str:
    model = Model(PODS, NAMESPACES, policies)
    return model.matrix([(p.key, p) for p in PODS], [(p.key, Target(p, port, protocol)) for p in PODS]).text()


def written(text: str) -> str:
    """A hand-written matrix, normalised like Matrix.text() (columns padded to the widest name)."""
    lines = [line.split() for line in text.strip().splitlines()]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(" ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines) + "\n"


ALL_ALLOWED = """
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a .   .   .   .   .   .   .   .   .
x/b .   .   .   .   .   .   .   .   .
x/c .   .   .   .   .   .   .   .   .
y/a .   .   .   .   .   .   .   .   .
y/b .   .   .   .   .   .   .   .   .
y/c .   .   .   .   .   .   .   .   .
z/a .   .   .   .   .   .   .   .   .
z/b .   .   .   .   .   .   .   .   .
z/c .   .   .   .   .   .   .   .   .
"""


def test_no_policies_allow_everything() -> None:
    assert table([]) == written(ALL_ALLOWED)


def test_deny_all_ingress() -> None:
    deny = policy("x", "deny-all", {"podSelector": {}, "policyTypes": ["Ingress"]})
    assert table([deny]) == written("""
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a .   X   X   .   .   .   .   .   .
x/b X   .   X   .   .   .   .   .   .
x/c X   X   .   .   .   .   .   .   .
y/a X   X   X   .   .   .   .   .   .
y/b X   X   X   .   .   .   .   .   .
y/c X   X   X   .   .   .   .   .   .
z/a X   X   X   .   .   .   .   .   .
z/b X   X   X   .   .   .   .   .   .
z/c X   X   X   .   .   .   .   .   .
""")


def test_deny_all_egress() -> None:
    deny = policy("x", "deny-all-egress", {"podSelector": {}, "policyTypes": ["Egress"]})
    assert table([deny]) == written("""
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a .   X   X   X   X   X   X   X   X
x/b X   .   X   X   X   X   X   X   X
x/c X   X   .   X   X   X   X   X   X
y/a .   .   .   .   .   .   .   .   .
y/b .   .   .   .   .   .   .   .   .
y/c .   .   .   .   .   .   .   .   .
z/a .   .   .   .   .   .   .   .   .
z/b .   .   .   .   .   .   .   .   .
z/c .   .   .   .   .   .   .   .   .
""")


def test_allow_from_namespace() -> None:
    allow = policy("x", "allow-from-y", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
    })
    assert table([allow]) == written("""
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a .   .   .   .   .   .   .   .   .
x/b X   .   .   .   .   .   .   .   .
x/c X   .   .   .   .   .   .   .   .
y/a .   .   .   .   .   .   .   .   .
y/b .   .   .   .   .   .   .   .   .
y/c .   .   .   .   .   .   .   .   .
z/a X   .   .   .   .   .   .   .   .
z/b X   .   .   .   .   .   .   .   .
z/c X   .   .   .   .   .   .   .   .
""")


def test_allow_from_pod_in_namespace_is_and_within_one_peer() -> None:
    allow = policy("x", "allow-y-b", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                               "podSelector": {"matchLabels": {"pod": "b"}}}]}],
    })
    assert table([allow]) == written("""
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a .   .   .   .   .   .   .   .   .
x/b X   .   .   .   .   .   .   .   .
x/c X   .   .   .   .   .   .   .   .
y/a X   .   .   .   .   .   .   .   .
y/b .   .   .   .   .   .   .   .   .
y/c X   .   .   .   .   .   .   .   .
z/a X   .   .   .   .   .   .   .   .
z/b X   .   .   .   .   .   .   .   .
z/c X   .   .   .   .   .   .   .   .
""")


def test_separate_peers_are_or_and_a_bare_pod_selector_means_the_policy_namespace() -> None:
    allow = policy("x", "allow-y-or-b", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                              {"podSelector": {"matchLabels": {"pod": "b"}}}]}],
    })
    assert table([allow]) == written("""
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a .   .   .   .   .   .   .   .   .
x/b .   .   .   .   .   .   .   .   .
x/c X   .   .   .   .   .   .   .   .
y/a .   .   .   .   .   .   .   .   .
y/b .   .   .   .   .   .   .   .   .
y/c .   .   .   .   .   .   .   .   .
z/a X   .   .   .   .   .   .   .   .
z/b X   .   .   .   .   .   .   .   .
z/c X   .   .   .   .   .   .   .   .
""")


def test_empty_namespace_selector_means_all_namespaces() -> None:
    allow = policy("x", "allow-any-a", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "c"}}}]}],
    })
    assert table([allow]) == written("""
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a .   .   .   .   .   .   .   .   .
x/b X   .   .   .   .   .   .   .   .
x/c .   .   .   .   .   .   .   .   .
y/a X   .   .   .   .   .   .   .   .
y/b X   .   .   .   .   .   .   .   .
y/c .   .   .   .   .   .   .   .   .
z/a X   .   .   .   .   .   .   .   .
z/b X   .   .   .   .   .   .   .   .
z/c .   .   .   .   .   .   .   .   .
""")


ONLY_TO_X_A_BLOCKED = """
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a .   .   .   .   .   .   .   .   .
x/b X   .   .   .   .   .   .   .   .
x/c X   .   .   .   .   .   .   .   .
y/a X   .   .   .   .   .   .   .   .
y/b X   .   .   .   .   .   .   .   .
y/c X   .   .   .   .   .   .   .   .
z/a X   .   .   .   .   .   .   .   .
z/b X   .   .   .   .   .   .   .   .
z/c X   .   .   .   .   .   .   .   .
"""


def test_allow_to_port() -> None:
    allow = policy("x", "allow-80", {
        "podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 80}]}],
    })
    assert table([allow], 80) == written(ALL_ALLOWED)
    assert table([allow], 81) == written(ONLY_TO_X_A_BLOCKED)


def test_named_port_resolves_against_the_destination_pod() -> None:
    allow = policy("x", "allow-81-by-name", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"ports": [{"port": "serve-81-tcp", "protocol": "TCP"}]}],
    })
    assert table([allow], 81) == written(ALL_ALLOWED)
    assert table([allow], 80) == written(ONLY_TO_X_A_BLOCKED)


def test_named_port_in_egress_resolves_against_the_destination() -> None:
    """x/a may only send to ports named serve-81-tcp; y pods name 81 so, dns names nothing so."""
    egress = policy("x", "egress-named", {
        "podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
        "egress": [{"ports": [{"port": "serve-81-tcp"}]}],
    })
    model = Model([*PODS, DNS], NAMESPACES, [egress])
    source, destination = PODS[0], PODS[4]
    assert model.allowed(source, destination, 81)
    assert not model.allowed(source, destination, 80)
    assert not model.allowed(source, DNS, 53, "TCP")


def test_end_port_makes_a_range() -> None:
    allow = policy("x", "allow-81-82", {
        "podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 81, "endPort": 82}]}],
    })
    assert table([allow], 80) == written(ONLY_TO_X_A_BLOCKED)
    assert table([allow], 81) == written(ALL_ALLOWED)
    assert table([allow], 82) == written(ALL_ALLOWED)
    assert table([allow], 83) == written(ONLY_TO_X_A_BLOCKED)


def test_protocol_defaults_to_tcp_and_udp_is_distinct() -> None:
    udp = policy("x", "allow-udp-80", {
        "podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 80, "protocol": "UDP"}]}],
    })
    assert table([udp], 80, "UDP") == written(ALL_ALLOWED)
    assert table([udp], 80, "TCP") == written(ONLY_TO_X_A_BLOCKED)
    assert table([udp], 80, "SCTP") == written(ONLY_TO_X_A_BLOCKED)


def test_egress_with_dns() -> None:
    deny = policy("x", "deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]})
    dns = policy("x", "allow-dns", {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}],
    })
    # kube-system carries no labels here: the model adds kubernetes.io/metadata.name as the API server does.
    model = Model([*PODS, DNS], [*NAMESPACES, Namespace("kube-system")], [deny, dns])
    sources = [(p.key, p) for p in PODS]
    targets = [("dns:53/UDP", Target(DNS, 53, "UDP")), ("dns:53/TCP", Target(DNS, 53, "TCP")),
               ("dns:80/TCP", Target(DNS, 80, "TCP")), ("y/a", Target(PODS[3], 80))]
    assert model.matrix(sources, targets).text() == written("""
-   dns:53/UDP dns:53/TCP dns:80/TCP y/a
x/a .          .          X          X
x/b .          .          X          X
x/c .          .          X          X
y/a .          .          .          .
y/b .          .          .          .
y/c .          .          .          .
z/a .          .          .          .
z/b .          .          .          .
z/c .          .          .          .
""")


def test_ip_block_with_except_matches_pod_ips() -> None:
    allow = policy("x", "allow-cidr", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.1.0/24", "except": ["10.0.1.2/32"]}}]}],
    })
    assert table([allow]) == written("""
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a .   .   .   .   .   .   .   .   .
x/b X   .   .   .   .   .   .   .   .
x/c X   .   .   .   .   .   .   .   .
y/a .   .   .   .   .   .   .   .   .
y/b X   .   .   .   .   .   .   .   .
y/c .   .   .   .   .   .   .   .   .
z/a X   .   .   .   .   .   .   .   .
z/b X   .   .   .   .   .   .   .   .
z/c X   .   .   .   .   .   .   .   .
""")


def test_ip_block_in_egress() -> None:
    egress = policy("y", "egress-cidr", {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.2.0/23", "except": ["10.0.2.3/32"]}}]}],
    })
    assert table([egress]) == written("""
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a .   .   .   .   .   .   .   .   .
x/b .   .   .   .   .   .   .   .   .
x/c .   .   .   .   .   .   .   .   .
y/a X   X   X   .   X   X   .   .   X
y/b X   X   X   X   .   X   .   .   X
y/c X   X   X   X   X   .   .   .   X
z/a .   .   .   .   .   .   .   .   .
z/b .   .   .   .   .   .   .   .   .
z/c .   .   .   .   .   .   .   .   .
""")


def test_match_expressions() -> None:
    allow = policy("x", "allow-expr", {
        "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a"]}]},
        "ingress": [{"from": [{
            "namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["y"]}]},
            "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]},
        }]}],
    })
    assert table([allow]) == written("""
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a .   .   .   .   .   .   .   .   .
x/b .   .   .   .   .   .   .   .   .
x/c .   .   .   .   .   .   .   .   .
y/a X   .   .   .   .   .   .   .   .
y/b X   .   .   .   .   .   .   .   .
y/c X   .   .   .   .   .   .   .   .
z/a X   .   .   .   .   .   .   .   .
z/b .   .   .   .   .   .   .   .   .
z/c .   .   .   .   .   .   .   .   .
""")


def test_exists_and_does_not_exist() -> None:
    labels = {"tier": "web"}
    assert selector_matches({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, labels)
    assert selector_matches({"matchExpressions": [{"key": "db", "operator": "DoesNotExist"}]}, labels)
    assert selector_matches({"matchExpressions": [{"key": "db", "operator": "NotIn", "values": ["x"]}]}, labels)
    with pytest.raises(PolicyError):
        selector_matches({"matchExpressions": [{"key": "db", "operator": "Gt", "values": ["1"]}]}, labels)


def test_ingress_and_egress_are_both_required() -> None:
    ingress = policy("x", "x-a-from-y", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
    })
    egress = policy("y", "y-b-only-to-z", {
        "podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}],
    })
    assert table([ingress, egress]) == written("""
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a .   .   .   .   .   .   .   .   .
x/b X   .   .   .   .   .   .   .   .
x/c X   .   .   .   .   .   .   .   .
y/a .   .   .   .   .   .   .   .   .
y/b X   X   X   X   .   X   .   .   .
y/c .   .   .   .   .   .   .   .   .
z/a X   .   .   .   .   .   .   .   .
z/b X   .   .   .   .   .   .   .   .
z/c X   .   .   .   .   .   .   .   .
""")


def test_policy_types_default_isolates_ingress_even_with_only_egress_rules() -> None:
    """No policyTypes: Ingress always, Egress because egress rules are present."""
    only_egress_rules = policy("x", "egress-only", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
    })
    assert table([only_egress_rules]) == written("""
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a .   .   X   X   X   X   X   X   X
x/b X   .   .   .   .   .   .   .   .
x/c X   .   .   .   .   .   .   .   .
y/a X   .   .   .   .   .   .   .   .
y/b X   .   .   .   .   .   .   .   .
y/c X   .   .   .   .   .   .   .   .
z/a X   .   .   .   .   .   .   .   .
z/b X   .   .   .   .   .   .   .   .
z/c X   .   .   .   .   .   .   .   .
""")


def test_explicit_empty_egress_list_does_not_isolate_egress() -> None:
    spec = {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{}], "egress": []}
    assert table([policy("x", "noop", spec)]) == written(ALL_ALLOWED)


def test_policies_only_select_pods_of_their_own_namespace() -> None:
    deny = policy("y", "deny-pod-a", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"]})
    model = Model(PODS, NAMESPACES, [deny])
    assert model.allowed(PODS[1], PODS[0], 80)  # x/b -> x/a: x/a is not selected
    assert not model.allowed(PODS[1], PODS[3], 80)  # x/b -> y/a: selected, nothing admitted
    assert model.allowed(PODS[3], PODS[3], 80)  # loopback survives deny-all


def test_service_level_aggregation_marks_disagreement_as_mixed() -> None:
    allow = policy("x", "allow-from-x-b", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
    })
    model = Model(PODS, NAMESPACES, [allow])
    by_namespace = model.matrix([(p.namespace, p) for p in PODS], [(p.namespace, Target(p, 80)) for p in PODS])
    assert by_namespace.text() == written("""
-  x  y  z
x  ~  .  .
y  ~  .  .
z  ~  .  .
""")
