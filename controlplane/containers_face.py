"""The workspaces face (Sphere Engine Containers, `/api/v1`): its authenticator and its error renderer.

Until the app has a face table these are wired by create_app: BearerAuth runs as a middleware that
acts only on this face's paths, and `handles` routes this face's errors to `render`.
"""

from __future__ import annotations

import json
import logging

import falcon

from .errors import DomainError, NotFound, TooLarge, Unauthorized, Usage, http_status
from .services.containers_errors import ContainersError
from .services.tokens import TokenKind, Tokens

log = logging.getLogger("openhosting.api")

PREFIX = "/api/v1"


def owns(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class BearerAuth:
    """`access_token` query parameter (wins) or `Authorization: Bearer <token>`; 401/1 otherwise.

    Runs before routing, so a request without a valid token gets 401 on any path of the face."""

    def __init__(self, tokens: Tokens):
        self.tokens = tokens

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not owns(req.path):
            return
        token = req.get_param("access_token")
        if not token:
            scheme, _, value = (req.get_header("Authorization") or "").partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else None
        req.context.user = self.tokens.authenticate(token, TokenKind.WORKSPACES)


def _code(exc: Exception) -> tuple[int, int, str]:
    """(status, error_code, message) of any error raised while serving this face."""
    if isinstance(exc, ContainersError):
        return exc.status, exc.code, exc.message
    if isinstance(exc, Unauthorized):
        return 401, 1, "unauthorized access"
    if isinstance(exc, TooLarge):
        return 413, 202511, "file size limit exceeded (max file size is 16MiB)"
    if isinstance(exc, Usage):
        return 400, 10, exc.message
    if isinstance(exc, NotFound):
        return 404, 1001, exc.message
    if isinstance(exc, DomainError):
        status, _ = http_status(exc)
        return status, 0, exc.message
    if isinstance(exc, falcon.HTTPError):
        status = int(exc.status_code)
        if status == 404:
            return 404, 0, "no such endpoint"
        if status == 405:
            return 405, 0, "method not allowed"
        return status, 10 if status == 400 else 0, exc.title
    return 500, 0, "internal error"


def render(req: falcon.Request, resp: falcon.Response, exc: Exception) -> None:
    status, code, message = _code(exc)
    if status >= 500 and not isinstance(exc, (DomainError, falcon.HTTPError)):
        log.exception("unhandled error on %s %s", req.method, req.path)
    resp.status = falcon.code_to_http_status(status)
    resp.content_type = "application/json"
    resp.text = json.dumps({"error_code": code, "message": " ".join(message.split())})
    if isinstance(exc, falcon.HTTPError) and status == 405 and exc.headers:
        resp.set_header("Allow", exc.headers.get("Allow", ""))
    if req.content_length:
        resp.set_header("Connection", "close")  # the body may be unread; no keep-alive on a half-read stream


def handles(other):
    """An error handler that renders this face's errors itself and passes the rest to `other`."""

    def handler(req, resp, exc, params):
        if owns(req.path):
            return render(req, resp, exc)
        return other(req, resp, exc, params)

    return handler
