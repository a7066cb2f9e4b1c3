"""Paths to the example architectures the core tests run over."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
SPIGO = ROOT / "architectures" / "spigo"
EXAMPLES = sorted(ROOT.glob("architectures/**/*.yaml"))
