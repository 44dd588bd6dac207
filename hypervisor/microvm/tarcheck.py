"""The host's check of a tar.gz before oh-guest extracts it into a workspace.

Accepted: regular files, directories, symbolic links and hard links, with relative names without
``..``; a symbolic link whose target, resolved through the archive's other links, stays inside the
destination; a hard link to an earlier regular file of the archive; no member below a symbolic link
of the archive. A small one is then sent unpacked (`plain`). Bounded: the compressed size, the unpacked size (every member's data plus its
512-byte headers) and the number of members. Refused with `GuestUnsafeArchive` (naming the member)
or `GuestTooLarge`; a stream that is not a tar.gz is `GuestBadArchive`.

The guest checks once more what only it can see: no member may go below a symbolic link that already
exists in the destination (nothing to check in an empty one), and tar runs as the workspace user.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from collections import deque
from dataclasses import dataclass

from .guestd import GuestBadArchive, GuestTooLarge, GuestUnsafeArchive


@dataclass(frozen=True)
class Limits:
    compressed: int = 16 << 20
    unpacked: int = 256 << 20
    members: int = 20000


LIMITS = Limits()
#: For one archive made of two that were each checked against LIMITS (storage.submissions.concat).
TWO_PARTS = Limits(compressed=2 * LIMITS.compressed, unpacked=2 * LIMITS.unpacked, members=2 * LIMITS.members)
_MAX_HOPS = 40
#: A checked archive up to this size unpacked travels to the guest as a plain tar (`plain`).
PLAIN_MAX = 4 << 20


def _parts(name: str) -> list[str]:
    return [p for p in name.split("/") if p not in ("", ".")]


def _name(member: tarfile.TarInfo) -> str:
    name = member.name
    if name.startswith("/") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise GuestUnsafeArchive(reason=f"member {name!r}: an absolute name or a control character")
    parts = _parts(name)
    if ".." in parts:
        raise GuestUnsafeArchive(reason=f"member {name!r}: a name with ..")
    return "/".join(parts)


def _stays_inside(link: str, target: str, links: dict[str, str]) -> bool:
    """Whether ``target`` of the link named ``link`` resolves inside the root, following the
    archive's links (those not in the archive are taken for directories: the guest refuses a
    member below an existing link)."""
    if target.startswith("/"):
        return False
    todo = deque(link.split("/")[:-1] + target.split("/"))
    stack: list[str] = []
    hops = 0
    while todo:
        part = todo.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return False
            stack.pop()
            continue
        stack.append(part)
        inner = links.get("/".join(stack))
        if inner is not None:
            hops += 1
            if hops > _MAX_HOPS or inner.startswith("/"):
                return False
            stack.pop()
            todo.extendleft(reversed(inner.split("/")))
    return True


def check(data: bytes, limits: Limits = LIMITS) -> int:
    """Refuse ``data`` (a tar.gz) unless safe to extract; the number of members."""
    if len(data) > limits.compressed:
        raise GuestTooLarge(reason=f"the archive is more than {limits.compressed} bytes")
    members: list[tuple[str, tarfile.TarInfo]] = []
    unpacked = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|gz") as tar:
            for member in tar:
                unpacked += 512 + (member.size + 511) // 512 * 512
                if unpacked > limits.unpacked:
                    raise GuestTooLarge(reason=f"the archive unpacks to more than {limits.unpacked} bytes")
                if len(members) >= limits.members:
                    raise GuestTooLarge(reason=f"the archive has more than {limits.members} members")
                if not (member.isreg() or member.isdir() or member.issym() or member.islnk()) or member.issparse():
                    raise GuestUnsafeArchive(reason=f"member {member.name!r}: a device, FIFO or other special file")
                members.append((_name(member), member))
    except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        raise GuestBadArchive(reason=f"not a tar.gz archive: {exc}") from exc
    links = {name: m.linkname for name, m in members if m.issym()}
    files: set[str] = set()
    for name, m in members:
        parts = name.split("/") if name else []
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in links:
                raise GuestUnsafeArchive(reason=f"member {m.name!r}: below a symbolic link of the archive")
        if m.issym() and not _stays_inside(name, m.linkname, links):
            raise GuestUnsafeArchive(reason=f"member {m.name!r}: a symbolic link out of the destination")
        if m.islnk():
            target = "/".join(_parts(m.linkname))
            if m.linkname.startswith("/") or ".." in _parts(m.linkname) or target not in files:
                raise GuestUnsafeArchive(reason=f"member {m.name!r}: a hard link to something not an earlier file")
        if m.isreg():
            files.add(name)
    return len(members)


def plain(data: bytes, most: int = PLAIN_MAX) -> bytes | None:
    """The tar inside ``data`` (a checked tar.gz of one gzip member) when it is at most ``most``
    bytes, else None: the guest then extracts it without starting gzip."""
    unzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = unzip.decompress(data, most + 1)
    except zlib.error:
        return None
    if len(out) > most or not unzip.eof or unzip.unused_data:
        return None
    return out


def canonical(data: bytes, most: int = PLAIN_MAX) -> bytes | None:
    """``data`` (a tar.gz `check` accepted) written again as a plain tar in the one form oh-guest
    extracts itself (guest/lay.h): GNU format as tarfile writes it, names without ``.``, empty
    parts or a leading ``/`` (hard link targets alike), only the fields an extraction uses. None
    when it would be larger than ``most`` bytes (the guest's tar then reads the tar.gz)."""
    out = io.BytesIO()
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|gz") as src, \
                tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as dst:
            for member in src:
                name = _name(member)
                if not name:
                    continue                 # "." itself: the destination, left as it is
                copy = tarfile.TarInfo(name)
                copy.type, copy.mode, copy.mtime = member.type, member.mode, member.mtime
                if member.issym():
                    copy.linkname = member.linkname
                elif member.islnk():
                    copy.linkname = "/".join(_parts(member.linkname))
                if member.isreg():
                    copy.type, copy.size = tarfile.REGTYPE, member.size
                    dst.addfile(copy, src.extractfile(member))
                else:
                    dst.addfile(copy)
                if out.tell() > most:
                    return None
            end = dst.offset + 2 * tarfile.BLOCKSIZE
    except (tarfile.TarError, zlib.error, EOFError, OSError):
        return None
    # the two end blocks, without tarfile's padding to a whole record (up to 10 KiB more to send)
    return out.getvalue()[:end] if end <= most else None
