from __future__ import annotations

import datetime as dt

from sqlalchemy import Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class Submission(Base):
    """A run of a project's scenario on a submitted source, in a throw-away VM (workspaces-api.md
    endpoints 11-14, §A-§D). `status` is the contract's code (0 waiting, 1 preparation, 3 execution,
    11-22 final); `agent` names the agent process that took it (its reconcile ends what a dead one
    left). Stream bytes live under the state directory (storage/submissions.py); `streams` is the JSON
    object name -> size of those produced, `stages` the JSON of the stages' results once known."""

    __tablename__ = "submissions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), index=True)
    # No foreign key: a removed project leaves its old submissions readable.
    project_id: Mapped[str] = mapped_column(String(32))
    project_name: Mapped[str] = mapped_column(String(256))
    image: Mapped[str] = mapped_column(String(64))
    scenario: Mapped[str] = mapped_column(String(64))
    config: Mapped[str] = mapped_column(Text)
    workspace_init: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[int] = mapped_column(Integer, index=True, default=0)
    reason: Mapped[str | None] = mapped_column(String(512))
    score: Mapped[float | None] = mapped_column(Float)
    time: Mapped[float | None] = mapped_column(Float)
    stages: Mapped[str | None] = mapped_column(Text)
    streams: Mapped[str] = mapped_column(Text, default="{}")
    agent: Mapped[str | None] = mapped_column(String(128))
    vm: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column()
