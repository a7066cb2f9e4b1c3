"""An architecture as local processes: the runner, its worker processes and the end-of-run report.

Each instance is fed the same ConfigMap bytes the render step gives a pod.
"""
