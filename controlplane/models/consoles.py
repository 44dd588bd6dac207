"""Rows of the browser faces: one-time console tickets, users' SSH keys, and the pad page's edit history."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class Ticket(Base):
    """A one-time, short-lived permission to open one console (VNC of a server, terminal of a workspace)
    or one pad room. Only the SHA-256 of the ticket is stored. `target` names what it opens (a server
    uuid, a workspace id, a pad's public id); `claimed_at` is set by the one connection that uses it, in
    an UPDATE that only succeeds while it is NULL, so two connections can never share a ticket.
    `owner` is NULL for a pad guest (no account); `label` is the name a pad guest gave."""

    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    owner: Mapped[str | None] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), index=True)
    target: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    claimed_at: Mapped[dt.datetime | None] = mapped_column()


class SshKey(Base):
    """A public key a user registered for the SSH gateway to workspaces. `fingerprint` is OpenSSH's
    SHA256 form, unique per user; `key` is the public key's base64 blob and `algorithm` its type."""

    __tablename__ = "ssh_keys"
    __table_args__ = (UniqueConstraint("owner", "fingerprint"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), index=True)
    algorithm: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    comment: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PadUpdate(Base):
    """One CRDT update (a Yjs v1 update) applied to a pad's document, in order (`seq` per pad), with who
    made it and when: the edit history and the playback read these."""

    __tablename__ = "pad_updates"
    __table_args__ = (UniqueConstraint("pad_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pad_id: Mapped[int] = mapped_column(ForeignKey("pads.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    author: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class PadSnapshot(Base):
    """The pad's whole document state after update `upto_seq` (Yjs state as an update), and its text, so
    that a room loads without replaying every update since the pad began."""

    __tablename__ = "pad_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pad_id: Mapped[int] = mapped_column(ForeignKey("pads.id", ondelete="CASCADE"), index=True)
    upto_seq: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    text: Mapped[str] = mapped_column(Text, default="")
