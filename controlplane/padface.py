"""The pads face (CoderPad + Codenvy conventions, pads-api.md §1, §B): its authenticator, its error
body, its form reader and its list links.

Credentials, the first present decides (a bad one is 401, no fall-through): the Authorization header
(`Token token="k"`, `Token k`, `Bearer k`, or `Basic uuid:secret`), the `token` query parameter, the
`session-access-key` cookie. A cookie-authenticated write whose Origin names another site is 403.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import falcon

from . import bodies, formats, problems
from .auth import BasicAuth
from .errors import Forbidden, TooLarge, Unauthorized, Usage
from .problems import Problem
from .services.pad_accounts import PadAccounts
from .services.pad_errors import Conflict, LoginFailed, OverQuota, RateLimited, Unavailable

COOKIE = "session-access-key"
TOKEN_SCHEME = re.compile(r"^\s*(token|bearer)\s+(.*)$", re.IGNORECASE | re.DOTALL)
TOKEN_PAIR = re.compile(r'^token\s*=\s*(?:"([^"]*)"|([^\s,;]*))', re.IGNORECASE)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def header_token(value: str) -> str:
    """The key of `Token token="k"`, `Token token=k, …`, `Token k` or `Bearer k` (after the scheme)."""
    rest = value.strip()
    pair = TOKEN_PAIR.match(rest)
    if pair:
        return pair.group(1) if pair.group(1) is not None else pair.group(2)
    return re.split(r"[\s,;]", rest, maxsplit=1)[0] if rest else ""


class PadsAuth:
    challenge = 'Token realm="openhosting", Basic realm="openhosting"'

    def __init__(self, pad_accounts: PadAccounts, basic: BasicAuth):
        self.pad_accounts = pad_accounts
        self.basic = basic

    def authenticate(self, req: falcon.Request) -> str:
        header = req.get_header("Authorization")
        if header:
            if header.strip().lower().startswith("basic "):
                return self._invalid(lambda: self.basic.authenticate(req))
            match = TOKEN_SCHEME.match(header)
            if not match:
                raise Unauthorized("Invalid API key")
            return self.pad_accounts.authenticate(header_token(match.group(2)))
        query = req.get_param("token")
        if query is not None:
            return self.pad_accounts.authenticate(query)
        cookie = (req.get_cookie_values(COOKIE) or [None])[0]
        if cookie is not None:
            user = self.pad_accounts.authenticate(cookie)
            if req.method not in SAFE_METHODS and foreign_origin(req):
                raise Forbidden("cross-site request refused")
            return user
        raise Unauthorized("Invalid API key")

    @staticmethod
    def _invalid(check):
        try:
            return check()
        except Unauthorized:
            raise Unauthorized("Invalid API key") from None


def foreign_origin(req: falcon.Request) -> bool:
    """An Origin header naming another host than the one the request was sent to."""
    origin = req.get_header("Origin")
    return bool(origin) and urlsplit(origin).netloc.lower() != req.netloc.lower()


# ---- errors ----------------------------------------------------------------------------------------

CODES = {400: "bad_request", 401: "invalid_api_key", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 409: "conflict", 413: "too_large", 429: "rate_limited", 500: "internal",
         503: "unavailable"}
OWN_STATUS = {Unavailable: 503, Conflict: 409}


def render_error(req: falcon.Request, resp: falcon.Response, problem: Problem) -> None:
    """`{"status":"ERROR","message":…,"code":…}`; X-Elastic-Error stays."""
    status = problems.code_for(problem.error, OWN_STATUS, problem.status)
    resp.status = falcon.code_to_http_status(status)
    code = CODES.get(status, "internal" if status >= 500 else "bad_request")
    message = problem.message
    if status == 400:
        message = f"Bad Request: {problem.message}"
    elif status == 401:
        message = problem.message if isinstance(problem.error, LoginFailed) else "Invalid API key"
    elif status == 403:
        message = problem.message if problem.message and problem.message != "not allowed" else "Forbidden"
    elif status == 404:
        message = "Resource not found"
    elif status == 429:
        if isinstance(problem.error, OverQuota):
            code, message = "over_quota", "Over quota"
        else:
            retry = getattr(problem.error, "retry_after", 1)
            resp.set_header("Retry-After", str(retry))
    elif status >= 500 and status != 503:
        message = "internal error"
    resp.set_header("X-Elastic-Error", problem.kind)
    resp.content_type = "application/json; charset=utf-8"
    resp.text = json.dumps({"status": "ERROR", "message": message, "code": code})


# ---- input and output ------------------------------------------------------------------------------

WRAPPERS = ("pad", "question")


def read_params(req: falcon.Request, limit: int) -> dict:
    """Query parameters and the body (form, multipart or JSON; no Content-Type reads as a form) as one
    flat dict; Rails-wrapped keys (`pad[title]`, `{"question": {...}}`) equal plain ones; body wins."""
    out = {k: formats.check_text(v) for k, v in req.params.items() if k != "token" and isinstance(v, str)}
    kind = bodies.media_type(req)
    if req.content_length or kind:
        # Forms, and bodies of any other type read as forms (Rails ignores what it cannot use).
        if kind not in ("multipart/form-data", "application/json"):
            from urllib.parse import parse_qsl

            raw = bodies.read_bytes(req, limit)
            try:
                pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
                # checked after decoding: `%00` becomes a NUL only here
                fields = {formats.check_text(k): formats.check_text(v) for k, v in pairs}
            except UnicodeDecodeError:
                raise Usage("body is not UTF-8 text") from None
        else:
            fields = bodies.read_form(req, limit).fields
        for key, value in fields.items():
            if key in WRAPPERS and isinstance(value, dict):
                out.update(value)
                continue
            match = re.fullmatch(r"(\w+)\[(\w+)\]", key)
            out[match.group(2) if match and match.group(1) in WRAPPERS else key] = value
    return out


def base_url(req: falcon.Request, public_url: str) -> str:
    if public_url:
        return public_url
    return f"{req.scheme}://{req.netloc}"


def ok(resp: falcon.Response, body: dict, location: str | None = None) -> None:
    resp.status = falcon.HTTP_200
    resp.content_type = "application/json; charset=utf-8"
    resp.text = json.dumps({"status": "OK", **body})
    if location:
        resp.location = location


def page_links(req: falcon.Request, public_url: str, page: int, total: int, sort_text: str | None,
               page_size: int) -> dict:
    def link(number: int) -> str:
        query = (f"sort={sort_text}&" if sort_text else "") + f"page={number}"
        return f"{base_url(req, public_url)}{req.path}?{query}"

    out = {}
    if page * page_size < total:
        out["next_page"] = link(page + 1)
    if page > 1:
        out["prev_page"] = link(page - 1)
    return out


__all__ = ["PadsAuth", "render_error", "read_params", "ok", "page_links", "base_url", "TooLarge", "RateLimited"]
