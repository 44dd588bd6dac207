"""One-time tickets for the browser faces: a console (VNC, terminal) or a pad room.

The API issues a ticket when a user asks to open something it may open; the console proxy claims it
when the browser connects. A ticket is 32 random bytes (URL-safe), stored only as its SHA-256, lives
`ttl` seconds, and is claimed at most once: the claim is one UPDATE that succeeds only while
`claimed_at` is NULL and the ticket has not expired, so two connections racing with one ticket get
one winner whatever the database. Tickets are never logged; old rows are swept by `sweep`.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select, update

from ..db import Database
from ..models import Ticket
from ..models.base import utcnow

DEFAULT_TTL = 60.0


class TicketKind(enum.StrEnum):
    VNC = "vnc"            # target: a server uuid
    TERMINAL = "terminal"  # target: a workspace id
    PAD = "pad"            # target: a pad's public id; owner NULL for a guest, label = the shown name


@dataclass(frozen=True)
class Claim:
    kind: str
    target: str
    owner: str | None
    label: str


def digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode("utf-8", "surrogateescape")).hexdigest()


class Tickets:
    def __init__(self, db: Database):
        self.db = db

    def issue(self, kind: str, target: str, owner: str | None, label: str = "",
              ttl: float = DEFAULT_TTL) -> tuple[str, dt.datetime]:
        """A fresh ticket for `target`; returns (ticket, expires_at). Only its digest is stored."""
        ticket = secrets.token_urlsafe(32)
        expires = utcnow() + dt.timedelta(seconds=ttl)
        with self.db.session() as s:
            s.add(Ticket(kind=str(TicketKind(kind)), digest=digest(ticket), owner=owner, target=target,
                         label=label[:128], expires_at=expires))
        return ticket, expires

    def claim(self, kind: str, ticket: str, target: str | None = None) -> Claim | None:
        """Use `ticket` once. None when it is unknown, of another kind or target, expired, or used."""
        if not ticket or len(ticket) > 128:
            return None
        key = digest(ticket)
        now = utcnow()
        with self.db.session() as s:
            taken = s.execute(update(Ticket)
                              .where(Ticket.digest == key, Ticket.kind == kind,
                                     Ticket.claimed_at.is_(None), Ticket.expires_at > now)
                              .values(claimed_at=now)).rowcount
            if taken != 1:
                return None
            row = s.scalars(select(Ticket).where(Ticket.digest == key)).one()
            if target is not None and row.target != target:
                return None  # claimed all the same: a ticket shown to the wrong target is spent
            return Claim(kind=row.kind, target=row.target, owner=row.owner, label=row.label)

    def sweep(self, older_than: float = 3600.0) -> int:
        """Delete tickets that expired more than `older_than` seconds ago; returns how many."""
        cutoff = utcnow() - dt.timedelta(seconds=older_than)
        with self.db.session() as s:
            return s.execute(delete(Ticket).where(Ticket.expires_at < cutoff)).rowcount
