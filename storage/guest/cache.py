"""Where builds are cached, and the small file helpers every builder step shares."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from .errors import BuildFailed


def cache_dir() -> Path:
    """The build cache: $OPENHOSTING_CACHE_DIR, else /var/cache/openhosting, else ~/.cache/openhosting.

    The directory exists when this returns. The system location is used only when it can be
    written, so an unprivileged developer still gets a working (per-user) cache.
    """
    configured = os.environ.get("OPENHOSTING_CACHE_DIR")
    if configured:
        path = Path(configured)
    else:
        path = Path("/var/cache/openhosting")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except PermissionError:
            pass
        if not os.access(path, os.W_OK):
            xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
            path = Path(xdg) / "openhosting"
    path = path.absolute()
    path.mkdir(parents=True, exist_ok=True)
    return path


def digest(*parts: object) -> str:
    """A short stable hash of JSON-able parts (bytes are hashed as such): cache keys."""
    h = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:20]


def file_identity(path: Path) -> list:
    """What a cache key needs to notice that an input file changed, without reading it."""
    st = Path(path).stat()
    return [str(path), st.st_size, st.st_mtime_ns]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path`.lock: one builder per artifact across processes."""
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_atomic(dest: Path, data: bytes, mode: int = 0o644) -> bool:
    """Make `dest` hold `data`; returns False (and leaves the file and its mtime alone) if it did."""
    dest = Path(dest)
    try:
        if dest.stat().st_size == len(data) and dest.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


def run(step: str, argv: Sequence[str | os.PathLike], **kwargs) -> subprocess.CompletedProcess:
    """Run a build tool; a failure becomes BuildFailed carrying the tail of its output."""
    try:
        return subprocess.run([str(a) for a in argv], check=True, capture_output=True, **kwargs)
    except FileNotFoundError as exc:
        raise BuildFailed(step=step, detail=f"{argv[0]} is not installed ({exc})") from None
    except subprocess.CalledProcessError as exc:
        out = (exc.stderr or b"") + (exc.stdout or b"")
        tail = out.decode(errors="replace").strip()[-2000:]
        raise BuildFailed(step=step, detail=f"exit {exc.returncode}: {tail}") from None
