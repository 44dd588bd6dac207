"""OpenDevelop face: /api/images and /api/sandboxes (JSON out; multipart, urlencoded or JSON in)."""

from __future__ import annotations

import json
import time

import falcon

from ..bodies import read_form
from ..errors import Usage
from ..services.sandboxes import Sandboxes

FIELDS = ("image", "cmd", "timeout")


def _json(resp: falcon.Response, value, status=falcon.HTTP_200) -> None:
    resp.status = status
    resp.content_type = "application/json"
    resp.text = json.dumps(value)


class Images:
    def __init__(self, sandboxes: Sandboxes):
        self.sandboxes = sandboxes

    def on_get(self, req, resp):
        _json(resp, self.sandboxes.images())


class SandboxCollection:
    def __init__(self, sandboxes: Sandboxes, max_body: int):
        self.sandboxes = sandboxes
        self.max_body = max_body

    def on_get(self, req, resp):
        _json(resp, {"sandboxes": self.sandboxes.list(req.context.user)})

    def on_post(self, req, resp):
        fields, files = self._read(req)
        sandbox_id = self.sandboxes.create(req.context.user, fields.get("image"), fields.get("cmd"),
                                           fields.get("timeout"), files)
        resp.set_header("Location", f"/api/sandboxes/{sandbox_id}")
        if req.get_param_as_bool("wait", default=False):
            info = self.sandboxes.info(req.context.user, sandbox_id)
            deadline = time.monotonic() + info["timeout"] + 60
            _json(resp, self.sandboxes.wait(req.context.user, sandbox_id, deadline))
        else:
            _json(resp, sandbox_id, falcon.HTTP_201)

    def _read(self, req) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
        form = read_form(req, self.max_body)
        fields: dict[str, str] = {}
        for key, value in form.fields.items():
            if key not in FIELDS:
                raise Usage("unknown form field {name!r}", name=str(key)[:64])
            if value is None:  # JSON null: not given
                continue
            fields[key] = json.dumps(value) if key == "cmd" and isinstance(value, list) else str(value)
        return fields, [(f.filename, f.data) for f in form.files]


class SandboxItem:
    def __init__(self, sandboxes: Sandboxes):
        self.sandboxes = sandboxes

    def on_get(self, req, resp, sandbox_id):
        _json(resp, self.sandboxes.info(req.context.user, sandbox_id))

    def on_delete(self, req, resp, sandbox_id):
        self.sandboxes.delete(req.context.user, sandbox_id)
        resp.status = falcon.HTTP_204


def add_routes(app: falcon.App, sandboxes: Sandboxes, max_body: int) -> None:
    app.add_route("/api/images", Images(sandboxes))
    app.add_route("/api/sandboxes", SandboxCollection(sandboxes, max_body))
    app.add_route("/api/sandboxes/{sandbox_id}", SandboxItem(sandboxes))
