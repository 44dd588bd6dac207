from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class Project(Base):
    """A Containers project: an image, a configuration (scenarios for submissions), an init script and
    the workspace files laid into /home/user/workspace (a tar.gz under the state directory).

    `owner` NULL with `template` true: a template every account sees."""

    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str | None] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    image: Mapped[str] = mapped_column(String(64))
    # The project configuration as JSON text (validated, stored as given).
    config: Mapped[str] = mapped_column(Text, default="{}")
    workspace_init: Mapped[str] = mapped_column(Text, default="")
    stack: Mapped[str] = mapped_column(String(128), default="")
    description: Mapped[str] = mapped_column(String(1024), default="")
    template: Mapped[bool] = mapped_column(Boolean, default=False)
    slots: Mapped[int] = mapped_column(Integer, default=1)
    files_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Workspace(Base):
    """A long-lived VM of one account, made from a project. `state` is the contract's code (1 starting,
    2 running, 3 stopped, 4 removed, 5 error); `pending` names the agent action under way (create,
    stop, resume, remove) or is NULL. Rows are kept after removal (state 4)."""

    __tablename__ = "workspaces"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), index=True)
    # No foreign key: a removed project leaves its old workspaces' records readable.
    project_id: Mapped[str] = mapped_column(String(32), index=True)
    project_name: Mapped[str] = mapped_column(String(256))
    image: Mapped[str] = mapped_column(String(64))
    state: Mapped[int] = mapped_column(Integer, index=True, default=1)
    pending: Mapped[str | None] = mapped_column(String(16))
    error_reason: Mapped[str | None] = mapped_column(String(512))
    config: Mapped[str] = mapped_column(Text, default="{}")
    workspace_init: Mapped[str] = mapped_column(Text, default="")
    inactivity_timeout: Mapped[int] = mapped_column(Integer, default=15)
    workspace_token: Mapped[str] = mapped_column(String(36))
    token_required: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_resume: Mapped[bool] = mapped_column(Boolean, default=True)
    retention_stopped: Mapped[int] = mapped_column(Integer, default=0)
    retention_total: Mapped[int] = mapped_column(Integer, default=0)
    slots: Mapped[int] = mapped_column(Integer, default=1)
    memory_mib: Mapped[int] = mapped_column(Integer)
    init_failed: Mapped[bool] = mapped_column(Boolean, default=False)
    init_output: Mapped[bytes | None] = mapped_column(LargeBinary)
    init_error: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # When the workspace last entered state 2, 3 and 5 (the timers count from these).
    running_since: Mapped[dt.datetime | None] = mapped_column()
    stopped_at: Mapped[dt.datetime | None] = mapped_column()
    failed_at: Mapped[dt.datetime | None] = mapped_column()
    terminated_at: Mapped[dt.datetime | None] = mapped_column()
    last_usage: Mapped[dt.datetime | None] = mapped_column()
