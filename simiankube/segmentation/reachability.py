"""An exact model of Kubernetes NetworkPolicy semantics, with no cluster.

Given the pods, namespaces and NetworkPolicies (raw API dicts) of a cluster,
it says whether a connection from one pod to another on a port and protocol
is allowed, and builds upstream-style truth tables (`.` allowed, `X` blocked).
It judges any policies, not only the ones simiankube renders, so the verifier
can compute what a live namespace *should* allow from what is really there.

Semantics (see the Kubernetes documentation on NetworkPolicy):
- a pod is isolated for a direction once any policy selects it for it;
- a connection needs the source's egress AND the destination's ingress;
- `policyTypes` defaults to Ingress, plus Egress when egress rules exist;
- in one peer, namespaceSelector AND podSelector; separate peers are OR;
  a missing namespaceSelector means the policy's namespace, an empty one all;
- no `ports` means all ports; protocol defaults to TCP; named ports resolve
  against the destination pod's container ports; `endPort` makes a range;
- `ipBlock` (with `except`) matches peers by pod IP;
- a pod is never blocked from itself.

Pods with equal namespace, labels, ports (and IP, when some policy uses
ipBlock) behave identically, so verdicts are computed once per such class
with Python ints as bitsets; that keeps a 1,000-service architecture fast.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
PROTOCOLS = ("TCP", "UDP", "SCTP")

ALLOWED = "."
BLOCKED = "X"
UNKNOWN = "?"
MIXED = "~"  # an aggregated cell whose instances disagree
LEGEND = f"{ALLOWED} allowed   {BLOCKED} blocked   {UNKNOWN} not observed   {MIXED} mixed (see --pods)"


class PolicyError(ValueError):
    """A policy the API server would not have accepted (unknown operator, ...)."""


@dataclass(frozen=True)
class ContainerPort:
    port: int
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ip: str = ""
    ports: tuple[ContainerPort, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """A destination pod probed on one port and protocol."""

    pod: Pod
    port: int
    protocol: str = "TCP"


# -- selectors and peers --------------------------------------------------------


class LabelIndex:
    """Label selectors evaluated over many label sets at once, as bitsets (bit i = item i).

    The one implementation of LabelSelector semantics here: matchLabels and
    matchExpressions (In, NotIn, Exists, DoesNotExist) all ANDed.
    """

    def __init__(self, items: Sequence[Mapping[str, str]]) -> None:
        self.everyone = (1 << len(items)) - 1
        self._pairs: dict[tuple[str, str], int] = {}
        self._keys: dict[str, int] = {}
        for i, labels in enumerate(items):
            for key, value in labels.items():
                self._pairs[(key, value)] = self._pairs.get((key, value), 0) | 1 << i
                self._keys[key] = self._keys.get(key, 0) | 1 << i

    def _any_of(self, key: str, values: Iterable[str]) -> int:
        bits = 0
        for value in values:
            bits |= self._pairs.get((key, value), 0)
        return bits

    def select(self, selector: Mapping[str, Any] | None) -> int:
        """The items a LabelSelector matches; an empty (or missing) selector matches all."""
        bits = self.everyone
        if not selector:
            return bits
        for key, value in (selector.get("matchLabels") or {}).items():
            bits &= self._pairs.get((key, value), 0)
        for expression in selector.get("matchExpressions") or ():
            key, operator = expression["key"], expression["operator"]
            values = expression.get("values") or ()
            if operator == "In":
                bits &= self._any_of(key, values)
            elif operator == "NotIn":
                bits &= ~self._any_of(key, values)
            elif operator == "Exists":
                bits &= self._keys.get(key, 0)
            elif operator == "DoesNotExist":
                bits &= ~self._keys.get(key, 0)
            else:
                raise PolicyError(f"unknown label selector operator {operator!r}")
        return bits & self.everyone


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector against one label set."""
    return bool(LabelIndex([labels]).select(selector))


def ip_block_matches(block: Mapping[str, Any], ip: str) -> bool:
    if not ip:
        return False
    address = ipaddress.ip_address(ip)
    network = ipaddress.ip_network(block["cidr"], strict=False)
    if address.version != network.version or address not in network:
        return False
    excepted = (ipaddress.ip_network(cidr, strict=False) for cidr in block.get("except") or ())
    return not any(address.version == e.version and address in e for e in excepted)


def port_matches(entry: Mapping[str, Any], port: int, protocol: str, destination: Pod) -> bool:
    """One NetworkPolicyPort against a probed port of the destination pod."""
    if entry.get("protocol", "TCP") != protocol:
        return False
    wanted = entry.get("port")
    if wanted is None:
        return True
    if isinstance(wanted, str):
        return any(p.name == wanted and p.protocol == protocol and p.port == port for p in destination.ports)
    end = entry.get("endPort")
    return bool(wanted <= port <= end) if end is not None else bool(wanted == port)


# -- parsed policies --------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    peers: tuple[Mapping[str, Any], ...] | None  # None: every peer
    ports: tuple[Mapping[str, Any], ...] | None  # None: every port
    ports_key: str = ""  # equal ports, equal key: rules share their port bitsets


@dataclass(frozen=True)
class _Policy:
    name: str
    namespace: str
    pod_selector: Mapping[str, Any]
    ingress: tuple[_Rule, ...] | None  # None: does not isolate ingress
    egress: tuple[_Rule, ...] | None


def _parse_policy(policy: Mapping[str, Any]) -> _Policy:
    metadata = policy.get("metadata") or {}
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes") or ["Ingress", *(["Egress"] if spec.get("egress") else [])]

    def rules(items: Any, peers_key: str) -> tuple[_Rule, ...]:
        return tuple(
            _Rule(
                peers=tuple(rule[peers_key]) if rule.get(peers_key) else None,
                ports=tuple(rule["ports"]) if rule.get("ports") else None,
                ports_key=json.dumps(rule.get("ports") or [], sort_keys=True),
            )
            for rule in items or ()
        )

    return _Policy(
        name=metadata.get("name", ""),
        namespace=metadata.get("namespace") or "default",
        pod_selector=spec.get("podSelector") or {},
        ingress=rules(spec.get("ingress"), "from") if "Ingress" in types else None,
        egress=rules(spec.get("egress"), "to") if "Egress" in types else None,
    )


def _uses_ip_blocks(policies: Sequence[_Policy]) -> bool:
    return any(
        "ipBlock" in peer
        for policy in policies
        for rule in (*(policy.ingress or ()), *(policy.egress or ()))
        for peer in rule.peers or ()
    )


@dataclass(frozen=True)
class Verdict:
    ingress: bool
    egress: bool
    loopback: bool = False

    @property
    def allowed(self) -> bool:
        return self.loopback or (self.ingress and self.egress)


class Model:
    """The verdicts of one set of pods, namespaces and policies."""

    def __init__(
        self,
        pods: Iterable[Pod],
        namespaces: Iterable[Namespace],
        policies: Iterable[Mapping[str, Any]],
    ) -> None:
        self.policies = tuple(_parse_policy(p) for p in policies)
        self._namespace_labels = {n.name: {**n.labels, NAMESPACE_NAME_LABEL: n.name} for n in namespaces}
        by_ip = _uses_ip_blocks(self.policies)
        self._class_of: dict[str, int] = {}
        self._classes: list[Pod] = []  # a representative per class
        index: dict[tuple[Any, ...], int] = {}
        for pod in pods:
            key = (pod.namespace, frozenset(pod.labels.items()), pod.ports, pod.ip if by_ip else "")
            if key not in index:
                index[key] = len(self._classes)
                self._classes.append(pod)
            self._class_of[pod.key] = index[key]
        self._pods = LabelIndex([c.labels for c in self._classes])
        self._everyone = self._pods.everyone
        self._in_namespace: dict[str, int] = {}
        for i, pod in enumerate(self._classes):
            self._in_namespace[pod.namespace] = self._in_namespace.get(pod.namespace, 0) | 1 << i
        names = sorted(set(self._namespace_labels) | set(self._in_namespace))
        self._namespace_names = names
        self._namespaces = LabelIndex([self.namespace_labels(n) for n in names])
        self._selected_in: list[list[_Policy]] = [[] for _ in self._classes]
        self._selected_eg: list[list[_Policy]] = [[] for _ in self._classes]
        for policy in self.policies:
            selected = self._in_namespace.get(policy.namespace, 0) & self._pods.select(policy.pod_selector)
            for i in _members(selected):
                if policy.ingress is not None:
                    self._selected_in[i].append(policy)
                if policy.egress is not None:
                    self._selected_eg[i].append(policy)
        self._peer_bits: dict[tuple[int, int], int] = {}
        self._port_bits: dict[tuple[str, int, str], int] = {}
        self._in_bits: dict[tuple[int, int, str], int] = {}
        self._eg_bits: dict[tuple[int, int, str], int] = {}

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        return self._namespace_labels.get(namespace, {NAMESPACE_NAME_LABEL: namespace})

    def _peer(self, peer: Mapping[str, Any], policy_namespace: str) -> int:
        """One NetworkPolicyPeer: ipBlock, or namespaceSelector AND podSelector."""
        if "ipBlock" in peer:
            return sum(1 << i for i, pod in enumerate(self._classes) if ip_block_matches(peer["ipBlock"], pod.ip))
        if "namespaceSelector" in peer:
            namespaces = 0
            for j in _members(self._namespaces.select(peer["namespaceSelector"])):
                namespaces |= self._in_namespace.get(self._namespace_names[j], 0)
        else:
            namespaces = self._in_namespace.get(policy_namespace, 0)
        return namespaces & self._pods.select(peer.get("podSelector"))

    def _peers(self, policy: _Policy, rule: _Rule) -> int:
        """The classes a rule's peers admit (separate peers are OR)."""
        cache_key = (id(policy), id(rule))
        bits = self._peer_bits.get(cache_key)
        if bits is None:
            bits = self._everyone if rule.peers is None else 0
            for peer in rule.peers or ():
                bits |= self._peer(peer, policy.namespace)
            self._peer_bits[cache_key] = bits
        return bits

    def _ports(self, rule: _Rule, port: int, protocol: str) -> int:
        """The destination classes on which a rule's ports admit (port, protocol)."""
        if rule.ports is None:
            return self._everyone
        cache_key = (rule.ports_key, port, protocol)
        bits = self._port_bits.get(cache_key)
        if bits is None:
            bits = 0
            for i, pod in enumerate(self._classes):
                if any(port_matches(entry, port, protocol, pod) for entry in rule.ports):
                    bits |= 1 << i
            self._port_bits[cache_key] = bits
        return bits

    def _ingress_sources(self, destination: int, port: int, protocol: str) -> int:
        cache_key = (destination, port, protocol)
        bits = self._in_bits.get(cache_key)
        if bits is None:
            policies = self._selected_in[destination]
            if not policies:
                bits = self._everyone
            else:
                bits = 0
                for policy in policies:
                    for rule in policy.ingress or ():
                        if self._ports(rule, port, protocol) >> destination & 1:
                            bits |= self._peers(policy, rule)
            self._in_bits[cache_key] = bits
        return bits

    def _egress_destinations(self, source: int, port: int, protocol: str) -> int:
        cache_key = (source, port, protocol)
        bits = self._eg_bits.get(cache_key)
        if bits is None:
            policies = self._selected_eg[source]
            if not policies:
                bits = self._everyone
            else:
                bits = 0
                for policy in policies:
                    for rule in policy.egress or ():
                        bits |= self._peers(policy, rule) & self._ports(rule, port, protocol)
            self._eg_bits[cache_key] = bits
        return bits

    def class_of(self, pod: Pod) -> int:
        try:
            return self._class_of[pod.key]
        except KeyError:
            raise KeyError(f"pod {pod.key} is not part of this model") from None

    def class_verdict(self, source: int, destination: int, port: int, protocol: str) -> Verdict:
        return Verdict(
            ingress=bool(self._ingress_sources(destination, port, protocol) >> source & 1),
            egress=bool(self._egress_destinations(source, port, protocol) >> destination & 1),
        )

    def verdict(self, source: Pod, destination: Pod, port: int, protocol: str = "TCP") -> Verdict:
        if protocol not in PROTOCOLS:
            raise PolicyError(f"unknown protocol {protocol!r}")
        if source.key == destination.key:
            return Verdict(ingress=True, egress=True, loopback=True)
        return self.class_verdict(self.class_of(source), self.class_of(destination), port, protocol)

    def allowed(self, source: Pod, destination: Pod, port: int, protocol: str = "TCP") -> bool:
        return self.verdict(source, destination, port, protocol).allowed

    def matrix(
        self,
        sources: Sequence[tuple[str, Pod]],
        targets: Sequence[tuple[str, Target]],
    ) -> Matrix:
        """A truth table over groups: rows and columns are the group names given.

        A cell is `.` when every pod pair in it is allowed, `X` when every pair
        is blocked, `~` when they disagree. A pod paired with itself only counts
        when the cell holds nothing else (a one-pod service to itself).
        """
        rows = _ordered(name for name, _ in sources)
        columns = _ordered(name for name, _ in targets)
        row_members: dict[str, dict[int, set[str]]] = {r: {} for r in rows}
        for name, pod in sources:
            row_members[name].setdefault(self.class_of(pod), set()).add(pod.key)
        column_members: dict[str, dict[tuple[int, int, str], set[str]]] = {c: {} for c in columns}
        for name, target in targets:
            key = (self.class_of(target.pod), target.port, target.protocol)
            column_members[name].setdefault(key, set()).add(target.pod.key)
        # The hot loop of big architectures: plain tuples and bit tests, no objects per cell.
        column_items = {
            c: [(tc, port, protocol, pods, self._ingress_sources(tc, port, protocol))
                for (tc, port, protocol), pods in members.items()]
            for c, members in column_members.items()
        }
        cells = {}
        for row in rows:
            row_items = list(row_members[row].items())
            for column in columns:
                values: set[bool | None] = set()
                for source_class, source_pods in row_items:
                    for target_class, port, protocol, target_pods, ingress in column_items[column]:
                        pairs = len(source_pods) * len(target_pods)
                        if source_class == target_class:
                            pairs -= len(source_pods & target_pods)
                        if pairs:
                            egress = self._egress_destinations(source_class, port, protocol)
                            values.add(bool(ingress >> source_class & egress >> target_class & 1))
                cells[(row, column)] = summarize(values) if values else ALLOWED  # loopback only
        return Matrix(rows, columns, cells)


def _members(bits: int) -> Iterator[int]:
    """The positions of the set bits."""
    while bits:
        low = bits & -bits
        yield low.bit_length() - 1
        bits ^= low


# -- truth tables -----------------------------------------------------------------


def _ordered(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def summarize(values: set[bool | None]) -> str:
    """One symbol for the observations or verdicts of a cell."""
    if None in values:
        return UNKNOWN
    if values == {True}:
        return ALLOWED
    if values == {False}:
        return BLOCKED
    return MIXED


@dataclass(frozen=True)
class Matrix:
    """A truth table: rows are sources, columns destinations, cells symbols."""

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    cells: Mapping[tuple[str, str], str]

    def cell(self, row: str, column: str) -> str:
        return self.cells[(row, column)]

    def pairs(self, symbol: str = ALLOWED) -> list[tuple[str, str]]:
        return [(r, c) for r in self.rows for c in self.columns if self.cells[(r, c)] == symbol]

    def relabeled(self, names: Mapping[str, str]) -> Matrix:
        """The same table with rows and columns renamed (names not in `names` stay)."""
        def name(label: str) -> str:
            return names.get(label, label)

        return Matrix(tuple(map(name, self.rows)), tuple(map(name, self.columns)),
                      {(name(r), name(c)): v for (r, c), v in self.cells.items()})

    def text(self) -> str:
        """Upstream style: a `-` corner, column names, one row per source."""
        table = [["-", *self.columns]] + [[row, *(self.cells[(row, c)] for c in self.columns)] for row in self.rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
        return "\n".join(
            " ".join(value.ljust(width) for value, width in zip(line, widths)).rstrip() for line in table
        ) + "\n"


def matrix_from_observations(
    rows: Sequence[str],
    columns: Sequence[str],
    observations: Iterable[tuple[str, str, bool | None, bool]],
    summary: Callable[[set[bool | None]], str] = summarize,
) -> Matrix:
    """Aggregate (row, column, value, loopback) the way `Model.matrix` aggregates verdicts.

    A pod paired with itself only counts when its cell holds no other pair.
    """
    values: dict[tuple[str, str], set[bool | None]] = {}
    loopback: dict[tuple[str, str], set[bool | None]] = {}
    for row, column, value, is_self in observations:
        (loopback if is_self else values).setdefault((row, column), set()).add(value)
    cells = {}
    for r in rows:
        for c in columns:
            seen = values.get((r, c)) or loopback.get((r, c))
            cells[(r, c)] = summary(seen) if seen else UNKNOWN
    return Matrix(tuple(rows), tuple(columns), cells)
