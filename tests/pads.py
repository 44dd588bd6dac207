"""Helpers of the pads face's tests: organizations, users and keys made with openhosting-admin, and
an HTTP client that speaks with a pads API key."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

from .support import Api, Installation, Response


@dataclass
class PadUser:
    uuid: str
    secret: str
    email: str
    key: str


def make_org(inst: Installation, *extra: str) -> str:
    name = f"org-{secrets.token_hex(4)}"
    inst.admin("org", "create", "--name", name, *extra)
    return name


def make_user(inst: Installation, name: str, org: str | None = None, role: str = "member",
              email: str | None = None) -> PadUser:
    email = email or f"{name.lower().replace(' ', '.')}.{secrets.token_hex(3)}@example.test"
    args = ["user", "create", "--name", name, "--email", email]
    if org:
        args += ["--org", org, "--role", role]
    out = dict(line.split(" ", 1) for line in inst.admin(*args).stdout.splitlines())
    key = inst.admin("apikey", "create", "--user", email).stdout.split()[1]
    return PadUser(out["user"], out["secret"], email, key)


class PadApi:
    """Requests with `Authorization: Token token="<key>"` (or none); bodies as forms or JSON."""

    def __init__(self, inst: Installation, user: PadUser | None):
        self.api = Api(inst.port, None)
        self.user = user

    def request(self, method: str, path: str, form: dict | None = None, json_body=None,
                headers: dict | None = None, auth: bool = True, timeout: float = 120) -> Response:
        hdrs = dict(headers or {})
        if auth and self.user:
            hdrs.setdefault("Authorization", f'Token token="{self.user.key}"')
        body = None
        if form is not None:
            body = urlencode(form)
            hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif json_body is not None:
            body = json.dumps(json_body)
            hdrs["Content-Type"] = "application/json"
        return self.api.request(method, path, body=body, headers=hdrs, auth=False, timeout=timeout)

    def get(self, path: str, **kw) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, form: dict | None = None, **kw) -> Response:
        return self.request("POST", path, form=form if form is not None else ({} if "json_body" not in kw else None),
                            **kw)

    def put(self, path: str, form: dict | None = None, **kw) -> Response:
        return self.request("PUT", path, form=form, **kw)

    def pad(self, **fields) -> dict:
        r = self.post("/api/pads", fields)
        assert r.status == 200, r.text
        return r.json()
