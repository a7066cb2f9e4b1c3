"""Segmentation: what the NetworkPolicies allow (reachability, scenario) and what a cluster does (verify).

`reachability`, `scenario` and `verify` are pure; `kube` is this concern's edge to the API server.
"""
