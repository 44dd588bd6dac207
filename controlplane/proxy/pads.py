"""Pad pages in the console proxy: the live editor, playback, history, room tickets (padroom/app.py)
and the rooms' WebSockets at `/rooms/<ID>`, admitted by the gate (Origin, one-time `pad` ticket
offered as the subprotocol `ticket.<t>`) before the upgrade."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from ..services.pads import valid_public_id
from ..services.tickets import TicketKind


def routes(ctx) -> list:
    from ..app import build_services
    from ..padroom.access import PadAccess
    from ..padroom.app import PadRoomApp

    services = build_services(ctx.settings)
    access = PadAccess(services.pads, ctx.gate.tickets)
    app = PadRoomApp(access, ctx.settings, poll=ctx.settings.pad_room_poll)
    ctx.extra[__name__] = app

    async def room(websocket: WebSocket) -> None:
        pad = valid_public_id(websocket.path_params["pad"])
        claim = await ctx.gate.admit(websocket, TicketKind.PAD, pad or "-")
        if claim is None:
            return
        found = await run_in_threadpool(access.person_for, claim)
        if found is None:
            await ctx.gate.refuse(websocket, "the pad is gone or closed to this person")
            return
        await ctx.gate.accept(websocket)
        await app.serve(*found, websocket.receive, websocket.send)

    return [Route("/pads/{pad}", app), Route("/pads/{pad}/playback", app), Route("/pads/{pad}/history", app),
            Route("/pads/{pad}/ticket", app), Route("/pad-assets/{file}", app), WebSocketRoute("/rooms/{pad}", room)]
