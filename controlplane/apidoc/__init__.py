"""The OpenAPI 3.1 document of every JSON face, built in code from one module per face.

`document(table)` assembles it; the face table decides each path's security (a face without an
authenticator has none). tests/test_openapi.py holds it to the router: a route served but not
described, or described but not served, fails there. A new face adds a module here with `SCHEMAS`
and `paths()`, and a line in `FACES`.
"""

from __future__ import annotations

import copy
from functools import lru_cache

from . import cloud, description, pads, sandboxes, submissions, workspaces
from .common import ERROR_SCHEMA

FACES = (cloud, sandboxes, workspaces, submissions, pads, description)

INFO = {
    "title": "openhosting",
    "version": "1",
    "summary": "VM hosting control plane: cloud drives and servers, sandboxes",
    "description": "Every JSON endpoint of every face. The cloud API (`/drives`, `/servers`, `/resources`) "
                   "answers JSON when the request says `Accept: application/json` and text/plain "
                   "`key value` lines otherwise; its bodies may be JSON objects or `key value` lines. "
                   "Authentication is HTTP Basic: your user uuid and secret API key. Another user's "
                   "objects answer 404, exactly like missing ones.",
    "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
}


HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}
LINE_TOO_LONG = {"description": "request line longer than the server takes (4094 bytes; refused by gunicorn "
                                "before the application, as an HTML page)"}


@lru_cache(maxsize=4)
def _build(public_faces: frozenset[str]) -> dict:
    paths: dict = {}
    schemas = {"Error": ERROR_SCHEMA}
    tags = []
    schemes = {"basic": {"type": "http", "scheme": "basic", "description": "user uuid : secret API key"}}
    for face in FACES:
        schemes.update(getattr(face, "SECURITY_SCHEMES", {}))
        paths.update(face.paths())
        schemas.update(face.SCHEMAS)
        tags.append({"name": face.TAG, "description": (face.__doc__ or "").strip().splitlines()[0]})
    for path, item in paths.items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                # gunicorn refuses a request line past its limit before the app sees it (text/html)
                op.setdefault("responses", {}).setdefault("414", LINE_TOO_LONG)
        if path in public_faces:
            for op in item.values():
                op["security"] = []
    return {
        "openapi": "3.1.0",
        "info": INFO,
        "tags": tags,
        "servers": [{"url": "/"}],
        "security": [{"basic": []}],
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": schemas,
                       "securitySchemes": schemes},
    }


def document(table) -> dict:
    """The document; paths whose face has no authenticator are marked `security: []`."""
    public = frozenset(path for path in _all_paths() if table.face_for(path).auth is None)
    return copy.deepcopy(_build(public))


@lru_cache(maxsize=1)
def _all_paths() -> tuple[str, ...]:
    return tuple(p for face in FACES for p in face.paths())
