"""simiankube: spigo architectures on real Kubernetes."""
