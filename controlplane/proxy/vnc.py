"""Server consoles in the browser: the noVNC page and its WebSocket, relayed to QEMU's VNC server.

`GET /vnc/<server>` is the page (no secret in it; the ticket is in the URL fragment). The WebSocket
`/vnc/<server>/ws` is admitted by the gate (Origin, one-time ticket), then the proxy resolves the VNC
port now from libvirt, logs in to QEMU with the server's password (rfb.login), and only then accepts:
a stopped server, a server without VNC or a QEMU that refuses the password answers HTTP 403 like a bad
ticket. The browser is offered security type None and everything after the security handshake is
relayed byte for byte. When QEMU closes the connection the proxy asks libvirt whether the server still
runs (giving an exiting QEMU up to 5 s to be reported shut off) and closes the WebSocket with a reason
the page shows (4001: the server stopped; 4002: the VNC
server closed the connection; 4003: the browser spoke no RFB).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from hypervisor.consoles import is_running, live_vnc

from ..services.consoles import Consoles, VncTarget
from ..services.tickets import TicketKind
from . import rfb
from .app import STATIC

log = logging.getLogger("openhosting.proxy.vnc")

CLOSE_STOPPED, CLOSE_VNC_GONE, CLOSE_NOT_RFB = 4001, 4002, 4003
#: QEMU closes VNC as it exits, a moment before libvirt reports the domain shut off (longer on a
#: loaded host): how long a closed VNC connection waits for that before it counts as VNC's own.
STOP_SETTLE = 5.0
PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                "X-Content-Type-Options": "nosniff"}


class _Closed(Exception):
    pass


class _Incoming:
    """The browser's bytes, read in exact amounts across WebSocket messages (for the handshake)."""

    def __init__(self, websocket: WebSocket):
        self.websocket = websocket
        self.buffer = bytearray()

    async def message(self) -> bytes:
        msg = await self.websocket.receive()
        if msg["type"] == "websocket.disconnect":
            raise _Closed()
        return msg.get("bytes") or (msg.get("text") or "").encode("latin-1", "replace")

    async def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += await self.message()
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out


def routes(ctx) -> list:
    consoles = Consoles(ctx.db, ctx.settings)

    async def page(request):
        return FileResponse(STATIC / "vnc.html", headers=PAGE_HEADERS)

    def resolve(claim) -> tuple[VncTarget, object] | str:
        target = consoles.vnc_target(claim)
        if isinstance(target, str):
            return target
        address = live_vnc(ctx.host, target.server)
        if address is None:
            return "server not running or without VNC in libvirt"
        return target, address

    async def socket(websocket: WebSocket):
        server = websocket.path_params["server"].lower()
        claim = await ctx.gate.admit(websocket, TicketKind.VNC, server)
        if claim is None:
            return
        found = await run_in_threadpool(resolve, claim)
        if isinstance(found, str):
            await ctx.gate.refuse(websocket, found)
            return
        target, address = found
        try:
            # QEMU checks the live definition's password (a password set while the server runs is
            # stored at once but reaches QEMU at its next start); the stored one is the fallback
            reader, writer = await rfb.login(address.listen, address.port, address.password or target.password)
        except rfb.RfbError as exc:
            await ctx.gate.refuse(websocket, f"VNC login to server {server}: {exc}")
            return
        try:
            await ctx.gate.accept(websocket)
            log.info("console of server %s opened (user %s)", server, claim.owner)
            code, reason = await _session(websocket, reader, writer)
            if code in (CLOSE_STOPPED, CLOSE_VNC_GONE):
                running = await _still_running(ctx.host, server)
                code, reason = ((CLOSE_VNC_GONE, "the VNC server closed the connection") if running
                                else (CLOSE_STOPPED, "the server stopped"))
            log.info("console of server %s closed: %s", server, reason)
            if code:
                with contextlib.suppress(Exception):
                    await websocket.close(code=code, reason=reason)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    return [Route("/vnc/{server}", page), WebSocketRoute("/vnc/{server}/ws", socket)]


async def _session(websocket: WebSocket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                   ) -> tuple[int, str]:
    """The browser's security handshake (type None), then the relay. Returns the close code to send
    (0: the browser went away) and its reason."""
    incoming = _Incoming(websocket)
    try:
        await websocket.send_bytes(rfb.offer_none())
        version = await incoming.read(12)
        reply, choice_len = rfb.answer_none(version)
        await websocket.send_bytes(reply)
        if choice_len and (await incoming.read(choice_len))[0] != rfb.SEC_NONE:
            return CLOSE_NOT_RFB, "the browser chose an unknown security type"
        result = rfb.security_result(version)
        if result:
            await websocket.send_bytes(result)
    except rfb.RfbError as exc:
        return CLOSE_NOT_RFB, str(exc)
    except (_Closed, WebSocketDisconnect):
        return 0, "the browser left"

    async def upstream() -> str:
        try:
            if incoming.buffer:
                writer.write(bytes(incoming.buffer))
                incoming.buffer.clear()
            while True:
                data = await incoming.message()
                writer.write(data)
                await writer.drain()
        except (_Closed, WebSocketDisconnect):
            return "browser"
        except OSError:
            return "vnc"

    async def downstream() -> str:
        while True:
            try:
                data = await reader.read(1 << 16)
            except OSError:
                return "vnc"
            if not data:
                return "vnc"
            try:
                await websocket.send_bytes(data)
            except Exception:  # the browser went away (the server raises its own OSError subclass)
                return "browser"

    tasks = {asyncio.create_task(upstream()), asyncio.create_task(downstream())}
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
    ended = [t.result() if not t.cancelled() and t.exception() is None else "error" for t in done]
    if "vnc" in ended:
        return CLOSE_VNC_GONE, "the VNC server closed the connection"
    if "error" in ended:
        log.warning("console relay failed: %r", [t.exception() for t in done if t.exception()])
    return 0, "the browser left"


async def _still_running(host, server: str) -> bool:
    """Whether the server still runs once its QEMU had `STOP_SETTLE` seconds to finish exiting."""
    deadline = asyncio.get_running_loop().time() + STOP_SETTLE
    while await run_in_threadpool(is_running, host, server):
        if asyncio.get_running_loop().time() >= deadline:
            return True
        await asyncio.sleep(0.2)
    return False
