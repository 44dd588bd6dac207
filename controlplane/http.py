"""Request and response helpers shared by the cloud API resources."""

from __future__ import annotations

import falcon

from . import formats
from .errors import TooLarge, Usage

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"


def read_body(req: falcon.Request, limit: int) -> bytes:
    """The whole body, refused (413) before it is read when it is declared or turns out too large."""
    length = req.content_length
    if length is not None and length > limit:
        raise TooLarge(limit=limit)
    data = req.bounded_stream.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(limit=limit)
    return data


def read_fields(req: falcon.Request, limit: int) -> dict[str, str]:
    """A key/value body: JSON when the Content-Type says so, text otherwise (octet-stream included)."""
    raw = read_body(req, limit)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Usage("body is not UTF-8 text") from None
    if formats.is_json(req.content_type):
        return formats.decode_json(text)
    return formats.decode_kv(text)


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
