"""Files uploaded for a sandbox run, kept on disk between the request and the run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from .errors import BadData

_SAFE_NAME = re.compile(r"^[A-Za-z0-9._+\- ]{1,128}$")


def check_name(name: str) -> str:
    """A plain file name: no directories, no dot-dot, no control characters."""
    base = name
    if not _SAFE_NAME.match(base) or base in (".", ".."):
        raise BadData(reason=f"bad file name {name[:64]!r}: use letters, digits, '.', '_', '-', '+', ' '")
    return base


class UploadStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def save(self, key: str, files: list[tuple[str, bytes]]) -> int:
        """Store files under `key`; returns the byte count. Names are checked by the caller."""
        folder = self.root / key
        folder.mkdir(parents=True, exist_ok=True)
        total = 0
        for name, data in files:
            with open(folder / name, "wb") as f:
                f.write(data)
            total += len(data)
        return total

    def load(self, key: str) -> dict[str, bytes]:
        folder = self.root / key
        if not folder.is_dir():
            return {}
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}

    def remove(self, key: str) -> None:
        shutil.rmtree(self.root / key, ignore_errors=True)

    def keys(self) -> list[str]:
        return [p.name for p in self.root.iterdir()] if self.root.is_dir() else []


def total_size(files: list[tuple[str, bytes]]) -> int:
    return sum(len(d) for _, d in files)


__all__ = ["UploadStore", "check_name", "total_size"]
