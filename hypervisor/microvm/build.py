"""Guest programs compiled on the host: static C binaries, cached by the hash of their source.

The sources live in ``guest/`` beside this file; images do not need to carry the programs (the
template copies them into the guest's tmpfs before its state is saved).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

#: The C sources of the guest programs.
SOURCES = Path(__file__).resolve().parent / "guest"


def digest(source: Path) -> str:
    """A short hash of a source file and the local headers it includes (``#include "x.h"``, beside
    it): the cache key of its binary."""
    text = Path(source).read_bytes()
    h = hashlib.sha256(text)
    for name in re.findall(rb'^#include "([^"/]+)"', text, re.M):
        h.update(b"\0" + name + b"\0" + (Path(source).parent / name.decode()).read_bytes())
    return h.hexdigest()[:16]


def compile_static(source: Path, cache_dir: Path, *, compiler: str | None = None) -> Path | None:
    """The static binary of ``source`` (``<stem>-<digest>`` in ``cache_dir``), compiled once; None
    when no C compiler (or no static libc) is available."""
    source = Path(source)
    target = Path(cache_dir) / f"{source.stem}-{digest(source)}"
    if target.exists():
        return target
    cc = compiler or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        out = Path(tmp) / source.stem
        done = subprocess.run([cc, "-static", "-Os", "-s", "-Wall", "-o", str(out), str(source)],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            return None
        out.replace(target)
    return target
