"""A pad's document as a CRDT (Yjs, through pycrdt), stored durably as its stream of updates.

The document holds one `Text` named `contents`: the pad's code. Every change, from a browser in the
pad room or from the API (`PUT contents`), is one Yjs v1 update appended to `pad_updates` with the
next `seq` of its pad, its author and time. `seq` is unique per pad, so two processes appending at
once get distinct numbers (SQLite serialises writers; on PostgreSQL the loser of the unique key
retries). A room stores an update before it shows it to anyone else, so whatever a browser has seen
survives a restart. Now and then the whole state is written to `pad_snapshots` (state after
`upto_seq`), so loading a pad reads one snapshot and the updates after it; the updates stay, since
the history and the playback read them.

A pad that has no updates yet gets its first one from its active environment's contents (author
empty) the first time anything loads it; the unique `seq` makes that happen once even when two
processes load it together.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pycrdt import Doc, Text
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..db import Database
from ..models import Pad, PadEnvironment, PadSnapshot, PadUpdate, utcnow
from .pad_params import rfc3339

TEXT = "contents"
SNAPSHOT_EVERY = 200      # updates between two snapshots
APPEND_RETRIES = 20


def text_of(doc: Doc) -> str:
    return str(doc.get(TEXT, type=Text))


def edit_update(doc: Doc, new_text: str) -> bytes | None:
    """Change `doc`'s text into `new_text` with the smallest single splice (common prefix and suffix
    kept, so open editors keep their cursors); returns the Yjs update, or None when nothing changed."""
    text = doc.get(TEXT, type=Text)
    old = str(text)
    if old == new_text:
        return None
    start = 0
    limit = min(len(old), len(new_text))
    while start < limit and old[start] == new_text[start]:
        start += 1
    end_old, end_new = len(old), len(new_text)
    while end_old > start and end_new > start and old[end_old - 1] == new_text[end_new - 1]:
        end_old -= 1
        end_new -= 1
    captured: list[bytes] = []
    sub = doc.observe(lambda event: captured.append(event.update))
    try:
        with doc.transaction():
            if end_old > start:
                del text[start:end_old]
            if end_new > start:
                text.insert(start, new_text[start:end_new])
    finally:
        doc.unobserve(sub)
    return captured[0] if captured else None


@dataclass
class Loaded:
    doc: Doc
    seq: int   # the last update applied


class PadDocs:
    def __init__(self, db: Database, snapshot_every: int = SNAPSHOT_EVERY):
        self.db = db
        self.snapshot_every = snapshot_every

    # ---- reading ---------------------------------------------------------------------------------

    def load(self, pad_id: int) -> Loaded:
        """The pad's document as stored now (seeded from its contents if it has no updates yet)."""
        with self.db.read_session() as s:
            snap = s.scalar(select(PadSnapshot).where(PadSnapshot.pad_id == pad_id)
                            .order_by(PadSnapshot.upto_seq.desc()).limit(1))
            doc = Doc()
            seq = 0
            if snap is not None:
                doc.apply_update(snap.state)
                seq = snap.upto_seq
            rows = s.execute(select(PadUpdate.seq, PadUpdate.data)
                             .where(PadUpdate.pad_id == pad_id, PadUpdate.seq > seq)
                             .order_by(PadUpdate.seq)).all()
            for number, data in rows:
                doc.apply_update(data)
                seq = number
            if seq == 0:
                seed = s.scalar(select(PadEnvironment.contents).join(Pad, Pad.active_environment_id == PadEnvironment.id)
                                .where(Pad.id == pad_id))
        if seq == 0:
            update = edit_update(doc, seed or "")
            if update is None:   # an empty pad: nothing to seed, the empty document is right
                return Loaded(doc, 0)
            try:
                self._insert(pad_id, 1, update, "")
            except IntegrityError:
                return self.load(pad_id)   # another process seeded it first: take theirs
            return Loaded(doc, 1)
        return Loaded(doc, seq)

    def since(self, pad_id: int, seq: int, limit: int = 500) -> list[tuple[int, bytes]]:
        """Updates after `seq`, in order (the room polls this for updates other processes stored)."""
        with self.db.read_session() as s:
            return [(n, d) for n, d in s.execute(select(PadUpdate.seq, PadUpdate.data)
                                                 .where(PadUpdate.pad_id == pad_id, PadUpdate.seq > seq)
                                                 .order_by(PadUpdate.seq).limit(limit)).all()]

    def last_seq(self, pad_id: int) -> int:
        with self.db.read_session() as s:
            return s.scalar(select(func.max(PadUpdate.seq)).where(PadUpdate.pad_id == pad_id)) or 0

    # ---- writing ---------------------------------------------------------------------------------

    def _insert(self, pad_id: int, seq: int, data: bytes, author: str) -> None:
        with self.db.session() as s:
            s.add(PadUpdate(pad_id=pad_id, seq=seq, author=author[:128], data=data, created_at=utcnow()))

    def append(self, pad_id: int, data: bytes, author: str) -> int:
        """Store one update durably; returns its `seq`. Committed when this returns."""
        for _ in range(APPEND_RETRIES):
            try:
                with self.db.session() as s:
                    seq = (s.scalar(select(func.max(PadUpdate.seq)).where(PadUpdate.pad_id == pad_id)) or 0) + 1
                    s.add(PadUpdate(pad_id=pad_id, seq=seq, author=author[:128], data=data, created_at=utcnow()))
                return seq
            except IntegrityError:
                continue   # another process took that seq (PostgreSQL): read the max again
        raise RuntimeError("could not store the pad update")

    def append_many(self, items: list[tuple[int, bytes, str]]) -> list[int]:
        """Store several updates (pad id, data, author) in one transaction, in order; their seqs.
        The pad rooms of one process commit together this way (one commit for many rooms)."""
        for _ in range(APPEND_RETRIES):
            try:
                with self.db.session() as s:
                    pads = sorted({pad_id for pad_id, _, _ in items})
                    last = dict(s.execute(select(PadUpdate.pad_id, func.max(PadUpdate.seq))
                                          .where(PadUpdate.pad_id.in_(pads)).group_by(PadUpdate.pad_id)).all())
                    out = []
                    now = utcnow()
                    for pad_id, data, author in items:
                        last[pad_id] = (last.get(pad_id) or 0) + 1
                        s.add(PadUpdate(pad_id=pad_id, seq=last[pad_id], author=author[:128], data=data,
                                        created_at=now))
                        out.append(last[pad_id])
                return out
            except IntegrityError:
                continue
        raise RuntimeError("could not store the pad updates")

    def set_text(self, pad_id: int, new_text: str, author: str) -> int | None:
        """Make the document's text `new_text` (the API's `PUT contents`); the open rooms pick the
        update up from the table. Returns its seq, or None when the text was already that."""
        loaded = self.load(pad_id)
        update = edit_update(loaded.doc, new_text)
        return None if update is None else self.append(pad_id, update, author)

    def snapshot(self, pad_id: int, doc: Doc, upto_seq: int) -> None:
        """Store the state of `doc`, which has applied every update up to `upto_seq`."""
        with self.db.session() as s:
            s.add(PadSnapshot(pad_id=pad_id, upto_seq=upto_seq, state=doc.get_update(), text=text_of(doc),
                              created_at=utcnow()))

    def snapshot_due(self, pad_id: int, seq: int) -> bool:
        with self.db.read_session() as s:
            last = s.scalar(select(func.max(PadSnapshot.upto_seq)).where(PadSnapshot.pad_id == pad_id)) or 0
        return seq - last >= self.snapshot_every

    def write_through(self, pad_id: int, text: str) -> None:
        """Copy the document's text into the active environment's `contents` (what the API shows)."""
        with self.db.session() as s:
            row = s.get(Pad, pad_id)
            env = s.get(PadEnvironment, row.active_environment_id) if row and row.active_environment_id else None
            if env is not None and env.contents != text:
                env.contents = text
                env.updated_at = row.updated_at = utcnow()

    # ---- history ---------------------------------------------------------------------------------

    def history(self, pad_id: int, after: int = 0, limit: int = 10_000) -> dict:
        """The edit history: each update as (seq, time, author, change), `change` being the text delta
        it made (`retain`/`insert`/`delete` steps, as Yjs and Quill write them). Replays from the first
        update, since a delta needs the text before it."""
        with self.db.read_session() as s:
            rows = s.execute(select(PadUpdate.seq, PadUpdate.created_at, PadUpdate.author, PadUpdate.data)
                             .where(PadUpdate.pad_id == pad_id, PadUpdate.seq <= after + limit)
                             .order_by(PadUpdate.seq)).all()
        doc = Doc()
        text = doc.get(TEXT, type=Text)
        deltas: list[list] = []
        sub = text.observe(lambda event: deltas.append(list(event.delta)))
        out = []
        try:
            for seq, when, author, data in rows:
                deltas.clear()
                doc.apply_update(data)
                if seq <= after:
                    continue
                change = [step for delta in deltas for step in delta]
                out.append({"seq": seq, "time": rfc3339_ms(when), "author": author, "change": change})
        finally:
            text.unobserve(sub)
        last = rows[-1][0] if rows else after
        return {"updates": out, "text": str(text), "last_seq": last,
                "more": len(rows) > 0 and last == after + limit}


def rfc3339_ms(when: dt.datetime) -> str:
    """RFC 3339 UTC with milliseconds: playback needs finer steps than whole seconds."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


__all__ = ["PadDocs", "Loaded", "TEXT", "text_of", "edit_update", "rfc3339", "rfc3339_ms"]
