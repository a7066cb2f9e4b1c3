#!/usr/bin/env bash
# Re-resolve the locks under requirements/ from pyproject.toml: one per image (the
# nanoservice's and the operator's extras) and one for development and CI (every
# extra plus the test tools). Exact versions with hashes, for every platform the
# images are built for. Run after changing a dependency in pyproject.toml; the
# tests check that every lock still agrees with pyproject.toml.
#
#   scripts/lock.sh            re-resolve at today's newest versions
#   scripts/lock.sh --upgrade-package NAME   move one package only
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
uv=${UV:-.venv/bin/uv}
[ -x "$uv" ] || .venv/bin/python -m pip install --quiet uv
compile() { # extra... -> requirements/<name>.txt
  local name=$1; shift
  local extras=()
  for extra in "$@"; do extras+=(--extra "$extra"); done
  "$uv" pip compile pyproject.toml "${extras[@]}" --universal --python-version 3.11 --generate-hashes \
    --no-header --quiet --output-file "requirements/$name.txt" "${UV_ARGS[@]}"
  sed -i "1i # Locked from pyproject.toml by scripts/lock.sh (extras: $*). Do not edit by hand." "requirements/$name.txt"
}
UV_ARGS=("$@")
compile nanoservice nanoservice
compile operator operator
compile dev all test
