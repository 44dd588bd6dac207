"""The pad page's process: an ASGI app that serves the pad page, its playback, their scripts, the room
tickets and the rooms' WebSockets.

    GET  /pads/<ID>              the live editor (HTML)
    GET  /pads/<ID>/playback     the replay (HTML)
    GET  /pads/<ID>/history      the edit history as JSON (signed-in users who see the pad)
    POST /pads/<ID>/ticket       {"name": "...", "invisible": false} -> {"ticket", "name", "guest"}
    WS   /rooms/<ID>             the room (y-websocket protocol + our JSON control messages); the
                                 one-time ticket comes as the subprotocol `ticket.<t>` (proxy/gate.py)
    GET  /pad-assets/<file>      the bundled scripts (built at set-up) and the page's CSS

They are mounted in the console proxy by controlplane/proxy/pads.py. A ticket request carrying an
Origin of another site is refused (403), and so is a WebSocket from another origin (the proxy's
gate), so another site cannot open a room with the visitor's cookie. One room per pad lives in the
process while anyone is in it (run the proxy with one worker, or route a pad to one worker).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..config import Settings
from ..errors import DomainError, Forbidden, NotFound, Usage, http_status
from ..pages import HTML_HEADERS
from .room import Person, Room

log = logging.getLogger("openhosting.padroom")

COOKIE = "session-access-key"
PAGES = Path(__file__).with_name("pages")
BODY_LIMIT = 16 * 1024
QUEUE_LIMIT = 4096          # messages waiting for one slow browser before it is dropped
PAD_PATH = re.compile(r"^/pads/([A-Za-z0-9]{1,16})(/playback|/history|/ticket)?/?$")
ASSET_PATH = re.compile(r"^/pad-assets/([A-Za-z0-9_.-]{1,64})$")
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".map": "application/json"}


def bundle_dir(settings: Settings) -> Path:
    """Where tools/setup.sh puts the bundled scripts (gitignored)."""
    return Path(__file__).resolve().parents[2] / "var" / "pad-assets"


class PadRoomApp:
    def __init__(self, access, settings: Settings, poll: float = 0.5):
        self.access = access
        self.settings = settings
        self.poll = poll
        self.rooms: dict[int, Room] = {}
        self.opening: dict[int, asyncio.Future] = {}
        self.assets = [bundle_dir(settings), PAGES]

    async def __call__(self, scope, receive, send):
        """As a Starlette route's ASGI app: the HTTP routes above."""
        await self.http(scope, receive, send)

    # ---- HTTP ---------------------------------------------------------------------------------------

    async def http(self, scope, receive, send):
        path, method = scope["path"], scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            asset = ASSET_PATH.match(path)
            if asset and method in ("GET", "HEAD"):
                return await self.asset(send, asset.group(1))
            match = PAD_PATH.match(path)
            if not match:
                raise NotFound(what="page")
            pad, tail = match.group(1).upper(), match.group(2) or ""
            if tail in ("", "/playback") and method in ("GET", "HEAD"):
                return await self.page(send, "playback.html" if tail else "pad.html", pad)
            if tail == "/history" and method == "GET":
                after = parse_qs(scope.get("query_string", b"").decode()).get("after", ["0"])[0]
                if not after.isdigit():
                    raise Usage("after must be a whole number")
                body = await asyncio.to_thread(self.access.history, pad, cookie(headers), int(after))
                return await reply(send, 200, body)
            if tail == "/ticket" and method == "POST":
                if foreign(headers):
                    raise Forbidden("cross-site request refused")
                raw = await read_body(receive, BODY_LIMIT)
                try:
                    params = json.loads(raw or b"{}")
                    assert isinstance(params, dict)
                except (ValueError, AssertionError):
                    raise Usage("send a JSON object") from None
                body = await asyncio.to_thread(self.access.issue, pad, cookie(headers), str(params.get("name") or ""),
                                               bool(params.get("invisible")))
                return await reply(send, 200, body)
            raise NotFound(what="page")
        except DomainError as exc:
            status = http_status(exc)[0]
            await reply(send, status, {"status": "ERROR", "message": exc.message if status != 404 else "Resource not found"})
        except Exception:
            log.exception("pad page request failed")
            await reply(send, 500, {"status": "ERROR", "message": "internal error"})

    async def page(self, send, name: str, pad: str):
        html = (PAGES / name).read_text().replace("{{PAD}}", pad)
        await respond(send, 200, "text/html; charset=utf-8", html.encode(), extra=HTML_HEADERS)

    async def asset(self, send, name: str):
        for folder in self.assets:
            target = folder / name
            if target.is_file() and target.suffix in TYPES:
                return await respond(send, 200, TYPES[target.suffix], target.read_bytes(),
                                     extra={"Cache-Control": "no-cache"})
        await respond(send, 404, "text/plain", b"not found")

    # ---- WebSocket (admitted by the proxy's gate; see controlplane/proxy/pads.py) --------------------

    async def serve(self, pad_id: int, public_id: str, person: Person, receive, send) -> None:
        """Hold one accepted WebSocket in the pad's room until it closes (ASGI messages)."""
        queue: asyncio.Queue = asyncio.Queue(QUEUE_LIMIT)

        async def enqueue(data: bytes) -> None:
            queue.put_nowait(data)   # QueueFull: a browser this far behind is dropped

        async def writer():
            while True:
                data = await queue.get()
                await send({"type": "websocket.send", "bytes": data})

        person.send = enqueue
        writing = asyncio.create_task(writer())
        room = await self.room(pad_id, public_id)
        try:
            await room.join(person)
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                if data:
                    await room.receive(person, data)
                if writing.done():
                    break
        except asyncio.QueueFull:
            log.warning("pad %s: dropped a browser that fell behind", public_id)
        except Exception:
            log.exception("pad %s: connection failed", public_id)
        finally:
            await room.leave(person)
            writing.cancel()
            await self.release(room)
            try:
                await send({"type": "websocket.close", "code": 1000})
            except Exception:
                pass

    async def room(self, pad_id: int, public_id: str) -> Room:
        while pad_id not in self.rooms:
            if pad_id in self.opening:
                await asyncio.shield(self.opening[pad_id])
                continue
            future = asyncio.get_running_loop().create_future()
            self.opening[pad_id] = future
            try:
                room = Room(pad_id, public_id, self.access.services(), poll=self.poll)
                await room.open()
                self.rooms[pad_id] = room
            finally:
                del self.opening[pad_id]
                future.set_result(None)
        return self.rooms[pad_id]

    async def release(self, room: Room) -> None:
        if not room.people and self.rooms.get(room.pad_id) is room:
            del self.rooms[room.pad_id]
            await room.close()


# ---- helpers --------------------------------------------------------------------------------------

def cookie(headers: dict) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None


def foreign(headers: dict) -> bool:
    origin = headers.get("origin")
    return bool(origin) and urlsplit(origin).netloc.lower() != headers.get("host", "").lower()


async def read_body(receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Usage("request body too large")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def respond(send, status: int, content_type: str, body: bytes, extra: dict | None = None):
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def reply(send, status: int, body: dict):
    if status == 200:
        body = {"status": "OK", **body}
    await respond(send, status, "application/json; charset=utf-8", json.dumps(body).encode())


ROUTES = [("GET", "/pads/{id}"), ("GET", "/pads/{id}/playback"), ("GET", "/pads/{id}/history"),
          ("POST", "/pads/{id}/ticket"), ("WS", "/rooms/{id}"), ("GET", "/pad-assets/{file}")]
