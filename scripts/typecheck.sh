#!/usr/bin/env bash
# mypy --strict over every portion of the `simiankube` namespace package, read
# straight from the checkout (pyproject's [tool.mypy] names the three folders).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cache="${SIMIANKUBE_CACHE:-$HOME/.cache/simiankube}/mypy"
exec .venv/bin/python -m mypy --cache-dir "$cache" -p simiankube -p simiankube.operator -p simiankube.nanoservice
