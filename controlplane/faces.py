"""The face table: per route prefix, who may call (authenticator) and how errors look (renderer).

A face is one API family served by this app (the cloud API, the sandboxes API, the description of
them all, and later workspaces and pads). Each is one `Face` row:

    Face(name, prefixes, auth, render_error)

- `prefixes`: path prefixes, matched on whole segments (`/api/pads` matches `/api/pads` and
  `/api/pads/7`, not `/api/padsx`); the longest matching prefix wins, so `/api/v1` beats `/api`.
- `auth`: an authenticator (`controlplane/auth.py`: `authenticate(req) -> user uuid` or raise
  `errors.Unauthorized`; `challenge` for the 401's `WWW-Authenticate`), or None for no auth. It runs
  before routing, so an unknown path of an authenticated face answers 401 before 404.
- `render_error(req, resp, problem)`: writes the body and content type of an error in the face's own
  shape. `problem` (`controlplane/problems.py`) carries status, the cloud vocabulary's kind, a safe
  one-line message and the original exception; `problems.code_for(problem.error, TABLE, default)`
  maps error classes to a face's own codes. The status, extra headers (`Allow`), the 401 challenge
  and `Connection: close` (when the body may be unread) are set before the renderer runs; it may
  change any of them.

Resources never format errors: services raise, and `install()` routes every error through the face
of the request's path. A path no row matches falls to the table's default face (the cloud API, which
answers text or JSON by `Accept`). A new face is a row in `build_table` plus its resources.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import falcon

from . import formats, problems
from .auth import Authenticator, BasicAuth
from .errors import DomainError
from .http import JSON, TEXT
from .problems import Problem
from .services.accounts import Accounts
from .services.throttle import AuthThrottle
from storage.errors import StorageError

Renderer = Callable[[falcon.Request, falcon.Response, Problem], None]


@dataclass(frozen=True)
class Face:
    name: str
    prefixes: tuple[str, ...]
    auth: Authenticator | None
    render_error: Renderer


class FaceTable:
    def __init__(self, faces: list[Face], default: Face):
        self.faces = list(faces)
        self.default = default
        self._by_prefix = sorted(((p.rstrip("/"), f) for f in self.faces for p in f.prefixes),
                                 key=lambda item: len(item[0]), reverse=True)

    def face_for(self, path: str) -> Face:
        for prefix, face in self._by_prefix:
            if path == prefix or path.startswith(prefix + "/"):
                return face
        return self.default


# ---- error renderers of the faces that exist ------------------------------------------------------

def cloud_error(req: falcon.Request, resp: falcon.Response, problem: Problem) -> None:
    """ElasticHosts: `X-Elastic-Error: <kind>` and a one-line text body, or JSON when Accept asks."""
    resp.set_header("X-Elastic-Error", problem.kind)
    if formats.wants_json(req.get_header("Accept")):
        json_body(resp, problem)
    else:
        resp.content_type = TEXT
        resp.text = problem.message + "\n"


def json_error(req: falcon.Request, resp: falcon.Response, problem: Problem) -> None:
    """OpenDevelop and the description: `{"error": <kind>, "message": ...}` (X-Elastic-Error too)."""
    resp.set_header("X-Elastic-Error", problem.kind)
    json_body(resp, problem)


def json_body(resp: falcon.Response, problem: Problem) -> None:
    resp.content_type = JSON
    resp.text = json.dumps({"error": problem.kind, "message": problem.message})


# ---- the table ------------------------------------------------------------------------------------

def build_table(accounts: Accounts, extra: list[Face] = (), throttle: AuthThrottle | None = None) -> FaceTable:
    """The table; `extra` rows are faces built elsewhere (the workspaces face: containers_face.face);
    `throttle` is the backoff after failed Basic logins (services/throttle.py)."""
    basic = BasicAuth(accounts, throttle)
    cloud = Face("cloud", ("/drives", "/servers", "/resources"), basic, cloud_error)
    faces = [
        *extra,
        cloud,
        Face("sandboxes", ("/api/sandboxes", "/api/images"), basic, json_error),
        Face("description", ("/api/openapi.json", "/api/docs"), None, json_error),
        # Any other /api/… path: authenticated, JSON errors (later faces add longer prefixes).
        Face("api", ("/api",), basic, json_error),
    ]
    return FaceTable(faces, default=cloud)


# ---- wiring ---------------------------------------------------------------------------------------

class FaceMiddleware:
    """Before routing: find the request's face, authenticate with it (`req.context.user`)."""

    def __init__(self, table: FaceTable):
        self.table = table

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        face = self.table.face_for(req.path)
        req.context.face = face
        req.context.user = None
        if face.auth is not None:
            req.context.user = face.auth.authenticate(req)
        if "\x00" in req.path:  # names nothing; and PostgreSQL refuses NUL in a query
            raise falcon.HTTPNotFound()


def render(table: FaceTable, req: falcon.Request, resp: falcon.Response, problem: Problem) -> None:
    face = req.context.get("face") or table.face_for(req.path)
    resp.status = falcon.code_to_http_status(problem.status)
    for name, value in problem.headers.items():
        resp.set_header(name, value)
    if problem.status == 401 and face.auth is not None and face.auth.challenge:
        resp.set_header("WWW-Authenticate", face.auth.challenge)
    # An error may come before the body was read; do not let a keep-alive reuse a half-read stream.
    if req.content_length:
        resp.set_header("Connection", "close")
    face.render_error(req, resp, problem)


def install(app: falcon.App, table: FaceTable) -> None:
    """Route every error family through `table`; Falcon picks the most specific handler registered."""
    from hypervisor.errors import HypervisorError

    def handler(convert):
        def handle(req, resp, exc, params):
            render(table, req, resp, convert(req, exc))
        return handle

    app.add_error_handler(Exception, handler(problems.from_unexpected))
    app.add_error_handler(falcon.HTTPError, handler(problems.from_falcon))
    app.add_error_handler(StorageError, handler(problems.from_storage))
    app.add_error_handler(DomainError, handler(problems.from_domain))
    app.add_error_handler(HypervisorError, handler(problems.from_hypervisor))
