"""The drive pool: one sparse raw file (or a gzip stream, for compressed standard drives) per drive.

Writes are validated whole before a byte lands, reserve their blocks before writing (so a full file
system fails the chunk without touching the drive), punch holes for all-zero blocks instead of writing
them, and are durable (fdatasync) before they return. Writers take a shared flock on the drive file,
so concurrent writes to one drive (from any worker process) are safe; resize takes it exclusively.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
from pathlib import Path
from typing import Iterator

from .errors import OutOfBounds, PoolFull

BLOCK = 4096
READ_CHUNK = 1024 * 1024
_ZERO_BLOCK = bytes(BLOCK)
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate [offset, offset+length): it reads back as zeros and stops using disk blocks."""
    if length <= 0:
        return
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        if err != errno.EOPNOTSUPP:
            raise OSError(err, os.strerror(err))
        os.pwrite(fd, bytes(length), offset)  # file system without hole punching


def zero_runs(data: bytes | memoryview, offset: int) -> list[tuple[int, int, bool]]:
    """Split `data` (to be placed at file `offset`) into (start, end, is_zero) runs on block bounds."""
    n = len(data)
    if n == 0:
        return []
    if data.count(0) == n if isinstance(data, bytes) else bytes(data).count(0) == n:
        return [(0, n, True)]
    runs: list[tuple[int, int, bool]] = []
    first = min(n, (-offset) % BLOCK or BLOCK)
    edges = [0, *range(first, n, BLOCK), n]
    for start, end in zip(edges, edges[1:]):
        piece = data[start:end]
        is_zero = piece == _ZERO_BLOCK if end - start == BLOCK else not any(piece)
        if runs and runs[-1][2] == is_zero:
            runs[-1] = (runs[-1][0], end, is_zero)
        else:
            runs.append((start, end, is_zero))
    return runs


class DriveFile:
    """An open drive file under a shared lock: positional writes with hole punching."""

    def __init__(self, fd: int, pool: "DrivePool"):
        self.fd = fd
        self.pool = pool

    @property
    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def write(self, offset: int, data: bytes | memoryview, what: str = "write") -> None:
        """Write `data` at `offset`, all or nothing with respect to space: raises PoolFull first."""
        size = self.size
        if offset < 0 or offset + len(data) > size:
            raise OutOfBounds(what=what, offset=offset, length=len(data), size=size)
        runs = zero_runs(data, offset)
        needed = sum(end - start for start, end, zero in runs if not zero)
        if needed:
            available = self.pool.free_bytes()
            if needed > available:
                raise PoolFull(needed=needed, available=max(available, 0))
            try:
                for start, end, zero in runs:
                    if not zero:
                        os.posix_fallocate(self.fd, offset + start, end - start)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise PoolFull(needed=needed, available=0) from None
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
        view = memoryview(data)
        for start, end, zero in runs:
            if zero:
                punch_hole(self.fd, offset + start, end - start)
            else:
                _pwrite_all(self.fd, view[start:end], offset + start)

    def punch(self, offset: int, length: int) -> None:
        punch_hole(self.fd, offset, length)

    def sync(self) -> None:
        os.fdatasync(self.fd)


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class RangeReader:
    """A file-like view of one byte range of an open file; read() never passes the range's end."""

    def __init__(self, fd: int, offset: int, length: int):
        self.fd = fd
        self.remaining = length
        os.lseek(fd, offset, os.SEEK_SET)

    def fileno(self) -> int:
        return self.fd

    def read(self, size: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        want = self.remaining if size is None or size < 0 else min(size, self.remaining)
        want = min(want, READ_CHUNK * 4)
        piece = os.read(self.fd, want)
        if not piece:  # truncated under us by a resize: the promised length is zeros
            piece = bytes(want)
        self.remaining -= len(piece)
        return piece

    def __iter__(self) -> Iterator[bytes]:
        while piece := self.read(READ_CHUNK):
            yield piece

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class DrivePool:
    def __init__(self, root: Path, reserve: int = 0):
        self.root = Path(root)
        self.reserve = reserve
        self.root.mkdir(parents=True, exist_ok=True)
        # QEMU runs as its own user (libvirt chowns a drive file while a VM uses it): it must be
        # able to traverse to the files, though not to list them.
        for directory in (self.root, self.root.parent):
            if directory.stat().st_mode & 0o111 != 0o111:
                directory.chmod(directory.stat().st_mode | 0o111)

    def path(self, uuid: str, fmt: str = "raw") -> Path:
        return self.root / f"{uuid}.{'gz' if fmt == 'gzip' else 'raw'}"

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize - self.reserve

    def capacity(self) -> int:
        st = os.statvfs(self.root)
        return st.f_blocks * st.f_frsize

    def exists(self, uuid: str, fmt: str = "raw") -> bool:
        return self.path(uuid, fmt).exists()

    def create(self, uuid: str, size: int) -> None:
        fd = os.open(self.path(uuid), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._sync_dir()

    def resize(self, uuid: str, size: int) -> None:
        fd = os.open(self.path(uuid), os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove(self, uuid: str, fmt: str = "raw") -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(uuid, fmt).unlink()
        self._sync_dir()

    def stored_size(self, uuid: str, fmt: str = "raw") -> int:
        return self.path(uuid, fmt).stat().st_size

    def allocated_bytes(self, uuid: str, fmt: str = "raw") -> int:
        return self.path(uuid, fmt).stat().st_blocks * 512

    @contextlib.contextmanager
    def open(self, uuid: str) -> Iterator[DriveFile]:
        """Open a raw drive for writing under a shared lock (excludes resize, not other writers)."""
        fd = os.open(self.path(uuid), os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield DriveFile(fd, self)
        finally:
            os.close(fd)

    def write(self, uuid: str, offset: int, data: bytes) -> None:
        with self.open(uuid) as drive:
            drive.write(offset, data)
            drive.sync()

    def read(self, uuid: str, offset: int, length: int, fmt: str = "raw") -> "RangeReader":
        """Check bounds now and return a reader of exactly [offset, offset+length).

        The file is opened before this returns, so the read survives a concurrent unlink. The
        reader has a fileno() positioned at `offset`, so a WSGI server can sendfile() it.
        """
        fd = os.open(self.path(uuid, fmt), os.O_RDONLY | os.O_CLOEXEC)
        size = os.fstat(fd).st_size
        if offset < 0 or length < 0 or offset + length > size:
            os.close(fd)
            raise OutOfBounds(what="read", offset=offset, length=length, size=size)
        return RangeReader(fd, offset, length)

    def open_reader(self, uuid: str, fmt: str = "raw"):
        return open(self.path(uuid, fmt), "rb")

    def import_file(self, uuid: str, source: Path, fmt: str) -> int:
        """Copy an operator's file into the pool (sparse for raw); returns the stored size."""
        dest = self.path(uuid, fmt)
        tmp = dest.with_suffix(dest.suffix + ".part")
        size = Path(source).stat().st_size
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
            drive = DriveFile(fd, self)
            with open(source, "rb") as src:
                pos = 0
                while piece := src.read(4 * READ_CHUNK):
                    drive.write(pos, piece, what="import")
                    pos += len(piece)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
        self._sync_dir()
        return size

    def adopt_file(self, uuid: str, source: Path) -> int:
        """Move a file built on the pool's file system into the pool as raw drive `uuid`."""
        dest = self.path(uuid)
        os.replace(source, dest)
        dest.chmod(0o600)
        self._sync_dir()
        return dest.stat().st_size

    def _sync_dir(self) -> None:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def import_gzip(pool: DrivePool, uuid: str, source: Path) -> tuple[int, int]:
    """Store `source` gzip-compressed in the pool (compressing it unless it already is gzip).

    Returns (stored bytes, uncompressed bytes); a corrupt or truncated gzip file is refused.
    """
    from .codec import gunzip_stream, gzip_compressor
    from .errors import BadData

    dest = pool.path(uuid, "gzip")
    tmp = dest.with_suffix(".gz.part")
    with open(source, "rb") as src:
        already = src.read(2) == b"\x1f\x8b"
        src.seek(0)
        transform = gunzip_stream() if already else gzip_compressor(6)
        plain = 0
        with open(tmp, "wb") as out:
            while piece := src.read(4 * READ_CHUNK):
                if already:
                    out.write(piece)
                    data = transform.decompress(piece)
                    plain += len(data)
                    while transform.eof and transform.unused_data:
                        rest, transform = transform.unused_data, gunzip_stream()
                        plain += len(transform.decompress(rest))
                else:
                    plain += len(piece)
                    out.write(transform.compress(piece))
            if already and not transform.eof:
                tmp.unlink()
                raise BadData(reason=f"{source} is a truncated gzip file")
            if not already:
                out.write(transform.flush())
            out.flush()
            os.fsync(out.fileno())
    os.replace(tmp, dest)
    pool._sync_dir()
    return dest.stat().st_size, plain
