"""Helpers for tests of the Containers face (/api/v1): a token client, multipart bodies, projects."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path

from .support import Api, Installation, Response

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "projects" / "python-calc"


class V1:
    """An HTTP client of /api/v1 that carries a bearer token (query parameter or header)."""

    def __init__(self, inst: Installation, token: str | None, user: str | None = None, *, header: bool = False):
        self.api = Api(inst.port, None)
        self.token = token
        self.user = user
        self.header = header

    def request(self, method: str, path: str, body=None, headers=None, token: str | None | bool = True) -> Response:
        token = self.token if token is True else token
        hdrs = dict(headers or {})
        url = "/api/v1" + path
        if token:
            if self.header:
                hdrs["Authorization"] = f"Bearer {token}"
            else:
                url += ("&" if "?" in url else "?") + "access_token=" + token
        return self.api.request(method, url, body=body, headers=hdrs, auth=False)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def put(self, path, **kw):
        return self.request("PUT", path, **kw)

    def post_json(self, path, fields: dict):
        return self.request("POST", path, json.dumps(fields), {"Content-Type": "application/json"})

    def post_form(self, path, fields: dict):
        from urllib.parse import urlencode

        return self.request("POST", path, urlencode(fields), {"Content-Type": "application/x-www-form-urlencoded"})

    def post_multipart(self, path, fields: dict, files: dict | None = None):
        body, ctype = multipart(fields, files or {})
        return self.request("POST", path, body, {"Content-Type": ctype})


def multipart(fields: dict, files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = []
    for name, value in fields.items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                   f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def targz(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def new_account(inst: Installation, **kw) -> V1:
    user = inst.create_user()
    out = inst.admin("token", "create", "--user", user.uuid).stdout.split()
    return V1(inst, out[out.index("token") + 1], user.uuid, **kw)


def make_project(inst: Installation, tmp: Path, *, user: str | None = None, image: str = "base",
                 init: str | None = None, files: dict[str, bytes] | None = None, slots: int = 1,
                 project_id: str | None = None, name: str = "proj") -> str:
    """A project from a directory: the example's config.json, `init` as workspace_init, `files` as workspace/."""
    src = tmp / uuid.uuid4().hex
    (src / "workspace").mkdir(parents=True)
    (src / "config.json").write_text((EXAMPLE / "config.json").read_text())
    if init is not None:
        (src / "workspace_init").write_text(init)
    for rel, data in (files or {}).items():
        (src / "workspace" / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / "workspace" / rel).write_bytes(data)
    args = ["project", "create", "--name", name, "--image", image, "--from", str(src), "--slots", str(slots)]
    args += ["--user", user] if user else ["--template"]
    if project_id:
        args += ["--id", project_id]
    out = inst.admin(*args).stdout.split()
    return out[out.index("project") + 1]
