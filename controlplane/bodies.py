"""Request bodies, read once for every face: raw bytes, key/value objects and forms, with size limits.

Every reader refuses a body whose declared Content-Length is over the limit before reading it, and
stops reading one byte past the limit otherwise (413 through `errors.TooLarge`). Malformed input is a
`errors.Usage` (400), and so is text that cannot be stored (NUL characters, lone surrogates) and JSON
nested deeper than the parser goes. Nothing here knows which face calls it.

- `read_bytes`: the raw body (drive writes).
- `read_fields`: the cloud API's object: JSON when the Content-Type says so, else text/plain
  `key value` lines (application/octet-stream included, for the command line tool's `-c`/`-f`).
- `read_form`: multipart/form-data (fields and files), application/x-www-form-urlencoded or a JSON
  object, into one `Form`. Multipart field values and urlencoded values are text; JSON values keep
  their JSON types, so a face decides what a list, a number or `null` means to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import falcon

from . import formats
from .errors import TooLarge, Usage

MAX_PARTS = 64  # multipart parts per request; more is a usage error, not a slow parse


@dataclass
class Upload:
    field: str
    filename: str
    data: bytes


@dataclass
class Form:
    fields: dict[str, Any] = field(default_factory=dict)
    files: list[Upload] = field(default_factory=list)
    kind: str = "multipart"  # multipart | urlencoded | json


def _check_declared(req: falcon.Request, limit: int) -> None:
    if req.content_length is not None and req.content_length > limit:
        raise TooLarge(limit=limit)


def read_bytes(req: falcon.Request, limit: int) -> bytes:
    """The whole body, refused (413) before it is read when it is declared or turns out too large."""
    _check_declared(req, limit)
    data = req.bounded_stream.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(limit=limit)
    return data


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Usage("body is not UTF-8 text") from None


def read_fields(req: falcon.Request, limit: int) -> dict[str, str]:
    """A key/value body: JSON when the Content-Type says so, text otherwise (octet-stream included)."""
    text = _text(read_bytes(req, limit))
    obj = formats.decode_json(text) if formats.is_json(req.content_type) else formats.decode_kv(text)
    formats.check_json_text(obj)  # JSON escapes can smuggle NUL and lone surrogates into text
    return obj


def media_type(req: falcon.Request) -> str:
    return (req.content_type or "").split(";")[0].strip().lower()


def read_form(req: falcon.Request, limit: int) -> Form:
    """A form in any of the three encodings; `limit` bounds the whole body (all parts together)."""
    kind = media_type(req)
    _check_declared(req, limit)
    if kind == "multipart/form-data":
        return _read_multipart(req, limit)
    if kind == "application/x-www-form-urlencoded":
        pairs = parse_qsl(read_bytes(req, limit).decode("utf-8", errors="replace"), keep_blank_values=True)
        # checked after decoding: `%00` becomes a NUL only here
        return Form({formats.check_text(k): formats.check_text(v) for k, v in pairs}, kind="urlencoded")
    if kind == "application/json":
        raw = read_bytes(req, limit)
        body = formats.load_json(raw) if raw.strip() else {}
        formats.check_json_text(body)
        if not isinstance(body, dict):
            raise Usage("JSON body must be an object")
        return Form(body, kind="json")
    raise Usage("send multipart/form-data, application/x-www-form-urlencoded or application/json")


def _read_multipart(req: falcon.Request, limit: int) -> Form:
    form = Form()
    budget = limit
    try:
        for count, part in enumerate(req.get_media(), 1):
            if count > MAX_PARTS:
                raise Usage("at most {n} parts in a multipart body", n=MAX_PARTS)
            data = part.stream.read(budget + 1)
            budget -= len(data)
            if budget < 0:
                raise TooLarge(limit=limit)
            name = formats.check_text(part.name or "")
            if part.filename is not None:
                form.files.append(Upload(name, formats.check_text(part.filename or name), data))
            else:
                form.fields[name] = formats.check_text(data.decode("utf-8", errors="replace"))
    except falcon.MediaMalformedError as exc:
        raise Usage("malformed multipart body: {why}", why=exc.description or "unreadable") from None
    return form
