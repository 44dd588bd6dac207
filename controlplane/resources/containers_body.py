"""Request bodies of the Containers face: multipart (needed for files), urlencoded or JSON.

Returns (fields, files): fields as strings (JSON booleans become "true"/"false", numbers their decimal
text, null is absent), files as bytes. A file part larger than `file_limit` is 413/202511; other
parts are capped at 1 MiB. Unknown parameters are ignored.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import falcon

from ..services.containers_errors import ContainersError, invalid

FIELD_LIMIT = 1024 * 1024
TOO_LARGE = (413, 202511, "file size limit exceeded (max file size is 16MiB)")


def _scalar(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value)


def read(req: falcon.Request, file_fields: tuple[str, ...], file_limit: int) -> tuple[dict, dict]:
    ctype = (req.content_type or "").lower()
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    if ctype.startswith("multipart/form-data"):
        try:
            for part in req.get_media():
                if part.name in file_fields:
                    data = part.stream.read(file_limit + 1)
                    if len(data) > file_limit:
                        raise ContainersError(*TOO_LARGE)
                    files[part.name] = data
                else:
                    data = part.stream.read(FIELD_LIMIT + 1)
                    if len(data) > FIELD_LIMIT:
                        raise invalid(f"form field {part.name[:40]!r} is too large")
                    fields[part.name] = data.decode("utf-8", errors="replace")
        except falcon.MediaMalformedError:
            raise invalid("malformed multipart body") from None
        return fields, files
    limit = file_limit * 2 + FIELD_LIMIT
    if req.content_length is not None and req.content_length > limit:
        raise ContainersError(*TOO_LARGE)
    raw = req.bounded_stream.read(limit + 1)
    if len(raw) > limit:
        raise ContainersError(*TOO_LARGE)
    if ctype.startswith("application/json"):
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise invalid("body is not valid JSON") from None
        if not isinstance(body, dict):
            raise invalid("JSON body must be an object")
        for key, value in body.items():
            if value is not None:
                fields[key] = _scalar(value)
    elif raw:
        fields = dict(parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True))
    for name in file_fields:
        if name in fields and not isinstance(fields[name], bytes):
            files[name] = fields.pop(name).encode("utf-8", errors="surrogateescape")
    return fields, files


def base_url(req: falcon.Request, public_url: str) -> str:
    return public_url or req.prefix
