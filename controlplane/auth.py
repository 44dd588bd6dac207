"""Authenticators: how a face learns who is calling.

An authenticator is any object with `authenticate(req) -> str` (the caller's user uuid, or raise
`errors.Unauthorized`) and a `challenge` (the `WWW-Authenticate` value sent with that face's 401s,
or None). The face table (`controlplane/faces.py`) runs it before routing.
"""

from __future__ import annotations

import base64
import binascii
from typing import Protocol

import falcon

from .errors import Unauthorized
from .services.accounts import Accounts


class Authenticator(Protocol):
    challenge: str | None

    def authenticate(self, req: falcon.Request) -> str: ...


class BasicAuth:
    """HTTP Basic credentials: the user's UUID and secret API key."""

    challenge = 'Basic realm="openhosting"'

    def __init__(self, accounts: Accounts):
        self.accounts = accounts

    def authenticate(self, req: falcon.Request) -> str:
        header = req.get_header("Authorization") or ""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise Unauthorized("HTTP Basic authentication required (user UUID and secret API key)")
        try:
            user, _, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed Basic authorization header") from None
        return self.accounts.authenticate(user, secret)
