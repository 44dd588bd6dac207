"""OpenDevelop face: /api/images and /api/sandboxes (JSON out, multipart or form in)."""

from __future__ import annotations

import json
import time

import falcon

from ..errors import TooLarge, Usage
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
        if req.content_length is not None and req.content_length > self.max_body:
            raise TooLarge(limit=self.max_body)
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
        content_type = (req.content_type or "").lower()
        fields: dict[str, str] = {}
        files: list[tuple[str, bytes]] = []
        if content_type.startswith("multipart/form-data"):
            budget = self.max_body
            for part in req.get_media():
                data = part.stream.read(budget + 1)
                budget -= len(data)
                if budget < 0:
                    raise TooLarge(limit=self.max_body)
                if part.filename is not None:
                    files.append((part.filename or part.name or "", data))
                elif part.name in FIELDS:
                    fields[part.name] = data.decode("utf-8", errors="replace")
                else:
                    raise Usage("unknown form field {name!r}", name=(part.name or "")[:64])
        elif content_type.startswith("application/x-www-form-urlencoded") or content_type.startswith("application/json"):
            raw = req.bounded_stream.read(self.max_body + 1)
            if len(raw) > self.max_body:
                raise TooLarge(limit=self.max_body)
            if content_type.startswith("application/json"):
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    raise Usage("body is not valid JSON") from None
                except RecursionError:
                    raise Usage("body is JSON nested too deeply") from None
                if not isinstance(body, dict):
                    raise Usage("JSON body must be an object")
                if isinstance(body.get("cmd"), list):
                    body["cmd"] = json.dumps(body["cmd"])
            else:
                from urllib.parse import parse_qsl

                body = dict(parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True))
            for key, value in body.items():
                if key not in FIELDS:
                    raise Usage("unknown field {name!r}", name=str(key)[:64])
                fields[key] = str(value)
        else:
            raise Usage("send multipart/form-data (files, image, cmd, timeout)")
        return fields, files


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
