"""Projects of the Containers face: created by the operator (admin CLI), read through the API.

An account sees its own projects and every template. A project's workspace files are a clean tar.gz
kept by storage/projects.py; its configuration is checked by projectconfig.validate.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from sqlalchemy import func, or_, select

from ..db import Database
from ..errors import Busy, NotFound, Usage
from ..models import Project, User, Workspace
from . import paging, projectconfig
from .containers_errors import invalid, project_not_found
from storage.errors import BadData
from storage.projects import ProjectFiles, read_source

_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_UNPACKED = 256 * 1024**2


class Projects:
    def __init__(self, db: Database, files: ProjectFiles):
        self.db = db
        self.files = files

    # ---- the operator's side (admin CLI) ---------------------------------------------------------

    def create(self, *, name: str, image: str, source: Path, owner: str | None = None, template: bool = False,
               project_id: str | None = None, slots: int = 1, description: str = "", stack: str = "") -> str:
        if project_id is not None:
            project_id = project_id.lower()
            if not _ID.match(project_id):
                raise Usage("project id must be 32 hexadecimal characters")
        project_id = project_id or uuid.uuid4().hex
        if not name.strip():
            raise Usage("the project needs a name")
        if not 1 <= slots <= 100:
            raise Usage("slots must be 1..100")
        try:
            src = read_source(source, max_unpacked=MAX_UNPACKED)
        except BadData as exc:
            raise Usage(exc.message) from None
        try:
            projectconfig.validate(src.config)
        except projectconfig.ConfigError as exc:
            raise Usage("config.json: {reason}", reason=str(exc)) from None
        with self.db.session() as s:
            if s.get(Project, project_id) is not None:
                raise Busy("project {id} exists already", id=project_id)
            if owner is not None and s.get(User, owner) is None:
                raise NotFound(what="user")
            self.files.save(project_id, src.files)
            s.add(Project(id=project_id, owner=owner, name=name.strip()[:256], image=image, config=src.config,
                          workspace_init=src.workspace_init, template=template or owner is None, slots=slots,
                          description=description, stack=stack, files_bytes=len(src.files)))
        return project_id

    def all(self) -> list[Project]:
        with self.db.read_session() as s:
            rows = list(s.scalars(select(Project).order_by(Project.created_at, Project.id)))
            s.expunge_all()  # keep the loaded values past the read session's rollback
            return rows

    def show(self, project_id: str) -> Project:
        with self.db.read_session() as s:
            project = s.get(Project, project_id.lower())
            if project is None:
                raise NotFound(what="project")
            s.expunge(project)
            return project

    def remove(self, project_id: str) -> None:
        """Refused while a workspace of the project is not removed (its files are still needed)."""
        with self.db.session() as s:
            project = s.get(Project, project_id.lower())
            if project is None:
                raise NotFound(what="project")
            live = s.scalar(select(func.count()).select_from(Workspace)
                            .where(Workspace.project_id == project.id, Workspace.state != 4))
            if live:
                raise Busy("project {id} has {n} workspace(s) that are not removed", id=project.id, n=live)
            s.delete(project)
        self.files.remove(project.id)

    # ---- the API's side ------------------------------------------------------------------------

    @staticmethod
    def visible(user: str):
        return or_(Project.owner == user, Project.template.is_(True))

    def get(self, user: str, project_id: str) -> Project:
        with self.db.read_session() as s:
            project = s.get(Project, project_id) if _ID.match(project_id or "") else None
            if project is None or not (project.owner == user or project.template):
                raise project_not_found()
            s.expunge(project)
            return project

    def page(self, user: str, limit: str | None, page_token: str | None) -> dict:
        count = _int(limit, 10, 1, 20, "limit")
        try:
            start = paging.offset(page_token)
        except paging.BadToken as exc:
            raise invalid(str(exc)) from None
        with self.db.read_session() as s:
            rows = list(s.scalars(select(Project).where(self.visible(user))
                                  .order_by(Project.created_at, Project.id).offset(start).limit(count + 1)))
            return {"items": [self.render(p) for p in rows[:count]],
                    "paging": paging.paging(start, count, len(rows) > count)}

    @staticmethod
    def render(p: Project) -> dict:
        return {"id": p.id, "name": p.name, "created_at": paging.date(p.created_at),
                "config": {"project_config": p.config, "workspace_init": p.workspace_init or ""},
                "stack": p.stack, "template": bool(p.template), "description": p.description,
                "slots": p.slots}


def _int(text, default: int, low: int, high: int, name: str) -> int:
    if text is None or text == "":
        return default
    text = str(text).strip()
    if not re.fullmatch(r"-?\d{1,9}", text) or not low <= int(text) <= high:
        raise invalid(f"{name} must be an integer {low}..{high}")
    return int(text)
