"""Workspace terminals in the browser: the xterm.js page and its WebSocket, relayed to the terminal
service (controlplane/terminal), which holds the workspaces' terminal ports.

`GET /terminal/<workspace>` is the page (no secret in it: the ticket, and the workspace token when
the workspace requires one, are in the URL fragment). The WebSocket `/terminal/<workspace>/ws` is
admitted by the gate (Origin, one-time `terminal` ticket for this workspace: HTTP 403 otherwise),
then accepted; from there on every refusal is a close with a reason the page shows:

- 4003: the workspace requires its workspace token and the page did not offer the right one
  (subprotocol ``wstoken.<token>``);
- 4001: the terminal service refused the workspace (not the user's, stopped without auto_resume,
  removed, made before terminals existed, …: its own sentence);
- 4002: the terminal service is not running, or went away;
- 4000: the session ended (the shell exited, the workspace was stopped or removed: the reason says).

Messages: binary both ways are the terminal's bytes (keys in, output out); text from the page is JSON
``{"resize": [rows, cols]}``; text from the proxy is JSON ``{"state": "opening" | "open",
"resumed": bool}`` (opening: the workspace is being resolved, and resumed when it was stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging

from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..models import Workspace
from ..services.tickets import TicketKind
from ..terminal import wire
from ..terminal.hub import clamp
from ..terminal.service import default_socket
from .app import STATIC

log = logging.getLogger("openhosting.proxy.terminal")

CLOSE_ENDED, CLOSE_REFUSED, CLOSE_SERVICE, CLOSE_TOKEN = 4000, 4001, 4002, 4003
TOKEN_PREFIX = "wstoken."
PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "SAMEORIGIN",
                "X-Content-Type-Options": "nosniff"}


def _reason(text: str) -> str:
    """A close reason fits in 123 bytes of UTF-8."""
    data = text.encode()[:123]
    return data.decode(errors="ignore")


def offered_token(websocket: WebSocket) -> str | None:
    for proto in websocket.scope.get("subprotocols") or []:
        if proto.startswith(TOKEN_PREFIX):
            return proto[len(TOKEN_PREFIX):]
    return None


def routes(ctx) -> list:
    socket_path = default_socket(ctx.settings)

    async def page(request):
        return FileResponse(STATIC / "terminal.html", headers=PAGE_HEADERS)

    def token_ok(workspace_id: str, owner: str | None, offered: str | None) -> bool:
        """False only when the owner's workspace requires its token and the page lacks it (any other
        trouble is the terminal service's to report)."""
        with ctx.db.read_session() as s:
            ws = s.get(Workspace, workspace_id)
            if ws is None or ws.owner != owner or not ws.token_required:
                return True
            return offered is not None and hmac.compare_digest(offered.encode(), (ws.workspace_token or "").encode())

    async def socket(websocket: WebSocket):
        workspace_id = websocket.path_params["workspace"].lower()
        claim = await ctx.gate.admit(websocket, TicketKind.TERMINAL, workspace_id)
        if claim is None:
            return
        # subprotocols: the first that is neither the ticket nor the workspace token is answered
        websocket.scope["subprotocols"] = [p for p in websocket.scope.get("subprotocols") or []
                                           if not p.startswith(TOKEN_PREFIX)] + \
            [p for p in websocket.scope.get("subprotocols") or [] if p.startswith(TOKEN_PREFIX)]
        await ctx.gate.accept(websocket)
        if not await run_in_threadpool(token_ok, workspace_id, claim.owner, offered_token(websocket)):
            await _close(websocket, CLOSE_TOKEN, "this workspace requires its workspace token")
            return
        try:
            reader, writer = await asyncio.open_unix_connection(str(socket_path))
        except OSError:
            log.warning("terminal of workspace %s: the terminal service is not running (%s)", workspace_id,
                        socket_path)
            await _close(websocket, CLOSE_SERVICE, "the terminal service is not running")
            return
        try:
            params = websocket.query_params
            writer.write(wire.pack(wire.OPEN, {"owner": claim.owner, "workspace": workspace_id,
                                               "rows": clamp(params.get("rows"), 24),
                                               "cols": clamp(params.get("cols"), 80), "auto_resume": True}))
            await writer.drain()
            await websocket.send_text(json.dumps({"state": "opening"}))
            got = await wire.read(reader)
            answer = wire.as_json(got[1]) if got and got[0] == wire.ANSWER else {"ok": False, "reason": ""}
            if not answer.get("ok"):
                reason = answer.get("reason") or "the terminal service went away"
                log.info("terminal of workspace %s refused: %s", workspace_id, reason)
                await _close(websocket, CLOSE_REFUSED if answer.get("reason") else CLOSE_SERVICE, reason)
                return
            await websocket.send_text(json.dumps({"state": "open", "resumed": bool(answer.get("resumed"))}))
            log.info("terminal of workspace %s opened (user %s)", workspace_id, claim.owner)
            code, reason = await _relay(websocket, reader, writer)
            log.info("terminal of workspace %s closed: %s", workspace_id, reason)
            if code:
                await _close(websocket, code, reason)
        except (wire.WireError, OSError, WebSocketDisconnect) as exc:
            log.info("terminal of workspace %s ended: %s", workspace_id, exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    return [Route("/terminal/{workspace}", page), WebSocketRoute("/terminal/{workspace}/ws", socket)]


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await websocket.close(code=code, reason=_reason(reason))


async def _relay(websocket: WebSocket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                 ) -> tuple[int, str]:
    """Keys and resizes up, output down, until one side ends. Returns (close code or 0, reason)."""

    async def upstream() -> tuple[int, str]:
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                return 0, "the browser left"
            if msg.get("bytes") is not None:
                writer.write(wire.pack(wire.DATA, msg["bytes"]))
            elif msg.get("text") is not None:
                try:
                    ask = json.loads(msg["text"])
                    rows, cols = ask["resize"]
                except (ValueError, KeyError, TypeError):
                    continue             # not a resize: ignored
                writer.write(wire.pack(wire.RESIZE, {"rows": clamp(rows, 24), "cols": clamp(cols, 80)}))
            await writer.drain()

    async def downstream() -> tuple[int, str]:
        while True:
            got = await wire.read(reader)
            if got is None:
                return CLOSE_SERVICE, "the terminal service went away"
            kind, payload = got
            if kind == wire.DATA:
                await websocket.send_bytes(payload)
            elif kind == wire.END:
                return CLOSE_ENDED, wire.as_json(payload).get("reason") or "the session ended"

    tasks = {asyncio.create_task(upstream()), asyncio.create_task(downstream())}
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
    for task in done:
        if not task.cancelled() and task.exception() is None:
            return task.result()
        if task.exception() is not None and not isinstance(task.exception(), (OSError, WebSocketDisconnect)):
            log.warning("terminal relay failed: %r", task.exception())
    return 0, "the connection was lost"
