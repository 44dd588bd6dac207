"""Who may enter a pad room, as whom, and the control plane's services a room calls (blocking).

- A signed-in user (the pads face's `session-access-key` cookie) who can see the pad gets a ticket in
  their own name; the pad's owner and its organization's owners are the room's owners (private
  notes, ending the pad). They may ask to watch invisibly (a spectator: read-only, unlisted).
- Anyone else is a guest who gives a name: refused on a `private` pad (403).
- Tickets are one-time (services/tickets.py, kind `pad`, target the pad's public id), 60 s.
"""

from __future__ import annotations

from sqlalchemy import select

from ..errors import Forbidden, NotFound, Unauthorized, Usage
from ..models import Pad, PadEvent, utcnow
from ..services import pad_render
from ..services.pad_accounts import Caller
from ..services.pad_errors import Unavailable
from ..services.pads import valid_public_id
from ..services.tickets import Tickets, TicketKind
from .room import PadServices, Person

INVISIBLE = "invisible"
NAME_LIMIT = 64


class PadAccess:
    def __init__(self, face, tickets: Tickets):
        self.face = face          # padwiring.PadFace
        self.tickets = tickets
        self.db = face.pads.db

    # ---- tickets ----------------------------------------------------------------------------------

    def user_for(self, token: str | None) -> str | None:
        if not token:
            return None
        try:
            return self.face.accounts.authenticate(token)
        except Unauthorized:
            return None

    def find(self, s, public_id: str) -> Pad:
        key = valid_public_id(public_id)
        row = s.scalar(select(Pad).where(Pad.public_id == key)) if key else None
        if row is None or row.deleted_at is not None:
            raise NotFound(what="pad")
        return row

    def issue(self, public_id: str, token: str | None, name: str, invisible: bool) -> dict:
        user = self.user_for(token)
        with self.db.read_session() as s:
            row = self.find(s, public_id)
            caller = self.face.accounts.caller(user) if user else None
            if caller is not None and self.face.pads.visible(s, caller, row):
                ticket, expires = self.tickets.issue(TicketKind.PAD, row.public_id, user,
                                                     INVISIBLE if invisible else "")
                return {"ticket": ticket, "name": caller.display_name, "guest": False}
            if row.private:
                raise Forbidden("this pad is private: sign in to join it")
            target = row.public_id
        name = " ".join(name.split())
        if not name or len(name) > NAME_LIMIT:
            raise Usage("give a name of 1 to {limit} characters", limit=NAME_LIMIT)
        ticket, _ = self.tickets.issue(TicketKind.PAD, target, None, name)
        return {"ticket": ticket, "name": name, "guest": True}

    def person_for(self, claim) -> tuple[int, str, Person] | None:
        """(pad id, public id, the person) for a claimed pad ticket, else None (the pad is gone, or
        it became private for a guest, or invisible to the user)."""
        key = claim.target
        with self.db.read_session() as s:
            row = s.scalar(select(Pad).where(Pad.public_id == key))
            if row is None or row.deleted_at is not None:
                return None
            if claim.owner is None:
                if row.private:
                    return None
                return row.id, row.public_id, Person(name=claim.label, email=None, user=None, owner=False)
            caller = self.face.accounts.caller(claim.owner)
            if not self.face.pads.visible(s, caller, row):
                return None
            return row.id, row.public_id, Person(name=caller.display_name, email=caller.email, user=caller.uuid,
                                                 owner=self.face.pads.writable(s, caller, row),
                                                 invisible=claim.label == INVISIBLE)

    def history(self, public_id: str, token: str | None, after: int) -> dict:
        user = self.user_for(token)
        if user is None:
            raise Unauthorized("sign in to see a pad's history")
        return self.face.pads.history(self.face.accounts.caller(user), public_id, after)

    # ---- what rooms call ---------------------------------------------------------------------------

    def services(self) -> PadServices:
        """One for all rooms of the process (they share its group commit)."""
        if getattr(self, "_services", None) is None:
            self._services = PadServices(self.face.pads.docs, self.info, self.event, self.run, self.end, self.notes)
        return self._services

    def info(self, pad_id: int) -> dict:
        with self.db.read_session() as s:
            row = s.get(Pad, pad_id)
            return {"public_id": row.public_id, "ended": row.ended_at is not None or row.deleted_at is not None,
                    "execution_enabled": row.execution_enabled, "language": row.language, "notes": row.notes,
                    "title": row.title}

    def event(self, pad_id: int, person: Person, kind: str, meta: str | None) -> dict:
        with self.db.session() as s:
            ev = PadEvent(pad_id=pad_id, kind=kind, meta=meta, user_name=person.name, user_email=person.email,
                          created_at=utcnow())
            s.add(ev)
            row = s.get(Pad, pad_id)
            row.updated_at = ev.created_at
            s.flush()
            return pad_render.event(ev)

    def _owner_caller(self, public_id: str) -> Caller:
        with self.db.read_session() as s:
            owner = s.scalar(select(Pad.owner).where(Pad.public_id == public_id))
        return self.face.accounts.caller(owner)

    def run(self, public_id: str, person: Person, contents: str, stdin: str) -> dict:
        if self.face.runs is None:
            raise Unavailable("code execution is not available here")
        author = Caller(person.user or "", person.name, person.email, None, None)
        return self.face.runs.run(self._owner_caller(public_id), public_id, {"contents": contents, "stdin": stdin},
                                  author=author)

    def end(self, public_id: str, person: Person) -> None:
        if not person.user:
            raise Forbidden("Forbidden")
        self.face.pads.update(self.face.accounts.caller(person.user), public_id, {"ended": "true"}, "")

    def notes(self, public_id: str, person: Person, text: str) -> None:
        if not person.user:
            raise Forbidden("Forbidden")
        self.face.pads.update(self.face.accounts.caller(person.user), public_id, {"notes": text}, "")
