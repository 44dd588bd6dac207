from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class Drive(Base):
    __tablename__ = "drives"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    # NULL for the standard library (shared, read-only drives).
    owner: Mapped[str | None] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    size: Mapped[int] = mapped_column(BigInteger)
    # raw: a sparse raw file; gzip: a gzip stream (standard drives imported with --gzip).
    format: Mapped[str] = mapped_column(String(16), default="raw")
    media: Mapped[str] = mapped_column(String(16), default="disk")
    claim_type: Mapped[str] = mapped_column(String(16), default="exclusive")
    readers: Mapped[list] = mapped_column(JSON, default=list)
    tags: Mapped[list] = mapped_column(JSON, default=list)
    # Free-form keys: user:*, encryption:cipher, tier, avoid.
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    standard: Mapped[bool] = mapped_column(Boolean, default=False)
    read_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    read_requests: Mapped[int] = mapped_column(BigInteger, default=0)
    write_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    write_requests: Mapped[int] = mapped_column(BigInteger, default=0)
    # The last imaging failure, shown as `imaging:error` until the drive is imaged again.
    imaging_error: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
