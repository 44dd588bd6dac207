"""Console access for the browser: the API side issues a one-time ticket and a page URL; the console
proxy side checks, after claiming a ticket, that its target may still be reached.

The URL carries the ticket in its fragment (`<console url>/vnc/<server>#<ticket>`): browsers never
send a fragment, so it stays out of every access log and Referer; the page hands it to the proxy as a
WebSocket subprotocol (controlplane/proxy/gate.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Settings
from ..db import Database
from ..errors import Busy, NotFound
from ..models import Server
from .accounts import is_uuid
from .tickets import Claim, Tickets, TicketKind

#: How long a console link may wait before it is opened (seconds).
CONSOLE_TTL = 60.0


@dataclass(frozen=True)
class VncTarget:
    server: str
    password: str


class Consoles:
    def __init__(self, db: Database, settings: Settings):
        self.db = db
        self.settings = settings
        self.tickets = Tickets(db)

    def open_vnc(self, user: str, server_id: str) -> dict:
        """A console link for a running server of `user` with a VNC console: {url, expires}."""
        with self.db.session() as s:
            server = s.get(Server, server_id.lower()) if is_uuid(server_id) else None
            if server is None or server.owner != user:
                raise NotFound(what="server")
            if server.status != "active":
                raise Busy("server is {status}: start it to open its console", status=server.status)
            if not server.config.get("password"):
                raise Busy("server has no VNC console: set its password (vnc:password) and restart it")
            server_id = server.uuid
        ticket, expires = self.tickets.issue(TicketKind.VNC, server_id, user, ttl=CONSOLE_TTL)
        return {"server": server_id, "url": f"{self.settings.console_base}/vnc/{server_id}#{ticket}",
                "expires": int(expires.timestamp())}

    def vnc_target(self, claim: Claim) -> VncTarget | str:
        """After a claimed VNC ticket: what the proxy logs in with, or why it may not (a short text
        for the log; the browser only sees a refused handshake)."""
        with self.db.session() as s:
            server = s.get(Server, claim.target)
            if server is None or server.owner != claim.owner:
                return "server gone"
            if server.status != "active":
                return f"server is {server.status}"
            password = server.config.get("password") or ""
        if not password:
            return "server has no VNC console"
        return VncTarget(server=claim.target, password=password)
