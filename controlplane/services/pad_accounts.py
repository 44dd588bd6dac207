"""Accounts as a pads user sees them: email and name, one organization (owner or member), API keys and
session tokens (the shared `tokens` table, kinds `pads` and `pads-session`), login and logout.

API keys are CoderPad's 32 lower-case hex characters, shown once and stored as their SHA-256. A
session token is the same kind of value; it lives `session_ttl` seconds from its creation. Login
takes the account's uuid or email and its secret (the one `user create` printed); five failures for a
username within five minutes block that username for five minutes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass

from sqlalchemy import delete, func, select

from ..config import Settings
from ..db import Database
from ..errors import NotFound, Unauthorized, Usage
from ..models import LoginFailure, Organization, Token, User, utcnow
from .accounts import Accounts, is_uuid, verify_secret
from .pad_errors import LoginFailed, RateLimited
from .tokens import TokenKind, Tokens, digest

EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$")
ROLES = ("owner", "member")
FAILURES = 5
FAILURE_WINDOW = dt.timedelta(minutes=5)


def valid_email(text: str) -> bool:
    return len(text) <= 254 and bool(EMAIL.match(text))


def aware(when: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; they are UTC."""
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Caller:
    """Who is calling, with what the visibility rules need."""

    uuid: str
    name: str
    email: str | None
    org_id: int | None
    role: str | None

    @property
    def org_owner(self) -> bool:
        return self.org_id is not None and self.role == "owner"

    @property
    def display_name(self) -> str:
        return display_name(self.name, self.email)


def display_name(name: str | None, email: str | None) -> str:
    if name:
        return name
    return email.split("@", 1)[0] if email else "unknown"


def owner_email(uuid: str, email: str | None) -> str:
    return email or f"{uuid}@openhosting.invalid"


class PadAccounts:
    def __init__(self, db: Database, settings: Settings, accounts: Accounts, tokens: Tokens):
        self.db = db
        self.settings = settings
        self.accounts = accounts
        self.tokens = tokens

    # ---- organizations and users (the admin CLI) ----------------------------------------------

    def org_create(self, name: str, *, monthly_pad_limit: int | None = None, email_domains: str = "",
                   default_language: str = "plaintext", default_private: bool = False,
                   default_execution_enabled: bool = True, pads_visible_to_members: bool = True) -> Organization:
        from . import languages

        name = name.strip()
        if not name or len(name) > 255:
            raise Usage("an organization needs a name of 1 to 255 characters")
        if not languages.known(default_language):
            raise Usage("unsupported language {lang!r}", lang=default_language)
        if monthly_pad_limit is not None and monthly_pad_limit < 0:
            raise Usage("the monthly pad limit cannot be negative")
        domains = ",".join(d.strip().lower() for d in email_domains.split(",") if d.strip())
        with self.db.session() as s:
            if s.scalar(select(Organization.id).where(Organization.name == name)) is not None:
                raise Usage("organization {name!r} exists already", name=name)
            org = Organization(name=name, monthly_pad_limit=monthly_pad_limit, email_domains=domains,
                               default_language=default_language, default_private=default_private,
                               default_execution_enabled=default_execution_enabled,
                               pads_visible_to_members=pads_visible_to_members)
            s.add(org)
            s.flush()
            return org

    def orgs(self) -> list[Organization]:
        with self.db.read_session() as s:
            rows = list(s.scalars(select(Organization).order_by(Organization.id)))
            s.expunge_all()
            return rows

    def org(self, name_or_id: str) -> tuple[Organization, list[User]]:
        with self.db.read_session() as s:
            org = s.scalar(select(Organization).where(Organization.name == name_or_id))
            if org is None and name_or_id.isdigit():
                org = s.get(Organization, int(name_or_id))
            if org is None:
                raise NotFound(what="organization")
            users = list(s.scalars(select(User).where(User.org_id == org.id).order_by(User.email, User.uuid)))
            s.expunge_all()
            return org, users

    def user_create(self, name: str = "", email: str | None = None, org: str | None = None,
                    role: str = "member") -> tuple[str, str]:
        """A new account (uuid, secret), with an email and an organization when given."""
        if email is not None and not valid_email(email):
            raise Usage("{email!r} is not an email address", email=email)
        if role not in ROLES:
            raise Usage("role must be owner or member")
        org_id = self.org(org)[0].id if org else None
        if email:
            with self.db.read_session() as s:
                if s.scalar(select(User.uuid).where(func.lower(User.email) == email.lower())):
                    raise Usage("a user with email {email!r} exists already", email=email)
        user, secret = self.accounts.create(name)
        with self.db.session() as s:
            row = s.get(User, user)
            row.email = email.lower() if email else None
            row.org_id = org_id
            row.org_role = role if org_id else None
        return user, secret

    def find_user(self, s, ref: str) -> User | None:
        if is_uuid(ref):
            return s.get(User, ref.lower())
        return s.scalar(select(User).where(func.lower(User.email) == ref.lower()))

    # ---- API keys and sessions -------------------------------------------------------------------

    def apikey_create(self, user_ref: str) -> str:
        with self.db.read_session() as s:
            user = self.find_user(s, user_ref)
            if user is None:
                raise NotFound(what="user")
            uuid = user.uuid
        return self.tokens.create(uuid, TokenKind.PADS, label="pads api key")[1]

    def apikey_revoke(self, key: str) -> None:
        with self.db.session() as s:
            done = s.execute(delete(Token).where(Token.digest == digest(key.strip()),
                                                 Token.kind == TokenKind.PADS)).rowcount
        if not done:
            raise NotFound(what="API key")

    def authenticate(self, token: str) -> str:
        """The owner of a valid pads API key or live session token, else Unauthorized."""
        if not token or len(token) > 256:
            raise Unauthorized("Invalid API key")
        with self.db.read_session() as s:
            row = s.execute(select(Token.owner, Token.kind, Token.created_at).where(
                Token.digest == digest(token), Token.kind.in_((TokenKind.PADS, TokenKind.PADS_SESSION)))).first()
        if row is None:
            raise Unauthorized("Invalid API key")
        if row.kind == TokenKind.PADS_SESSION and self._expiry(row.created_at) <= utcnow():
            raise Unauthorized("Invalid API key")
        return row.owner

    def _expiry(self, created: dt.datetime) -> dt.datetime:
        return aware(created) + dt.timedelta(seconds=self.settings.session_ttl)

    def login(self, username: str, password: str) -> tuple[str, dt.datetime]:
        """A new session token and its expiry, or LoginFailed / RateLimited."""
        if not username or not password:
            raise Usage("username and password are required")
        key = hashlib.sha256(username.strip().lower().encode("utf-8", "surrogateescape")).hexdigest()
        now = utcnow()
        with self.db.read_session() as s:
            recent = list(s.scalars(select(LoginFailure.created_at).where(
                LoginFailure.username == key, LoginFailure.created_at > now - FAILURE_WINDOW)
                .order_by(LoginFailure.created_at)))
            user = self.find_user(s, username.strip())
            stored = (user.uuid, user.secret_hash) if user else None
        if len(recent) >= FAILURES:
            wait = aware(recent[-FAILURES]) + FAILURE_WINDOW - now
            raise RateLimited("too many failed logins for this username; retry later",
                              retry_after=max(1, int(wait.total_seconds()) + 1))
        if stored is None or not verify_secret(password, stored[1]):
            with self.db.session() as s:
                s.execute(delete(LoginFailure).where(LoginFailure.created_at < now - FAILURE_WINDOW))
                s.add(LoginFailure(username=key))
            raise LoginFailed()
        token_id, token = self.tokens.create(stored[0], TokenKind.PADS_SESSION, label="pads session")
        with self.db.read_session() as s:
            created = s.scalar(select(Token.created_at).where(Token.id == token_id))
        return token, self._expiry(created)

    def logout(self, token: str) -> None:
        """Revoke a session token (API keys are untouched; an unknown token is no error)."""
        with self.db.session() as s:
            s.execute(delete(Token).where(Token.digest == digest(token), Token.kind == TokenKind.PADS_SESSION))

    # ---- callers ------------------------------------------------------------------------------------

    def caller(self, user: str) -> Caller:
        with self.db.read_session() as s:
            row = s.get(User, user)
            if row is None:
                raise Unauthorized("Invalid API key")
            return Caller(row.uuid, row.name, row.email, row.org_id, row.org_role if row.org_id else None)
