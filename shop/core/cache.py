"""The response cache of the catalog: serialized bytes keyed by a catalog version, invalidated in O(1)."""

from __future__ import annotations


def invalidate_catalog() -> None:
    """Make every cached catalog response stale; call after a committed write that changes products."""
