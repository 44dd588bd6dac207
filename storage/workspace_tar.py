"""Workspace archives: check an uploaded tar.gz and rewrite it as a clean one, relative to the workspace.

The contract (workspaces-api.md §C): one top-level `workspace/` directory laid over
/home/user/workspace; if not every member is under `workspace/`, members are workspace-relative.
Refused (BadData): unreadable archives, absolute names, `..`, devices and fifos, symlinks and hard links
that lead outside the workspace, members reached through a symlink, and more than `max_unpacked` bytes.
What comes out holds only directories, regular files and checked links, with sane modes and no owners,
so that extracting it inside the guest (as the workspace's user) cannot write outside the workspace.
"""

from __future__ import annotations

import gzip
import io
import posixpath
import tarfile
import zlib

from .errors import BadData

MAX_MEMBERS = 100_000


def _relative(name: str) -> str:
    """A member name as a normalized workspace-relative path; BadData when it could leave the workspace."""
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise BadData(reason=f"archive member {name[:80]!r}: absolute or malformed name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise BadData(reason=f"archive member {name[:80]!r}: '..' is not allowed")
    return "/".join(parts)


def _inside(link_dir: str, target: str) -> bool:
    """Whether `target` (a symlink's text, relative to `link_dir`) stays inside the workspace root."""
    if target.startswith("/") or not target:
        return False
    depth = 0
    for part in posixpath.join(link_dir, target).split("/"):
        if part in ("", "."):
            continue
        depth += -1 if part == ".." else 1
        if depth < 0:
            return False
    return True


def clean(data: bytes, *, max_unpacked: int) -> bytes:
    """A checked copy of the tar.gz `data`, member names relative to the workspace."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as src:
            members = src.getmembers()
            if len(members) > MAX_MEMBERS:
                raise BadData(reason="archive has too many members")
            under = [m for m in members if _relative(m.name) not in ("",)]
            strip = bool(under) and all(_relative(m.name).split("/")[0] == "workspace" for m in under)
            out = io.BytesIO()
            total = 0
            links: set[str] = set()
            files: set[str] = set()
            with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz, \
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as dst:
                for member in members:
                    name = _relative(member.name)
                    if strip:
                        name = name[len("workspace"):].lstrip("/")
                    if not name:
                        continue
                    if any("/".join(name.split("/")[:i]) in links for i in range(1, name.count("/") + 1)):
                        raise BadData(reason=f"archive member {member.name[:80]!r} lies behind a symlink")
                    info = tarfile.TarInfo(name)
                    info.mtime = member.mtime
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    if member.isdir():
                        info.type, info.mode = tarfile.DIRTYPE, (member.mode & 0o777) | 0o700
                        dst.addfile(info)
                        links.discard(name)
                    elif member.isreg():
                        total += member.size
                        if total > max_unpacked:
                            raise BadData(reason=f"archive unpacks to more than {max_unpacked} bytes")
                        info.size, info.mode = member.size, (member.mode & 0o777) | 0o600
                        dst.addfile(info, src.extractfile(member))
                        files.add(name)
                        links.discard(name)
                    elif member.issym():
                        if not _inside(posixpath.dirname(name), member.linkname):
                            raise BadData(reason=f"archive member {member.name[:80]!r} links outside the workspace")
                        info.type, info.linkname, info.mode = tarfile.SYMTYPE, member.linkname, 0o777
                        dst.addfile(info)
                        links.add(name)
                    elif member.islnk():
                        target = _relative(member.linkname)
                        if strip:
                            target = target[len("workspace"):].lstrip("/")
                        if target not in files:
                            raise BadData(reason=f"archive member {member.name[:80]!r}: hard link to "
                                                 "something that is not an earlier file of the archive")
                        info.type, info.linkname, info.mode = tarfile.LNKTYPE, target, member.mode & 0o777
                        dst.addfile(info)
                        files.add(name)
                    else:
                        raise BadData(reason=f"archive member {member.name[:80]!r}: devices and fifos "
                                             "are not allowed")
            return out.getvalue()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise BadData(reason=f"not a readable tar.gz archive ({type(exc).__name__})") from None


def names(data: bytes) -> list[str]:
    """Member names of a (clean) archive, for tests and listings."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.getnames()


def pack_dir(directory, *, max_unpacked: int) -> bytes:
    """A tar.gz of the tree `directory` (relative names), checked as an upload would be."""
    import os

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for entry in sorted(os.listdir(directory)):
            tar.add(os.path.join(directory, entry), arcname=entry)
    return clean(raw.getvalue(), max_unpacked=max_unpacked)
