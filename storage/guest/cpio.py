"""A writer for the "newc" cpio format the kernel unpacks as an initramfs.

Written in Python so that no root, no loop mount and no `cpio` tool are needed, and so that
device nodes can be included as an unprivileged user. Output is deterministic (every mtime is 0,
inode numbers are sequential), so identical inputs give identical bytes.
"""

from __future__ import annotations

import stat
from pathlib import PurePosixPath

_TRAILER = "TRAILER!!!"


class CpioWriter:
    """Collects entries in memory; `getvalue()` returns the archive. Parents are added on demand."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 0
        self._seen: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1,
               rdev: tuple[int, int] = (0, 0)) -> None:
        self._ino += 1
        self._parts.append(_record(self._ino, name, mode, data, nlink, rdev))

    def _name(self, path: str) -> str:
        name = str(PurePosixPath("/", path)).lstrip("/")
        if not name or name in self._seen:
            raise ValueError(f"cpio: empty or duplicate path {path!r}")
        parent = str(PurePosixPath(name).parent)
        if parent != "." and parent not in self._seen:
            self.add_dir(parent)
        self._seen.add(name)
        return name

    def exists(self, path: str) -> bool:
        return str(PurePosixPath("/", path)).lstrip("/") in self._seen

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        if self.exists(path):
            return
        self._entry(self._name(path), stat.S_IFDIR | mode, nlink=2)

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(self._name(path), stat.S_IFREG | mode, data)

    def add_symlink(self, path: str, target: str) -> None:
        self._entry(self._name(path), stat.S_IFLNK | 0o777, target.encode())

    def add_char_device(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(self._name(path), stat.S_IFCHR | mode, rdev=(major, minor))

    def getvalue(self) -> bytes:
        return b"".join(self._parts) + _record(0, _TRAILER, 0, b"", 1, (0, 0))


def _record(ino: int, name: str, mode: int, data: bytes, nlink: int, rdev: tuple[int, int]) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    # newc pads the header+name and the data each to a multiple of four bytes
    return b"".join([header, encoded, bytes(-(len(header) + len(encoded)) % 4), data, bytes(-len(data) % 4)])
