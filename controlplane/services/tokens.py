"""Bearer tokens of every face, one table with a `kind` per face (workspaces now; pads adds its own).

A token is 32 random hex characters (128 bits), shown once at creation. The table holds its SHA-256:
a token has too much entropy for a dictionary, so an unsalted digest is as safe at rest as a slow
hash, and it can be found by an index in one query. Tokens are never logged.
"""

from __future__ import annotations

import enum
import hashlib
import secrets

from sqlalchemy import delete, select

from ..db import Database
from ..errors import NotFound, Unauthorized, Usage
from ..models import Token, User


class TokenKind(enum.StrEnum):
    WORKSPACES = "workspaces"
    PADS = "pads"                  # a pads API key (CoderPad's settings-page key)
    PADS_SESSION = "pads-session"  # a session token from POST /api/auth/login (expires)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class Tokens:
    def __init__(self, db: Database):
        self.db = db

    def create(self, user: str, kind: str = TokenKind.WORKSPACES, label: str = "") -> tuple[int, str]:
        """Issue a token for `user`; returns (id, token). The token itself is not stored."""
        kind = self._kind(kind)
        token = secrets.token_hex(16)
        with self.db.session() as s:
            if s.get(User, user) is None:
                raise NotFound(what="user")
            row = Token(kind=kind, owner=user, digest=digest(token), hint=token[:4], label=label[:128])
            s.add(row)
            s.flush()
            return row.id, token

    def list(self, user: str | None = None, kind: str | None = None) -> list[Token]:
        with self.db.read_session() as s:
            query = select(Token).order_by(Token.id)
            if user:
                query = query.where(Token.owner == user)
            if kind:
                query = query.where(Token.kind == kind)
            rows = list(s.scalars(query))
            s.expunge_all()  # keep the loaded values past the read session's rollback
            return rows

    def revoke(self, token_id: int, user: str | None = None) -> None:
        with self.db.session() as s:
            query = delete(Token).where(Token.id == token_id)
            if user:
                query = query.where(Token.owner == user)
            if not s.execute(query).rowcount:
                raise NotFound(what="token")

    def authenticate(self, token: str | None, kind: str) -> str:
        """The owner of a valid `kind` token, or Unauthorized."""
        if not token or len(token) > 256:
            raise Unauthorized("unauthorized access")
        with self.db.read_session() as s:
            owner = s.scalar(select(Token.owner).where(Token.digest == digest(token), Token.kind == kind))
        if owner is None:
            raise Unauthorized("unauthorized access")
        return owner

    @staticmethod
    def _kind(kind: str) -> str:
        try:
            return TokenKind(kind)
        except ValueError:
            raise Usage("unknown token kind {kind!r} (known: {known})", kind=kind,
                        known=", ".join(k.value for k in TokenKind)) from None
