"""The workspaces face (Sphere Engine Containers, `/api/v1`): its row of the face table, with its
authenticator (bearer tokens) and its error renderer (`{"error_code": int, "message": "one line"}`)."""

from __future__ import annotations

import json

import falcon

from .errors import DomainError, NotFound, TooLarge, Unauthorized, Usage, http_status
from .faces import Face
from .problems import Problem
from .services.containers_errors import ContainersError
from .services.tokens import TokenKind, Tokens

PREFIX = "/api/v1"


class BearerAuth:
    """`access_token` query parameter (wins) or `Authorization: Bearer <token>`; 401/1 otherwise."""

    challenge = 'Bearer realm="openhosting"'

    def __init__(self, tokens: Tokens):
        self.tokens = tokens

    def authenticate(self, req: falcon.Request) -> str:
        token = req.get_param("access_token")
        if not token:
            scheme, _, value = (req.get_header("Authorization") or "").partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else None
        return self.tokens.authenticate(token, TokenKind.WORKSPACES)


def _code(exc: BaseException | None, problem: Problem) -> tuple[int, int, str]:
    """(status, error_code, message) of an error raised while serving this face."""
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
        return http_status(exc)[0], 0, exc.message
    if isinstance(exc, falcon.HTTPError):
        status = int(exc.status_code)
        if status == 404:
            return 404, 0, "no such endpoint"
        if status == 405:
            return 405, 0, "method not allowed"
        return status, 10 if status == 400 else 0, problem.message
    return problem.status, 0, "internal error" if problem.status >= 500 else problem.message


def render_error(req: falcon.Request, resp: falcon.Response, problem: Problem) -> None:
    status, code, message = _code(problem.error, problem)
    resp.status = falcon.code_to_http_status(status)
    resp.content_type = "application/json"
    resp.text = json.dumps({"error_code": code, "message": " ".join(message.split())})


def face(tokens: Tokens) -> Face:
    return Face("workspaces", (PREFIX,), BearerAuth(tokens), render_error)
