"""Questions (pads-api.md E7-E11, E16): visible to their owner, to members of the owner's organization
when shared, and to its owners; writable by the owner and organization owners."""

from __future__ import annotations

from sqlalchemy import delete, func, select

from ..db import Database
from ..errors import Forbidden, NotFound, Usage
from ..models import Question, User, utcnow
from . import languages, pad_render
from .pad_accounts import Caller
from .pad_params import PAGE_SIZE, offset, boolean, text

FIELDS = ("description", "contents", "solution", "candidate_description")


class Questions:
    def __init__(self, db: Database):
        self.db = db

    def visible(self, s, caller: Caller, row: Question) -> bool:
        if row.owner == caller.uuid:
            return True
        owner_org = s.scalar(select(User.org_id).where(User.uuid == row.owner))
        if caller.org_id is None or owner_org != caller.org_id:
            return False
        return row.shared or caller.org_owner

    def load(self, s, caller: Caller, question_id, write: bool = False) -> Question:
        key = question_id if isinstance(question_id, int) else (
            int(question_id) if str(question_id).isdigit() and len(str(question_id)) < 12 else None)
        row = s.get(Question, key) if key is not None and 0 < key < 2**62 else None
        if row is None or not self.visible(s, caller, row):
            raise NotFound(what="question")
        if write and row.owner != caller.uuid and not caller.org_owner:
            raise Forbidden("Forbidden")
        return row

    def show(self, caller: Caller, question_id: str) -> dict:
        with self.db.read_session() as s:
            return pad_render.question(s, self.load(s, caller, question_id))

    def list(self, caller: Caller, sort_field: str, ascending: bool, page: int,
             org: bool = False) -> tuple[list[dict], int]:
        with self.db.read_session() as s:
            if org:
                if caller.org_id is None:
                    raise NotFound(what="organization")
                members = select(User.uuid).where(User.org_id == caller.org_id)
                query = select(Question).where(Question.owner.in_(members))
                if not caller.org_owner:
                    query = query.where((Question.owner == caller.uuid) | Question.shared.is_(True))
            else:
                query = select(Question).where(Question.owner == caller.uuid)
            total = s.scalar(select(func.count()).select_from(query.subquery()))
            column = getattr(Question, sort_field)
            order = (column.asc(), Question.id.asc()) if ascending else (column.desc(), Question.id.desc())
            rows = s.scalars(query.order_by(*order).offset(offset(page)).limit(PAGE_SIZE))
            return [pad_render.question(s, row) for row in rows], total

    def _apply(self, row: Question, params: dict, creating: bool) -> None:
        if creating or "title" in params:
            title = text(params.get("title"), "title").strip()
            if not title:
                raise Usage("title is required")
            row.title = title
        if creating or "language" in params:
            lang = text(params.get("language"), "language").strip()
            if not lang:
                raise Usage("language is required")
            if not languages.known(lang):
                raise Usage("unsupported language {lang!r}", lang=lang[:40])
            row.language = lang
        for field in FIELDS:
            if field in params:
                value = text(params[field], field)
                setattr(row, field, value)
        if "shared" in params:
            row.shared = boolean(params["shared"], "shared")

    def create(self, caller: Caller, params: dict) -> tuple[dict, int]:
        with self.db.session() as s:
            now = utcnow()
            row = Question(owner=caller.uuid, org_id=caller.org_id, description="", contents="", shared=True,
                           used=0, created_at=now, updated_at=now)
            self._apply(row, params, creating=True)
            s.add(row)
            s.flush()
            return pad_render.question(s, row), row.id

    def update(self, caller: Caller, question_id: str, params: dict) -> dict:
        with self.db.session() as s:
            row = self.load(s, caller, question_id, write=True)
            self._apply(row, params, creating=False)
            row.updated_at = utcnow()
            s.flush()
            return pad_render.question(s, row)

    def delete(self, caller: Caller, question_id: str) -> None:
        """Hard delete; pads keep their contents and lose the id (foreign keys: SET NULL, CASCADE)."""
        with self.db.session() as s:
            row = self.load(s, caller, question_id, write=True)
            s.execute(delete(Question).where(Question.id == row.id))
