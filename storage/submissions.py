"""Submission files under the state directory: the uploaded source, the clean archive laid into the
VM, and every result stream, one file per name in a directory per submission.

Streams are written through `StreamWriter`, which keeps at most `cap` bytes (a note of what was cut is
the runner's business) and fsyncs on close, so a stream whose size the database records is on disk.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tarfile
from pathlib import Path

from .errors import BadData

_NAME = re.compile(r"^[a-z_]{1,40}(\.tar\.gz)?$")


class StreamWriter:
    """A stream being written: `write` keeps bytes up to `cap`; `truncated` tells whether more came."""

    def __init__(self, path: Path, cap: int):
        self.path = path
        self.cap = cap
        self.size = 0
        self.truncated = False
        self._f = open(path, "wb")

    def write(self, data: bytes) -> None:
        room = self.cap - self.size
        if room <= 0:
            self.truncated = self.truncated or bool(data)
            return
        if len(data) > room:
            self.truncated = True
            data = data[:room]
        self._f.write(data)
        self.size += len(data)

    def close(self) -> int:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
        if self.size == 0:
            self.path.unlink(missing_ok=True)
        return self.size


class SubmissionFiles:
    def __init__(self, root: Path):
        self.root = Path(root)

    def folder(self, submission_id: int) -> Path:
        return self.root / str(int(submission_id))

    def _path(self, submission_id: int, name: str) -> Path:
        if not _NAME.match(name):
            raise BadData(reason=f"bad stream name {name[:40]!r}")
        return self.folder(submission_id) / name

    def save(self, submission_id: int, name: str, data: bytes) -> int:
        folder = self.folder(submission_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = self._path(submission_id, name)
        tmp = path.with_name("." + path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return len(data)

    def writer(self, submission_id: int, name: str, cap: int) -> StreamWriter:
        self.folder(submission_id).mkdir(parents=True, exist_ok=True)
        return StreamWriter(self._path(submission_id, name), cap)

    def load(self, submission_id: int, name: str) -> bytes | None:
        try:
            return self._path(submission_id, name).read_bytes()
        except FileNotFoundError:
            return None

    def remove(self, submission_id: int) -> None:
        shutil.rmtree(self.folder(submission_id), ignore_errors=True)


def without(clean_targz: bytes, read_only: list[str]) -> tuple[bytes, list[str]]:
    """A copy of a clean (workspace-relative) tar.gz without the members at or below `read_only`
    paths; the skipped names. Paths are workspace-relative (absolute ones under the workspace too)."""
    prefixes = []
    for path in read_only:
        path = path.strip()
        if path.startswith("/home/user/workspace"):
            path = path[len("/home/user/workspace"):]
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if parts:
            prefixes.append("/".join(parts))
    if not prefixes:
        return clean_targz, []
    skipped: list[str] = []
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(clean_targz), mode="r:gz") as src, \
            tarfile.open(fileobj=out, mode="w:gz") as dst:
        for member in src:
            name = "/".join(p for p in member.name.split("/") if p not in ("", "."))
            if any(name == p or name.startswith(p + "/") for p in prefixes):
                skipped.append(name)
                continue
            dst.addfile(member, src.extractfile(member) if member.isreg() else None)
    return out.getvalue(), skipped


def concat(first: bytes, second: bytes) -> tuple[bytes, int, int]:
    """One tar.gz with the members of `first` and then those of `second` (both clean tar.gz), so
    that one extraction lays `second` over `first` (a later member replaces an earlier file of the
    same name, as a second extraction would); with the member counts of each. A submission's VM
    extracts once instead of twice: under TCG each extraction is four fresh execs (tar and gzip,
    to list and to extract) in a VM that translates every program anew."""
    out = io.BytesIO()
    counts = []
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as dst:
        for data in (first, second):
            n = 0
            if data:
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as src:
                    for member in src:
                        dst.addfile(member, src.extractfile(member) if member.isreg() else None)
                        n += 1
            counts.append(n)
    return out.getvalue(), counts[0], counts[1]


def pack_auxdata(trees: dict[str, bytes], limit: int) -> bytes | None:
    """One tar.gz with a top directory per key from uncompressed tar streams of each auxdata dir
    (members as `tar -C DIR .` wrote them); None when there is nothing. Only directories, regular
    files and symbolic links (never followed) are kept; at most `limit` bytes of file data."""
    if not trees:
        return None
    out = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=out, mode="w:gz") as dst:
        for key, raw in trees.items():
            top = tarfile.TarInfo(key)
            top.type, top.mode = tarfile.DIRTYPE, 0o755
            dst.addfile(top)
            try:
                with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as src:
                    for member in src:
                        parts = [p for p in member.name.split("/") if p not in ("", ".")]
                        if not parts or ".." in parts or member.name.startswith("/"):
                            continue
                        if not (member.isreg() or member.isdir() or member.issym()):
                            continue
                        total += member.size if member.isreg() else 0
                        if total > limit:
                            raise BadData(reason=f"auxdata is larger than {limit} bytes")
                        member.name = "/".join([key, *parts])
                        member.uid = member.gid = 0
                        member.uname = member.gname = ""
                        dst.addfile(member, src.extractfile(member) if member.isreg() else None)
            except (tarfile.TarError, EOFError):
                pass   # a cut stream (output cap): what was read so far stays
    return out.getvalue()
