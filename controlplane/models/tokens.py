from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class Token(Base):
    """A bearer token of one account for one face (`kind`: workspaces; the pads face adds its own kinds).

    Only the SHA-256 of the token is stored: tokens are 128 random bits, so a plain digest is as hard to
    reverse as the token is to guess, and it can be looked up by an index (a salted hash could not)."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    owner: Mapped[str] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    # The token's first four characters, so an operator can tell tokens apart in `token list`.
    hint: Mapped[str] = mapped_column(String(8), default="")
    label: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
