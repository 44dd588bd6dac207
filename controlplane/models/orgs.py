from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class Organization(Base):
    """A pads organization: its members (users.org_id) share pads and questions, its defaults apply to
    their new pads, and its monthly pad limit (NULL: none) counts the pads all of them create."""

    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    default_language: Mapped[str] = mapped_column(String(32), default="plaintext")
    default_private: Mapped[bool] = mapped_column(Boolean, default=False)
    default_execution_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    pads_visible_to_members: Mapped[bool] = mapped_column(Boolean, default=True)
    monthly_pad_limit: Mapped[int | None] = mapped_column(Integer)
    # Mail domains (comma separated, lower case) whose addresses `user_email` may create accounts for.
    email_domains: Mapped[str] = mapped_column(String(1024), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class LoginFailure(Base):
    """One failed `POST /api/auth/login` for a username (its SHA-256, so no typed secret lands here)."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
