"""Deterministic Kubernetes names for spigo names.

spigo names are camelCase ("cassSubscriber"); Kubernetes wants lowercase RFC
1123 labels. The mapping splits camel humps with a hyphen, lowercases, turns
every other character into a hyphen and trims; names too long for the object
they name keep a readable prefix and gain a short hash of the original.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache

_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_INVALID = re.compile(r"[^a-z0-9]+")
# A StatefulSet's name plus "-<ordinal>" and its controller-revision-hash label
# value must stay within 63 characters; 52 leaves room for both.
MAX_WORKLOAD_NAME = 52


@cache
def kube_name(name: str) -> str:
    """`cassSubscriber` -> `cass-subscriber`, `riakTS` -> `riak-ts`, `rds_MySQL` -> `rds-my-sql`."""
    hyphenated = _HUMP.sub("-", name).lower()
    cleaned = _INVALID.sub("-", hyphenated).strip("-")
    if cleaned and cleaned[0].isdigit():
        cleaned = f"s-{cleaned}"  # Service names must start with a letter (RFC 1035)
    return cleaned


def bounded(name: str, limit: int = MAX_WORKLOAD_NAME) -> str:
    """`name` when it fits, otherwise a prefix and a hash that keep it unique."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"
