"""Files of a running workspace (contract endpoints 8-10): path rules and error codes.

Paths arrive Base64-encoded (standard or URL-safe alphabet, padding optional) relative to
/home/user/workspace; they are decoded, normalised and kept inside it here, before any guest call.
The guest side is reached through a `guest(workspace_id)` factory returning a context manager (the
guest conversation, held for the request) that gives an object with `stat(path)`, `read(path, limit)`,
`write(path, data)` and `listdir(path)` (workspace_guest.py).
"""

from __future__ import annotations

import base64
import binascii
import logging
import posixpath

from .containers_errors import ContainersError
from .workspaces import Workspaces

log = logging.getLogger("openhosting.workspaces")

ROOT = "/home/user/workspace"
MAX_FILE = 16 * 1024**2


class GuestFileError(Exception):
    """Raised by a guest adapter: `kind` is missing | notdir | denied | toolarge | failed."""

    def __init__(self, kind: str, detail: str = ""):
        self.kind = kind
        super().__init__(f"{kind}: {detail}")


def decode_path(encoded: str | None) -> str:
    """The workspace-relative path a Base64 segment names; 400/1105 when it is not Base64 of UTF-8."""
    if not encoded:
        return ""
    text = encoded.strip().replace("%2F", "/").replace("%2f", "/")
    alphabet = "-_" if ("-" in text or "_" in text) else "+/"
    text = text.rstrip("=")
    if (len(text) % 4 == 1 or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789" + alphabet
                                  for c in text)):
        raise ContainersError(400, 1105, "failed to decode the file path from Base64")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=alphabet.encode(), validate=True)
    except (binascii.Error, ValueError):
        raise ContainersError(400, 1105, "failed to decode the file path from Base64") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ContainersError(400, 1105, "failed to decode the file path from UTF-8 format") from None


def inside(relative: str) -> str | None:
    """The absolute guest path of `relative` (absolute ones only inside the workspace), or None when it
    leaves the workspace."""
    if "\x00" in relative:
        return None
    joined = relative if relative.startswith("/") else posixpath.join(ROOT, relative)
    path = posixpath.normpath(joined)
    if path.startswith("//"):
        path = path[1:]
    if path == ROOT or path.startswith(ROOT + "/"):
        return path
    return None


class _Reach:
    """Enter the guest conversation; a failure to reach the guest becomes `failure` (logged)."""

    def __init__(self, conversation, workspace_id: str, failure: ContainersError):
        self.conversation = conversation
        self.workspace_id = workspace_id
        self.failure = failure

    def __enter__(self):
        try:
            return self.conversation.__enter__()
        except Exception:
            log.exception("reaching the guest of workspace %s failed", self.workspace_id)
            raise self.failure from None

    def __exit__(self, *exc):
        try:
            self.conversation.__exit__(*exc)
        except Exception:
            log.exception("closing the guest conversation of workspace %s failed", self.workspace_id)
        return False


def read_only(config: str, path: str) -> bool:
    """Whether `path` lies at or under one of the configuration's `files.read_only` paths."""
    import json

    try:
        entries = json.loads(config).get("files", {}).get("read_only", [])
    except (ValueError, AttributeError):
        return False
    for entry in entries if isinstance(entries, list) else []:
        target = inside(str(entry))
        if target and (path == target or path.startswith(target.rstrip("/") + "/")):
            return True
    return False


class WorkspaceFiles:
    def __init__(self, workspaces: Workspaces, guest):
        self.workspaces = workspaces
        self.guest = guest

    def _guest(self, workspace_id: str, failure: ContainersError) -> _Reach:
        return _Reach(self.guest(workspace_id), workspace_id, failure)

    def upload(self, user: str, workspace_id: str, filepath: str | None, data: bytes | None) -> str:
        ws = self.workspaces.running(user, workspace_id, 1008)
        if data is None:
            raise ContainersError(400, 202504, "filedata not provided")
        if not filepath:
            raise ContainersError(400, 202604, "filepath not provided")
        if len(data) > MAX_FILE:
            raise ContainersError(413, 202511, "file size limit exceeded (max file size is 16MiB)")
        path = inside(filepath)
        denied = ContainersError(400, 202602, "permission denied to upload a file to the provided filepath")
        if path is None or path == ROOT or read_only(ws.config, path):
            raise denied
        failed = ContainersError(500, 1103, "unable to upload file")
        try:
            with self._guest(workspace_id, failed) as guest:
                parent = guest.stat(posixpath.dirname(path))
                if parent is None or parent["type"] != "dir":
                    raise ContainersError(400, 202601, "filepath not found")
                current = guest.stat(path)
                if current is not None and current["type"] != "file":
                    raise ContainersError(400, 202612, "filepath exists and is not a file")
                guest.write(path, data)
        except GuestFileError as exc:
            if exc.kind == "denied":
                raise denied from None
            if exc.kind in ("missing", "notdir"):
                raise ContainersError(400, 202601, "filepath not found") from None
            log.warning("upload to workspace %s failed: %s", workspace_id, exc)
            raise failed from None
        return path

    def _target(self, user: str, workspace_id: str, encoded: str | None, code: int) -> str:
        self.workspaces.running(user, workspace_id, code)
        path = inside(decode_path(encoded))
        if path is None:
            raise ContainersError(400, 1102, "permission denied to read the file")
        return path

    def download(self, user: str, workspace_id: str, encoded: str) -> tuple[str, bytes]:
        path = self._target(user, workspace_id, encoded, 1108)
        failed = ContainersError(500, 1103, "unable to read file")
        try:
            with self._guest(workspace_id, failed) as guest:
                info = guest.stat(path)
                if info is None:
                    raise ContainersError(400, 1101, "file not found")
                if info["type"] != "file":
                    raise ContainersError(400, 1101, "provided path is not a file")
                if info["size"] > MAX_FILE:
                    raise ContainersError(413, 1111, "file size limit exceeded (max file size is 16MiB)")
                data = guest.read(path, MAX_FILE)
        except GuestFileError as exc:
            if exc.kind == "toolarge":
                raise ContainersError(413, 1111, "file size limit exceeded (max file size is 16MiB)") from None
            raise _read_error(exc, failed) from None
        return posixpath.basename(path), data

    def listing(self, user: str, workspace_id: str, encoded: str | None) -> dict:
        path = self._target(user, workspace_id, encoded, 1008)
        failed = ContainersError(500, 1103, "could not list files")
        try:
            with self._guest(workspace_id, failed) as guest:
                info = guest.stat(path)
                if info is None:
                    raise ContainersError(400, 1101, "file not found")
                if info["type"] != "dir":
                    raise ContainersError(400, 1101, "provided path is not a directory")
                entries = guest.listdir(path)
        except GuestFileError as exc:
            raise _read_error(exc, failed) from None
        files, dirs = [], []
        for entry in sorted(entries, key=lambda e: e["name"]):
            item = {"name": entry["name"], "perm": int(oct(entry["mode"] & 0o777)[2:]), "size": entry["size"],
                    "time": int(entry["mtime"])}
            (dirs if entry["type"] == "dir" else files).append(item)
        return {"listed_dir": path, "files": files, "dirs": dirs}


def _read_error(exc: GuestFileError, failed: ContainersError) -> ContainersError:
    if exc.kind == "denied":
        return ContainersError(400, 1102, "permission denied to read the file")
    if exc.kind in ("missing", "notdir"):
        return ContainersError(400, 1101, "file not found")
    return failed
