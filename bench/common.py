"""Shared by the benchmarks: a throw-away installation QEMU can reach, and percentiles."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import Installation  # noqa: E402

ROOT = Path("/var/tmp/openhosting-bench")


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def installation(**env: str) -> Installation:
    """A new installation (SQLite) in a directory the libvirt-qemu user can traverse; not started."""
    ROOT.mkdir(mode=0o711, exist_ok=True)
    state = Path(tempfile.mkdtemp(dir=ROOT))
    state.chmod(0o711)
    return Installation(state_dir=state, database_url=f"sqlite:///{state}/openhosting.db", env_extra=env)
