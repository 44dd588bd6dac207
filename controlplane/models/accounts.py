from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class User(Base):
    __tablename__ = "users"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    # "<salt hex>$<hmac-sha256 hex>" of the secret API key; the key itself is never stored.
    secret_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # The pads face: an email (login name, `owner_email`) and at most one organization, as owner or member.
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="SET NULL"), index=True)
    org_role: Mapped[str | None] = mapped_column(String(16))
