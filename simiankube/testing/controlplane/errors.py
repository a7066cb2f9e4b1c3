"""The rig's exceptions."""

from __future__ import annotations


class RigError(RuntimeError):
    """The control plane could not be built, started or stopped."""


class BinaryMissingError(RigError):
    """A rig binary has not been built yet."""
