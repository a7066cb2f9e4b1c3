#!/usr/bin/env bash
# Install what simiankube needs on a fresh Debian machine, idempotently.
#
#   scripts/bootstrap.sh python   the virtualenv .venv with simiankube and its test extras
#   scripts/bootstrap.sh system   Debian packages the tests use (needs root or sudo)
#   scripts/bootstrap.sh rig      the control-plane binaries (rig/build.sh; cached)
#   scripts/bootstrap.sh all      all three
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# openssl: the rig's certificates; util-linux: flock for concurrent rig builds;
# ca-certificates: the Go module proxy; iptables: blocking one edge in the segmentation
# end-to-end test; procps/iproute2: process and socket checks in teardown tests.
# The real node (up --real-node): runc runs its containers; ipset, conntrack and
# iptables for kube-proxy and kube-router; nftables removes the empty tables
# iptables-nft leaves; socat for `kubectl port-forward`. Its images (rig/images.sh):
# buildah builds the Dockerfiles, mmdebstrap the stand-in base, umoci and skopeo.
# graphviz checks exported DOT; chromium runs the live view's browser tests.
DEBIAN_PACKAGES=(
  openssl util-linux ca-certificates iptables procps iproute2
  runc ipset conntrack nftables socat
  buildah mmdebstrap umoci skopeo
  graphviz chromium
)
PYTHON=${PYTHON:-python3}

step() { printf '==> %s\n' "$*" >&2; }

python_env() {
  if [ ! -x .venv/bin/python ]; then
    step "creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
  fi
  local stamp=.venv/.simiankube-installed
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements/dev.txt -nt "$stamp" ]; then
    step "installing the locked dependencies (requirements/dev.txt) and simiankube into .venv"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet --require-hashes -r requirements/dev.txt
    .venv/bin/python -m pip install --quiet --no-deps -e .
    touch "$stamp"
  fi
}

system_packages() {
  local missing=()
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  step "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

rig_binaries() {
  command -v go >/dev/null || { echo "error: Go >= 1.26 is needed to build the control-plane rig (rig/build.sh)" >&2; exit 1; }
  step "control-plane binaries (built once, then cached; a cold build takes a while on 2 cores)"
  rig/build.sh
}

case "${1:-all}" in
  python) python_env ;;
  system) system_packages ;;
  rig) rig_binaries ;;
  all) system_packages; python_env; rig_binaries ;;
  *) echo "usage: $0 [python|system|rig|all]" >&2; exit 2 ;;
esac
