"""A short run of bench/soak.py as a correctness check: mixed load for 30 s, then zero errors and
nothing leaked (domains and overlays back to the pool's size, no drive file of the load left).
No timing asserts: the figures are printed (pytest -s) and the 5-minute run's are in the README."""

from __future__ import annotations

import pytest

from bench.soak import POOL, soak

pytestmark = pytest.mark.vm


def test_soak_30s():
    result = soak(duration=30, every=5)
    assert result["errors"] == 0, result["messages"]
    assert result["settled"], result["final"]
    assert result["final"]["domains"] == result["final"]["overlays"] == POOL
    assert not result["leftover_drives"]
    kinds = result["kinds"]
    for kind in ("drive create", "chunk write (gzip)", "drive destroy", "sandbox run (wait)", "server start",
                 "server stop", "list read"):
        assert kinds.get(kind, {}).get("requests", 0) > 0, (kind, kinds)
