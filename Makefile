# The two commands a newcomer needs (see README.md):
#   make demo   run netflixoss on this machine, no cluster needed
#   make test   install everything the tests need, then run the whole suite
.PHONY: demo test test-quick test-realnode lint bench images

PY := .venv/bin/python

demo:
	@scripts/bootstrap.sh python
	.venv/bin/simiankube run architectures/netflixoss.yaml --duration 20

test:
	@scripts/bootstrap.sh all
	$(PY) -m pytest

# The quick loop: everything but the tests that need the control-plane rig, the
# image builds, a browser or npm (those need `scripts/bootstrap.sh system`).
test-quick:
	@scripts/bootstrap.sh python
	$(PY) -m pytest -m "not controlplane and not images and not browser and not npm"

# The real node and the mission end to end on it (root; see CONTRIBUTING.md).
test-realnode:
	@scripts/bootstrap.sh all
	$(PY) -m pytest -m realnode

lint:
	scripts/typecheck.sh

bench:
	$(PY) benchmarks/bench_render.py

# The two project images under the names the chart uses by default
# (rig/images.sh list): with docker when its daemon answers, else with buildah
# (rig/images.sh build: OCI archives, printed one per line). Then load them:
# README.md, "On a cluster".
images:
	@if docker info >/dev/null 2>&1; then \
	  rig/images.sh list nanoservice operator | while read -r name ref; do \
	    docker build -f "$$name/Dockerfile" -t "$$ref" . || exit 1; \
	  done; \
	else \
	  rig/images.sh build nanoservice operator; \
	fi
