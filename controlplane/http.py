"""Response helpers shared by the cloud API resources (request bodies: `controlplane/bodies.py`)."""

from __future__ import annotations

import falcon

from . import formats

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"


def _as_json(req: falcon.Request) -> bool:
    return formats.wants_json(req.get_header("Accept"))


def _send(req, resp, text: str) -> None:
    as_json = _as_json(req)
    resp.content_type = JSON if as_json else TEXT
    resp.text = text


def send_one(req: falcon.Request, resp: falcon.Response, obj) -> None:
    _send(req, resp, formats.render_one(obj, _as_json(req)))


def send_many(req: falcon.Request, resp: falcon.Response, objs) -> None:
    _send(req, resp, formats.render_many(objs, _as_json(req)))


def send_list(req: falcon.Request, resp: falcon.Response, key: str, ids) -> None:
    _send(req, resp, formats.render_list(key, ids, _as_json(req)))


def no_content(resp: falcon.Response) -> None:
    resp.status = falcon.HTTP_204
