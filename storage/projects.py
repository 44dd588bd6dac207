"""Project sources and their stored workspace files (one clean tar.gz per project under the state dir).

A project source is a directory or a tar.gz holding `config.json`, an optional `workspace_init` script
and a `workspace/` tree (laid into /home/user/workspace).
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from . import workspace_tar
from .errors import BadData

MAX_SCRIPT = 256 * 1024
MAX_CONFIG = 1024 * 1024


@dataclass
class ProjectSource:
    config: str            # config.json's text
    workspace_init: str    # "" when the source has none
    files: bytes           # clean tar.gz of workspace/, relative names


def _text(data: bytes, what: str, limit: int) -> str:
    if len(data) > limit:
        raise BadData(reason=f"{what} is larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadData(reason=f"{what} is not UTF-8 text") from None


def read_source(path: Path, *, max_unpacked: int) -> ProjectSource:
    path = Path(path)
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise BadData(reason=f"{path}: no config.json")
        init = path / "workspace_init"
        tree = path / "workspace"
        files = workspace_tar.pack_dir(tree, max_unpacked=max_unpacked) if tree.is_dir() else _empty()
        return ProjectSource(_text(config.read_bytes(), "config.json", MAX_CONFIG),
                             _text(init.read_bytes(), "workspace_init", MAX_SCRIPT) if init.is_file() else "",
                             files)
    if not path.is_file():
        raise BadData(reason=f"{path}: no such directory or file")
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            config = init = None
            rest = io.BytesIO()
            with tarfile.open(fileobj=rest, mode="w:gz") as out:
                for member in tar.getmembers():
                    name = "/".join(p for p in member.name.split("/") if p not in ("", "."))
                    if name == "config.json" and member.isreg():
                        config = tar.extractfile(member).read(MAX_CONFIG + 1)
                    elif name == "workspace_init" and member.isreg():
                        init = tar.extractfile(member).read(MAX_SCRIPT + 1)
                    elif name == "workspace" or name.startswith("workspace/"):
                        out.addfile(member, tar.extractfile(member) if member.isreg() else None)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BadData(reason=f"{path}: not a readable tar.gz ({type(exc).__name__})") from None
    if config is None:
        raise BadData(reason=f"{path}: no config.json at the top of the archive")
    files = workspace_tar.clean(rest.getvalue(), max_unpacked=max_unpacked)
    return ProjectSource(_text(config, "config.json", MAX_CONFIG),
                         _text(init, "workspace_init", MAX_SCRIPT) if init is not None else "", files)


def _empty() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz"):
        pass
    return raw.getvalue()


class ProjectFiles:
    """Stored workspace archives of projects, by project id."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, project_id: str) -> Path:
        return self.root / f"{project_id}.tar.gz"

    def save(self, project_id: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{project_id}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path(project_id))

    def load(self, project_id: str) -> bytes:
        try:
            return self._path(project_id).read_bytes()
        except FileNotFoundError:
            return _empty()

    def remove(self, project_id: str) -> None:
        self._path(project_id).unlink(missing_ok=True)


class WorkspaceUploads(ProjectFiles):
    """The `files` archive a workspace was created with, kept until the workspace is removed (a create
    that an agent restart interrupts lays it again)."""
