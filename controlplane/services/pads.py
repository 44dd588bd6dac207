"""Pads: create (quota in the same transaction), show, list, update, end, soft delete, events,
environments (pads-api.md E1-E6, E15, §A).

Visibility: the owner; owners of the owner's organization; its members when the organization lets
members see pads. Writable: the owner and organization owners. Deleted pads are visible to nobody.
Not visible answers 404, visible but not writable 403.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid as uuidlib
from typing import Any

from sqlalchemy import func, select

from ..config import Settings
from ..db import Database
from ..errors import Forbidden, NotFound, Usage
from ..models import Organization, Pad, PadEnvironment, PadEvent, PadQuestion, User, utcnow
from . import languages, pad_render
from .accounts import Accounts, hash_secret
from .pad_accounts import Caller, valid_email
from .pad_docs import PadDocs
from .pad_errors import Conflict, OverQuota
from .pad_params import PAGE_SIZE, offset, boolean, integer, only_true, text
from .questions import Questions

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
ENDED_FROZEN = ("contents", "language", "question_id", "execution_enabled")


def valid_public_id(text_id: str) -> str | None:
    upper = text_id.upper()
    return upper if len(upper) == 8 and all(c in ALPHABET for c in upper) else None


def month_start(now: dt.datetime) -> dt.datetime:
    return now.astimezone(dt.timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def language_param(value: Any) -> str:
    lang = text(value, "language").strip()
    if not languages.known(lang):
        raise Usage("unsupported language {lang!r}", lang=lang[:40])
    return lang


class Pads:
    def __init__(self, db: Database, settings: Settings, accounts: Accounts, questions: Questions):
        self.db = db
        self.settings = settings
        self.accounts = accounts
        self.questions = questions
        self.docs = PadDocs(db)

    @property
    def pages(self) -> str:
        """Where the pad page is served: OPENHOSTING_CONSOLE_URL when set; else the API's public base when
        OPENHOSTING_PUBLIC_URL is set (a front proxy sends /pads/ and /rooms/ to the console proxy);
        else the console proxy's own address, so that a default installation's links open."""
        s = self.settings
        return s.console_url or ("" if s.public_url else s.console_base)

    # ---- visibility ------------------------------------------------------------------------------

    def visible(self, s, caller: Caller, row: Pad) -> bool:
        if row.deleted_at is not None:
            return False
        if row.owner == caller.uuid:
            return True
        owner_org = s.scalar(select(User.org_id).where(User.uuid == row.owner))
        if caller.org_id is None or owner_org != caller.org_id:
            return False
        if caller.org_owner:
            return True
        return bool(s.scalar(select(Organization.pads_visible_to_members).where(Organization.id == caller.org_id)))

    def writable(self, s, caller: Caller, row: Pad) -> bool:
        if row.owner == caller.uuid:
            return True
        owner_org = s.scalar(select(User.org_id).where(User.uuid == row.owner))
        return caller.org_owner and owner_org == caller.org_id

    def load(self, s, caller: Caller, public_id: str, write: bool = False) -> Pad:
        key = valid_public_id(public_id)
        row = s.scalar(select(Pad).where(Pad.public_id == key)) if key else None
        if row is None or not self.visible(s, caller, row):
            raise NotFound(what="pad")
        if write and not self.writable(s, caller, row):
            raise Forbidden("Forbidden")
        return row

    # ---- reading ---------------------------------------------------------------------------------

    def show(self, caller: Caller, public_id: str, base: str) -> dict:
        with self.db.read_session() as s:
            return pad_render.pad(s, self.load(s, caller, public_id), base, self.pages)

    def list(self, caller: Caller, sort_field: str, ascending: bool, page: int, base: str,
             org: bool = False) -> tuple[list[dict], int]:
        with self.db.read_session() as s:
            query = select(Pad).where(Pad.deleted_at.is_(None))
            if org:
                if caller.org_id is None:
                    raise NotFound(what="organization")
                allowed = caller.org_owner or s.scalar(select(Organization.pads_visible_to_members)
                                                       .where(Organization.id == caller.org_id))
                if not allowed:
                    raise Forbidden("Forbidden")
                members = select(User.uuid).where(User.org_id == caller.org_id)
                query = query.where(Pad.owner.in_(members))
            else:
                query = query.where(Pad.owner == caller.uuid)
            total = s.scalar(select(func.count()).select_from(query.subquery()))
            column = getattr(Pad, sort_field)
            order = (column.asc(), Pad.id.asc()) if ascending else (column.desc(), Pad.id.desc())
            rows = s.scalars(query.order_by(*order).offset(offset(page)).limit(PAGE_SIZE))
            return [pad_render.pad(s, row, base, self.pages) for row in rows], total

    def events(self, caller: Caller, public_id: str, ascending: bool, page: int) -> tuple[list[dict], int]:
        with self.db.read_session() as s:
            row = self.load(s, caller, public_id)
            query = select(PadEvent).where(PadEvent.pad_id == row.id)
            total = s.scalar(select(func.count()).select_from(query.subquery()))
            order = ((PadEvent.created_at.asc(), PadEvent.id.asc()) if ascending
                     else (PadEvent.created_at.desc(), PadEvent.id.desc()))
            rows = s.scalars(query.order_by(*order).offset(offset(page)).limit(PAGE_SIZE))
            return [pad_render.event(e) for e in rows], total

    def history(self, caller: Caller, public_id: str, after: int = 0) -> dict:
        """The pad's edit history (updates with their text changes) and its events, for playback."""
        with self.db.read_session() as s:
            row = self.load(s, caller, public_id)
            pad_id = row.id
            events = [pad_render.event(e) for e in s.scalars(select(PadEvent).where(PadEvent.pad_id == row.id)
                                                              .order_by(PadEvent.created_at, PadEvent.id))]
        self.docs.load(pad_id)   # a pad nobody opened yet gets its first update (its contents) now
        return {"pad_public_id": public_id.upper(), **self.docs.history(pad_id, after), "events": events}

    def environment(self, caller: Caller, env_id: str) -> dict:
        with self.db.read_session() as s:
            env = s.get(PadEnvironment, int(env_id)) if env_id.isdigit() and len(env_id) < 12 else None
            row = s.get(Pad, env.pad_id) if env else None
            if row is None or not self.visible(s, caller, row):
                raise NotFound(what="pad environment")
            return pad_render.environment(env, row)

    # ---- writing ---------------------------------------------------------------------------------

    def add_event(self, s, row: Pad, caller: Caller, kind: str, meta: str | None = None) -> PadEvent:
        ev = PadEvent(pad_id=row.id, kind=kind, meta=meta, user_name=caller.display_name,
                      user_email=caller.email, created_at=utcnow())
        s.add(ev)
        row.updated_at = ev.created_at
        return ev

    def _new_public_id(self, s) -> str:
        while True:
            candidate = "".join(secrets.choice(ALPHABET) for _ in range(8))
            if s.scalar(select(Pad.id).where(Pad.public_id == candidate)) is None:
                return candidate

    def _check_quota(self, s, caller: Caller) -> None:
        """Count this month's pads of the caller's organization (or the caller) with that row locked
        on PostgreSQL; SQLite's write transactions are serial already (BEGIN IMMEDIATE)."""
        if caller.org_id is not None:
            org = s.execute(select(Organization).where(Organization.id == caller.org_id)
                            .with_for_update()).scalar_one()
            limit = org.monthly_pad_limit
            scope = Pad.org_id == caller.org_id
        else:
            s.execute(select(User.uuid).where(User.uuid == caller.uuid).with_for_update())
            limit = self.settings.pad_monthly_limit or None
            scope = (Pad.owner == caller.uuid) & Pad.org_id.is_(None)
        if not limit:
            return
        used = s.scalar(select(func.count()).select_from(Pad)
                        .where(scope, Pad.created_at >= month_start(utcnow())))
        if used >= limit:
            raise OverQuota()

    def _owner_for(self, s, caller: Caller, value: Any) -> str:
        email = text(value, "user_email").strip().lower()
        if not caller.org_owner:
            raise Forbidden("only organization owners may set user_email")
        if not valid_email(email):
            raise Usage("user_email is not an email address")
        user = s.scalar(select(User).where(func.lower(User.email) == email))
        if user is not None:
            if user.org_id != caller.org_id:
                raise Usage("user_email is not a member of your organization")
            return user.uuid
        org = s.get(Organization, caller.org_id)
        domains = [d for d in org.email_domains.split(",") if d]
        if email.rsplit("@", 1)[1] not in domains:
            raise Usage("user_email is not in your organization's email domains")
        # No key yet: an admin issues one (`apikey create`); the secret is never shown.
        user_id = str(uuidlib.uuid4())
        s.add(User(uuid=user_id, name="", secret_hash=hash_secret(secrets.token_urlsafe(32)), email=email,
                   org_id=caller.org_id, org_role="member"))
        s.flush()
        return user_id

    def _seed(self, s, caller: Caller, params: dict, current_language: str | None) -> tuple[str, str, Any]:
        """(language, contents, question) from `language`, `contents`, `question_id`."""
        if "question_id" in params and params["question_id"] not in (None, ""):
            if "contents" in params:
                raise Usage("set either contents or question_id, not both")
            question = self.questions.load(s, caller, integer(params["question_id"], "question_id"))
            if "language" in params and language_param(params["language"]) != question.language:
                raise Usage("language differs from the question's language")
            question.used += 1
            return question.language, question.contents, question
        lang = language_param(params["language"]) if "language" in params else current_language
        contents = text(params["contents"], "contents") if "contents" in params else None
        return lang, contents, None

    def create(self, caller: Caller, params: dict, base: str) -> tuple[dict, str]:
        with self.db.session() as s:
            org = s.get(Organization, caller.org_id) if caller.org_id else None
            owner = self._owner_for(s, caller, params["user_email"]) if params.get("user_email") else caller.uuid
            lang, contents, question = self._seed(s, caller, params, org.default_language if org else "plaintext")
            title = text(params.get("title"), "title").strip()
            notes = text(params.get("notes"), "notes")
            private = boolean(params["private"], "private") if "private" in params else (
                org.default_private if org else False)
            execution = boolean(params["execution_enabled"], "execution_enabled") if "execution_enabled" in params \
                else (org.default_execution_enabled if org else True)
            self._check_quota(s, caller)
            public_id = self._new_public_id(s)
            now = utcnow()
            row = Pad(public_id=public_id, owner=owner, org_id=caller.org_id, title=title or f"Untitled Pad {public_id}",
                      language=lang, notes=notes, private=private, execution_enabled=execution,
                      created_at=now, updated_at=now)
            s.add(row)
            s.flush()
            self._new_environment(s, row, lang, contents, question)
            s.flush()
            return pad_render.pad(s, row, base, self.pages), public_id

    def _new_environment(self, s, row: Pad, lang: str, contents: str | None, question) -> PadEnvironment:
        if contents is None:
            contents = languages.get(lang).example
        now = utcnow()
        env = PadEnvironment(pad_id=row.id, language=lang, contents=contents,
                             question_id=question.id if question else None, created_at=now, updated_at=now)
        s.add(env)
        s.flush()
        row.active_environment_id = env.id
        row.language = lang
        row.updated_at = now
        if question is not None and s.get(PadQuestion, (row.id, question.id)) is None:
            s.add(PadQuestion(pad_id=row.id, question_id=question.id))
        return env

    def update(self, caller: Caller, public_id: str, params: dict, base: str) -> dict | None:
        """The updated pad, or None when it was deleted. A change of the code (contents, language,
        question) becomes an update of the pad's document, which open pad pages receive."""
        out = self._update(caller, public_id, params, base)
        if out is not None and any(k in params for k in ("language", "contents", "question_id")):
            with self.db.read_session() as s:
                row = s.scalar(select(Pad).where(Pad.public_id == out["id"]))
                pad_id, text_now = row.id, s.get(PadEnvironment, row.active_environment_id).contents
            self.docs.set_text(pad_id, text_now, caller.display_name)
        return out

    def _update(self, caller: Caller, public_id: str, params: dict, base: str) -> dict | None:
        with self.db.session() as s:
            row = self.load(s, caller, public_id, write=True)
            if only_true(params.get("deleted")):
                row.deleted_at = row.updated_at = utcnow()
                return None
            if row.ended_at is not None:
                frozen = [f for f in ENDED_FROZEN if f in params]
                if frozen:
                    raise Conflict("pad has ended")
            if "title" in params:
                row.title = text(params["title"], "title").strip() or f"Untitled Pad {row.public_id}"
            if "notes" in params:
                row.notes = text(params["notes"], "notes")
            if "private" in params:
                row.private = boolean(params["private"], "private")
            if params.get("user_email"):
                row.owner = self._owner_for(s, caller, params["user_email"])
            self._recode(s, caller, row, params)
            if "execution_enabled" in params:
                enabled = boolean(params["execution_enabled"], "execution_enabled")
                if enabled != row.execution_enabled:
                    row.execution_enabled = enabled
                    self.add_event(s, row, caller, "enabled" if enabled else "disabled")
            if only_true(params.get("ended")) and row.ended_at is None:
                row.ended_at = utcnow()
                self.add_event(s, row, caller, "ended")
            row.updated_at = utcnow()
            s.flush()
            return pad_render.pad(s, row, base, self.pages)

    def _recode(self, s, caller: Caller, row: Pad, params: dict) -> None:
        if not any(k in params for k in ("language", "contents", "question_id")):
            return
        active = s.get(PadEnvironment, row.active_environment_id)
        lang, contents, question = self._seed(s, caller, params, row.language)
        if question is not None or lang != row.language:
            existing = s.scalar(select(PadEnvironment).where(PadEnvironment.pad_id == row.id,
                                                             PadEnvironment.language == lang)
                                .order_by(PadEnvironment.id.desc()))
            if existing is not None and question is None:
                row.active_environment_id, row.language = existing.id, lang
                if contents is not None:
                    existing.contents, existing.updated_at = contents, utcnow()
                return
            self._new_environment(s, row, lang, contents, question)
        elif contents is not None:
            active.contents, active.updated_at = contents, utcnow()
