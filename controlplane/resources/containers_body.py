"""Request bodies of the Containers face: multipart (needed for files), urlencoded or JSON, read by
the shared reader (`controlplane/bodies.py`) and put in this face's terms.

Returns (fields, files): fields as strings (JSON booleans become "true"/"false", numbers their decimal
text, null is absent), files as bytes. A file part larger than `file_limit` is 413/202511; other
parts are capped at 1 MiB. Unknown parameters are ignored.
"""

from __future__ import annotations

import json

import falcon

from .. import bodies
from ..errors import TooLarge, Usage
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
    """The shared reader (`controlplane/bodies.py`) in this face's terms: its limits and codes."""
    if not (req.content_length or req.content_type):
        return {}, {}
    try:
        form = bodies.read_form(req, file_limit * 2 + FIELD_LIMIT)
    except TooLarge:
        raise ContainersError(*TOO_LARGE) from None
    except Usage as exc:
        raise invalid(exc.message) from None
    fields: dict[str, str] = {}
    for key, value in form.fields.items():
        text = value if form.kind != "json" else _scalar(value)
        if text is None:
            continue
        if form.kind == "multipart" and len(text) > FIELD_LIMIT:
            raise invalid(f"form field {key[:40]!r} is too large")
        fields[key] = text
    files: dict[str, bytes] = {}
    for upload in form.files:
        if upload.field in file_fields:
            if len(upload.data) > file_limit:
                raise ContainersError(*TOO_LARGE)
            files[upload.field] = upload.data
    for name in file_fields:
        if name in fields and name not in files:
            files[name] = fields.pop(name).encode("utf-8", errors="surrogateescape")
    return fields, files


def base_url(req: falcon.Request, public_url: str) -> str:
    return public_url or req.prefix
