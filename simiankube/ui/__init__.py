"""The live traffic view: the architecture's graph with per-edge and per-service figures, in a browser."""
