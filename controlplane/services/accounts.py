"""Users and their secret API keys.

Keys are 256-bit random tokens, so a salted HMAC-SHA256 is as strong at rest as a slow password hash
and costs microseconds per request; comparison is constant time. An unknown user is checked against a
dummy hash so that timing does not tell which user ids exist.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid as uuidlib

from sqlalchemy import select

from ..db import Database
from ..errors import Unauthorized
from ..models import User

_DUMMY = "00" * 16 + "$" + "00" * 32


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hmac.new(salt, secret.encode(), hashlib.sha256).hexdigest()
    return f"{salt.hex()}${digest}"


def verify_secret(secret: str, stored: str) -> bool:
    salt_hex, _, digest = stored.partition("$")
    try:
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    expected = hmac.new(salt, secret.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, digest)


def is_uuid(text: str) -> bool:
    try:
        return str(uuidlib.UUID(text)) == text.lower() and len(text) == 36
    except (ValueError, AttributeError, TypeError):
        return False


class Accounts:
    def __init__(self, db: Database):
        self.db = db

    def create(self, name: str = "") -> tuple[str, str]:
        """Create a user; returns (uuid, secret). The secret is shown once and never stored."""
        user_id = str(uuidlib.uuid4())
        secret = secrets.token_urlsafe(32)
        with self.db.session() as s:
            s.add(User(uuid=user_id, name=name, secret_hash=hash_secret(secret)))
        return user_id, secret

    def list(self) -> list[User]:
        with self.db.session() as s:
            return list(s.scalars(select(User).order_by(User.created_at)))

    def authenticate(self, user_id: str, secret: str) -> str:
        """Return the user's uuid or raise Unauthorized."""
        stored = None
        if is_uuid(user_id):
            with self.db.read_session() as s:
                stored = s.scalar(select(User.secret_hash).where(User.uuid == user_id.lower()))
        ok = verify_secret(secret, stored or _DUMMY)
        if not (ok and stored):
            raise Unauthorized("invalid user uuid or secret API key")
        return user_id.lower()
