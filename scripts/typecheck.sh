#!/usr/bin/env bash
# mypy --strict over the whole import package `simiankube`. The operator and the
# nanoservice live in their own top-level folders (see pyproject's package-dir),
# which mypy cannot map by itself, so it checks a tree of symlinks laid out as
# the installed package is.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/simiankube"
for entry in simiankube/*; do ln -s "$PWD/$entry" "$tree/simiankube/"; done
ln -s "$PWD/operator/simiankube_operator" "$tree/simiankube/operator"
ln -s "$PWD/nanoservice/simiankube_nanoservice" "$tree/simiankube/nanoservice"
cache="${SIMIANKUBE_CACHE:-$HOME/.cache/simiankube}/mypy"
cd "$tree" && "$OLDPWD/.venv/bin/python" -m mypy --config-file "$OLDPWD/pyproject.toml" --cache-dir "$cache" -p simiankube
