"""Test support for simiankube.

- :mod:`simiankube.testing.controlplane`: a real Kubernetes control plane
  (etcd, kube-apiserver, controllers, scheduler, kwok nodes) started by tests;
  ``ControlPlane``, ``binary(name)``, ``kubeconfig_for_token(...)``.
- :mod:`simiankube.testing.wait`: ``wait_for(predicate, timeout)``.

Import from the submodules; this package imports nothing eagerly so that
``python -m simiankube.testing.controlplane`` runs cleanly.
"""
