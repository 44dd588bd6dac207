"""One pad's room: the live document, the people in it, and what they send one another.

The room speaks y-websocket's protocol (message type 0: Yjs sync, 1: awareness) plus one message type
of ours, 100, carrying a JSON object each way (hello, events, participants, runs, ending the pad).

Rules:
- An update from a browser is stored in `pad_updates` (PadDocs.append, committed) before any other
  browser sees it, and before a browser that connects later can sync it. So an edit that a second
  browser has shown survives a restart of this process.
- Updates that another process stored (the API's `PUT contents`, a room of another proxy) are picked
  up by polling the table every `poll` seconds; Yjs updates are idempotent, so applying one twice is
  harmless. The document's text is written through to the pad's `contents` after changes (debounced
  to the poll interval), and a snapshot is stored every `snapshot_every` updates.
- Read-only people (an ended pad, invisible spectators) may sync and move their cursor, but their
  updates are dropped.

Everything here runs on the event loop's thread; database work runs in worker threads and is awaited
under the room's lock, so updates are stored and applied in the order they arrived.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from pycrdt import Doc, Text, YMessageType, YSyncMessageType, write_var_uint

from ..services.pad_docs import TEXT, PadDocs, text_of

log = logging.getLogger("openhosting.padroom")

CONTROL = 100          # our message type: a JSON object
EMPTY_UPDATE = b"\x00\x00"


# ---- wire helpers ----------------------------------------------------------------------------------

def read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated message")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos
        if shift > 63:
            raise ValueError("varint too long")


def read_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    length, pos = read_var_uint(data, pos)
    if pos + length > len(data):
        raise ValueError("truncated message")
    return data[pos:pos + length], pos + length


def frame(kind: int, payload: bytes) -> bytes:
    return write_var_uint(kind) + write_var_uint(len(payload)) + payload


def control(obj: dict) -> bytes:
    return frame(CONTROL, json.dumps(obj).encode())


def sync_frame(sync_kind: int, payload: bytes) -> bytes:
    return write_var_uint(YMessageType.SYNC) + write_var_uint(sync_kind) + write_var_uint(len(payload)) + payload


def parse_awareness(payload: bytes) -> list[tuple[int, int, str]]:
    """(client id, clock, state JSON) of each entry of an awareness update."""
    count, pos = read_var_uint(payload, 0)
    out = []
    for _ in range(count):
        client, pos = read_var_uint(payload, pos)
        clock, pos = read_var_uint(payload, pos)
        state, pos = read_bytes(payload, pos)
        out.append((client, clock, state.decode("utf-8", "replace")))
    return out


def awareness_payload(entries: list[tuple[int, int, str]]) -> bytes:
    out = [write_var_uint(len(entries))]
    for client, clock, state in entries:
        raw = state.encode()
        out += [write_var_uint(client), write_var_uint(clock), write_var_uint(len(raw)), raw]
    return b"".join(out)


# ---- people ----------------------------------------------------------------------------------------

@dataclass(eq=False)
class Person:
    """One connection: who it is and what it may do. `send` queues bytes for the browser."""

    name: str
    email: str | None
    user: str | None          # account uuid; None for a guest
    owner: bool               # may end the pad and see the private notes
    invisible: bool = False   # a spectator: read-only, not listed, no cursor shown
    send: Callable[[bytes], Awaitable[None]] | None = None
    awareness: dict[int, tuple[int, str]] = field(default_factory=dict)

    @property
    def role(self) -> str:
        return "owner" if self.owner else ("spectator" if self.invisible else ("user" if self.user else "guest"))


class Committer:
    """Group commit: the rooms of a process hand their updates here and one worker thread stores
    whatever has gathered in one transaction (SQLite takes one writer at a time: a commit per keystroke
    per room would cap the whole process at that writer's commit rate)."""

    def __init__(self, docs: PadDocs, batch: int = 500):
        self.docs = docs
        self.batch = batch
        self.pending: list[tuple[int, bytes, str, asyncio.Future]] = []
        self.wakeup: asyncio.Event | None = None
        self.task: asyncio.Task | None = None

    async def append(self, pad_id: int, data: bytes, author: str) -> int:
        """The update's seq once it is committed."""
        if self.task is None or self.task.done():
            self.wakeup = asyncio.Event()
            self.task = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        self.pending.append((pad_id, data, author, future))
        self.wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.pending:
                batch, self.pending = self.pending[:self.batch], self.pending[self.batch:]
                try:
                    seqs = await asyncio.to_thread(self.docs.append_many, [(p, d, a) for p, d, a, _ in batch])
                except Exception as exc:
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (*_, future), seq in zip(batch, seqs):
                    if not future.done():
                        future.set_result(seq)


class PadServices:
    """What a room needs from the rest of the control plane, in one place (all blocking; rooms call
    them in worker threads)."""

    def __init__(self, docs: PadDocs, info, event, run, end, notes):
        self.docs = docs
        self.committer = Committer(docs)
        self.info = info      # (pad_id) -> dict: public_id, ended, execution_enabled, language, notes, title
        self.event = event    # (pad_id, person, kind, meta) -> event dict
        self.run = run        # (public_id, person, contents, stdin) -> run result dict
        self.end = end        # (public_id, person) -> None
        self.notes = notes    # (public_id, person, text) -> None


class Room:
    def __init__(self, pad_id: int, public_id: str, services: PadServices, poll: float = 0.5):
        self.pad_id = pad_id
        self.public_id = public_id
        self.services = services
        self.poll_interval = poll
        self.people: list[Person] = []
        self.lock = asyncio.Lock()
        self.doc: Doc | None = None
        self.polled = 0            # every update up to here is applied
        self.own: set[int] = set() # seqs this room stored itself, above `polled`
        self.dirty = False
        self.ended = False
        self.execution = True
        self.last_snapshot = 0
        self.task: asyncio.Task | None = None
        self.running = False

    async def open(self) -> None:
        loaded = await asyncio.to_thread(self.services.docs.load, self.pad_id)
        self.doc, self.polled, self.last_snapshot = loaded.doc, loaded.seq, loaded.seq
        self.dirty = True   # a process stopped before its write-through: the first poll makes up for it
        info = await asyncio.to_thread(self.services.info, self.pad_id)
        self.ended, self.execution = info["ended"], info["execution_enabled"]
        self.task = asyncio.create_task(self._poll_forever())

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
        async with self.lock:
            await self._flush()

    @property
    def text(self) -> str:
        return text_of(self.doc) if self.doc is not None else ""

    # ---- people coming and going ------------------------------------------------------------------

    async def join(self, person: Person) -> None:
        info = await asyncio.to_thread(self.services.info, self.pad_id)
        async with self.lock:
            self.people.append(person)
            state = self.doc.get_state()
            await person.send(sync_frame(YSyncMessageType.SYNC_STEP1, state))
            others = [(c, clock, st) for p in self.people if p is not person and not p.invisible
                      for c, (clock, st) in p.awareness.items()]
            if others:
                await person.send(frame(YMessageType.AWARENESS, awareness_payload(others)))
        hello = {"op": "hello", "you": {"name": person.name, "role": person.role,
                                       "readonly": self.readonly(person)},
                 "pad": {"id": self.public_id, "title": info["title"], "language": info["language"],
                         "ended": self.ended, "execution_enabled": self.execution}}
        if person.owner:
            hello["pad"]["notes"] = info["notes"]
        await person.send(control(hello))
        event = await asyncio.to_thread(self.services.event, self.pad_id, person, "joined",
                                        "invisible" if person.invisible else None)
        await self.broadcast(control({"op": "event", "event": event}))
        await self.send_participants()

    async def leave(self, person: Person) -> None:
        if person not in self.people:
            return
        self.people.remove(person)
        if person.awareness and not person.invisible:
            gone = [(c, clock + 1, "null") for c, (clock, _) in person.awareness.items()]
            await self.broadcast(frame(YMessageType.AWARENESS, awareness_payload(gone)))
        try:
            event = await asyncio.to_thread(self.services.event, self.pad_id, person, "left",
                                            "invisible" if person.invisible else None)
            await self.broadcast(control({"op": "event", "event": event}))
            await self.send_participants()
        except Exception:
            log.exception("pad %s: recording a leave failed", self.public_id)

    def readonly(self, person: Person) -> bool:
        return self.ended or person.invisible

    async def send_participants(self) -> None:
        people = [{"name": p.name, "role": p.role} for p in self.people if not p.invisible]
        await self.broadcast(control({"op": "participants", "people": people}))

    async def broadcast(self, data: bytes, skip: Person | None = None) -> None:
        for p in list(self.people):
            if p is not skip:
                try:
                    await p.send(data)
                except Exception:
                    pass   # its own connection handler notices and leaves

    # ---- messages ---------------------------------------------------------------------------------

    async def receive(self, person: Person, data: bytes) -> None:
        kind, pos = read_var_uint(data, 0)
        if kind == YMessageType.SYNC:
            sync_kind, pos = read_var_uint(data, pos)
            payload, _ = read_bytes(data, pos)
            if sync_kind == YSyncMessageType.SYNC_STEP1:
                async with self.lock:
                    await person.send(sync_frame(YSyncMessageType.SYNC_STEP2, self.doc.get_update(payload)))
            elif sync_kind in (YSyncMessageType.SYNC_STEP2, YSyncMessageType.SYNC_UPDATE):
                if not self.readonly(person):
                    await self.update(payload, person)
        elif kind == YMessageType.AWARENESS:
            payload, _ = read_bytes(data, pos)
            for client, clock, state in parse_awareness(payload):
                if state == "null":
                    person.awareness.pop(client, None)
                else:
                    person.awareness[client] = (clock, state)
            if not person.invisible:
                await self.broadcast(data, skip=person)
        elif kind == CONTROL:
            payload, _ = read_bytes(data, pos)
            await self.command(person, json.loads(payload.decode()))

    async def update(self, payload: bytes, person: Person | None) -> None:
        """Store a browser's update, then apply it and pass it on; a no-op update is not stored."""
        if payload == EMPTY_UPDATE:
            return
        async with self.lock:
            before = self.doc.get_state()
            changed: list = []
            text = self.doc.get(TEXT, type=Text)
            sub = text.observe(lambda event: changed.append(1))
            try:
                self.doc.apply_update(payload)
            finally:
                text.unobserve(sub)
            if not changed and self.doc.get_state() == before:
                return   # nothing new (a reconnecting browser's sync reply, say)
            # Applied in memory, but nobody sees it before it is stored: sending and syncing wait
            # for this lock.
            try:
                seq = await self.services.committer.append(self.pad_id, payload, person.name if person else "")
            except Exception:
                loaded = await asyncio.to_thread(self.services.docs.load, self.pad_id)
                self.doc, self.polled, self.own = loaded.doc, loaded.seq, set()
                raise
            self.own.add(seq)
            self.dirty = True
            await self.broadcast(sync_frame(YSyncMessageType.SYNC_UPDATE, payload), skip=person)
            if seq - self.last_snapshot >= self.services.docs.snapshot_every:
                await self._catch_up()
                await asyncio.to_thread(self.services.docs.snapshot, self.pad_id, self.doc, self.polled)
                self.last_snapshot = self.polled

    async def command(self, person: Person, msg: dict) -> None:
        op = msg.get("op")
        if op == "run":
            await self.run(person, str(msg.get("stdin") or ""))
        elif op == "end" and person.owner and not self.ended:
            await asyncio.to_thread(self.services.end, self.public_id, person)
            await self._set_ended()
        elif op == "notes" and person.owner:
            await asyncio.to_thread(self.services.notes, self.public_id, person, str(msg.get("notes") or ""))
            await person.send(control({"op": "notes-saved"}))

    async def run(self, person: Person, stdin: str) -> None:
        if self.running:
            await person.send(control({"op": "run-refused", "message": "a run is already under way"}))
            return
        if self.ended or person.invisible:
            await person.send(control({"op": "run-refused", "message": "this pad is read-only"}))
            return
        self.running = True
        try:
            await self.broadcast(control({"op": "run-started", "by": person.name}))
            try:
                result = await asyncio.to_thread(self.services.run, self.public_id, person, self.text, stdin)
                out = {"op": "run-output", "by": person.name, "output": result["output"],
                       "exit_status": result["exit_status"], "timed_out": result["timed_out"],
                       "time": result["time"]}
                await self.broadcast(control({"op": "event", "event": result["event"]}))
            except Exception as exc:  # a refused or failed run: everyone sees why, nothing internal
                message = getattr(exc, "message", None) or "the run failed"
                out = {"op": "run-output", "by": person.name, "output": "", "error": str(message)[:300],
                       "exit_status": None, "timed_out": False, "time": 0}
            await self.broadcast(control(out))
        finally:
            self.running = False

    async def _set_ended(self) -> None:
        self.ended = True
        await self.broadcast(control({"op": "ended"}))

    # ---- polling: other processes' updates, write-through, the pad's state --------------------------

    async def _catch_up(self) -> None:
        """Apply updates other processes stored (under the lock)."""
        while True:
            rows = await asyncio.to_thread(self.services.docs.since, self.pad_id, self.polled)
            if not rows:
                return
            for seq, data in rows:
                if seq in self.own:
                    self.own.discard(seq)
                else:
                    self.doc.apply_update(data)
                    self.dirty = True
                    await self.broadcast(sync_frame(YSyncMessageType.SYNC_UPDATE, data))
                self.polled = seq

    async def _flush(self) -> None:
        if self.dirty and self.doc is not None:
            self.dirty = False
            await asyncio.to_thread(self.services.docs.write_through, self.pad_id, self.text)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                async with self.lock:
                    await self._catch_up()
                    await self._flush()
                info = await asyncio.to_thread(self.services.info, self.pad_id)
                self.execution = info["execution_enabled"]
                if info["ended"] and not self.ended:
                    await self._set_ended()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pad %s: poll failed", self.public_id)
