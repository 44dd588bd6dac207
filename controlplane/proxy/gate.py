"""The door of every WebSocket route: Origin check and one-time ticket claim, both BEFORE the upgrade.

A refused handshake is answered with HTTP 403 (the ASGI app closes before accepting; gunicorn's asgi
worker then writes the 403), never with an accepted-then-closed socket, so nothing of the target is
reached or shown to a caller without a good ticket.

Where the ticket travels: never in a URL. The API hands out page URLs with the ticket in the fragment
(`…/vnc/<server>#<ticket>`; browsers do not send fragments, so no server or proxy log sees it); the
page's script reads it and offers it as a WebSocket subprotocol, `ticket.<ticket>`, next to the real
one (e.g. `binary`), which the proxy picks in its answer. Subprotocols are a request header, which
access logs do not print. Route modules use it as:

    claim = await ctx.gate.admit(websocket, TicketKind.VNC, target)
    if claim is None:
        return                      # already refused with 403
    ...                             # more checks; `await ctx.gate.refuse(websocket, why)` on failure
    await ctx.gate.accept(websocket)
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket

from ..services.tickets import Claim, Tickets
from .origin import Origins

log = logging.getLogger("openhosting.proxy")

PREFIX = "ticket."


def split_protocols(websocket: WebSocket) -> tuple[str | None, list[str]]:
    """(the ticket offered as a subprotocol or None, the other subprotocols in order)."""
    ticket, others = None, []
    for proto in websocket.scope.get("subprotocols") or []:
        if proto.startswith(PREFIX) and ticket is None:
            ticket = proto[len(PREFIX):]
        else:
            others.append(proto)
    return ticket, others


class Gate:
    def __init__(self, tickets: Tickets, origins: Origins):
        self.tickets = tickets
        self.origins = origins

    async def admit(self, websocket: WebSocket, kind: str, target: str | None = None) -> Claim | None:
        """The claim of the ticket this handshake carries, or None after refusing it (bad Origin;
        missing, forged, expired, used or other-target ticket). A checked ticket is spent."""
        origin = websocket.headers.get("origin")
        path = websocket.url.path
        if not self.origins.allows(origin):
            await self.refuse(websocket, f"origin {origin!r} is not allowed", path=path)
            return None
        ticket, _ = split_protocols(websocket)
        if not ticket:
            await self.refuse(websocket, "no ticket", path=path)
            return None
        claim = await run_in_threadpool(self.tickets.claim, kind, ticket, target)
        if claim is None:
            await self.refuse(websocket, "ticket unknown, expired, used or for another target", path=path)
            return None
        return claim

    async def refuse(self, websocket: WebSocket, why: str, path: str | None = None) -> None:
        """Refuse the handshake (HTTP 403) and log why (never the ticket)."""
        log.info("refused WebSocket %s: %s", path or websocket.url.path, why)
        await websocket.close(code=1008)

    async def accept(self, websocket: WebSocket) -> None:
        """Complete the handshake, answering with the first subprotocol that is not the ticket."""
        _, others = split_protocols(websocket)
        await websocket.accept(subprotocol=others[0] if others else None)
