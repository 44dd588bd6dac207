from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class Image(Base):
    """A guest image sandboxes run on: a read-only root file system (a standard drive) plus the kernel
    and boot initramfs it boots with."""

    __tablename__ = "images"

    slug: Mapped[str] = mapped_column(String(64), primary_key=True)
    drive: Mapped[str] = mapped_column(ForeignKey("drives.uuid"))
    kernel: Mapped[str] = mapped_column(String(512))
    initramfs: Mapped[str] = mapped_column(String(512))
    cmdline: Mapped[str] = mapped_column(String(1024))
    memory_mib: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(String(512), default="")
    built_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Sandbox(Base):
    """One run of a command on uploaded files in a throw-away VM (OpenDevelop's sandbox)."""

    __tablename__ = "sandboxes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), index=True)
    image: Mapped[str] = mapped_column(String(64))
    # The command as the client sent it: a JSON list (joined with &&) or a plain string.
    cmd: Mapped[str] = mapped_column(Text)
    timeout: Mapped[int] = mapped_column(Integer)
    # running | terminated (queued ones show as running, as OpenDevelop had no other state)
    status: Mapped[str] = mapped_column(String(16), index=True, default="running")
    return_code: Mapped[int | None] = mapped_column(Integer)
    logs: Mapped[str | None] = mapped_column(Text)
    timed_out: Mapped[bool] = mapped_column(Boolean, default=False)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    killed: Mapped[bool] = mapped_column(Boolean, default=False)
    files_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column()
