# The two commands a newcomer needs (see README.md):
#   make demo   run netflixoss on this machine, no cluster needed
#   make test   install everything the tests need, then run the whole suite
.PHONY: demo test test-quick lint bench

PY := .venv/bin/python

demo:
	@scripts/bootstrap.sh python
	.venv/bin/simiankube run architectures/netflixoss.yaml --duration 20

test:
	@scripts/bootstrap.sh all
	$(PY) -m pytest

# The quick loop: everything but the tests that need the control-plane rig.
test-quick:
	@scripts/bootstrap.sh python
	$(PY) -m pytest -m "not controlplane"

lint:
	scripts/typecheck.sh

bench:
	$(PY) benchmarks/bench_render.py
