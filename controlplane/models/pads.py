from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class Pad(Base):
    """An interview pad (CoderPad). `public_id` is the 8-character id clients see; `id` is the integer
    key pad environments name as `pad_id`. `org_id` is the owner's organization when the pad was made
    (quota and stats count by it). Deleted pads stay (quota, stats) with `deleted_at` set."""

    __tablename__ = "pads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(8), unique=True)
    owner: Mapped[str] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), index=True)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="SET NULL"), index=True)
    title: Mapped[str] = mapped_column(String(255))
    language: Mapped[str] = mapped_column(String(32))
    notes: Mapped[str] = mapped_column(Text, default="")
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    execution_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # No foreign key: the environment row names its pad, and the two would make a cycle.
    active_environment_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column()
    deleted_at: Mapped[dt.datetime | None] = mapped_column()


class PadEnvironment(Base):
    """One language's editor state of a pad (one file for now)."""

    __tablename__ = "pad_environments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pad_id: Mapped[int] = mapped_column(ForeignKey("pads.id", ondelete="CASCADE"), index=True)
    question_id: Mapped[int | None] = mapped_column(ForeignKey("questions.id", ondelete="SET NULL"))
    language: Mapped[str] = mapped_column(String(32))
    contents: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PadEvent(Base):
    """Something that happened in a pad: joined, left, ran, enabled, disabled, ended."""

    __tablename__ = "pad_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pad_id: Mapped[int] = mapped_column(ForeignKey("pads.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    meta: Mapped[str | None] = mapped_column(String(255))
    user_name: Mapped[str] = mapped_column(String(255))
    user_email: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Question(Base):
    """A question pads can be created from; `org_id` is its owner's organization at creation."""

    __tablename__ = "questions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), index=True)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="SET NULL"), index=True)
    title: Mapped[str] = mapped_column(String(255))
    language: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    contents: Mapped[str] = mapped_column(Text, default="")
    solution: Mapped[str | None] = mapped_column(Text)
    candidate_description: Mapped[str | None] = mapped_column(Text)
    shared: Mapped[bool] = mapped_column(Boolean, default=True)
    used: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class PadQuestion(Base):
    """Which questions seeded a pad (`question_ids`); deleting a question drops its rows here."""

    __tablename__ = "pad_questions"

    pad_id: Mapped[int] = mapped_column(ForeignKey("pads.id", ondelete="CASCADE"), primary_key=True)
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id", ondelete="CASCADE"), primary_key=True)
