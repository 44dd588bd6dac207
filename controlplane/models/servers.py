from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class Server(Base):
    __tablename__ = "servers"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), index=True)
    # The validated configuration keys exactly as the API shows them (name, cpu, mem, ide:0:0, nic:0:model…).
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    # What the user asked for: active | stopped. The agent makes libvirt match it.
    desired: Mapped[str] = mapped_column(String(16), default="stopped")
    # What libvirt last showed: active | stopped | paused | dumped | dead.
    status: Mapped[str] = mapped_column(String(16), default="stopped")
    started_at: Mapped[dt.datetime | None] = mapped_column()
    # MAC addresses assigned at creation, per NIC index, so they stay stable across restarts.
    macs: Mapped[dict] = mapped_column(JSON, default=dict)
    vnc_port: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class DriveClaim(Base):
    """A running server's use of a drive; exclusive drives have at most one claim."""

    __tablename__ = "drive_claims"
    __table_args__ = (UniqueConstraint("server", "device"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    drive: Mapped[str] = mapped_column(ForeignKey("drives.uuid", ondelete="CASCADE"), index=True)
    server: Mapped[str] = mapped_column(ForeignKey("servers.uuid", ondelete="CASCADE"), index=True)
    device: Mapped[str] = mapped_column(String(16))
    readonly: Mapped[bool] = mapped_column(Boolean, default=False)


class Resource(Base):
    """An IP address (from the operator's pool) or a VLAN (a private isolated network) a user holds."""

    __tablename__ = "resources"
    __table_args__ = (UniqueConstraint("type", "resource"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(8))
    # ip: the address; vlan: a uuid
    resource: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    tags: Mapped[list] = mapped_column(JSON, default=list)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
