"""Cloud API: /servers/… — parse, call the servers service, render."""

from __future__ import annotations

import falcon

from ..bodies import read_fields
from ..http import no_content, send_list, send_many, send_one
from ..services.consoles import Consoles
from ..services.servers import Servers


class _Base:
    def __init__(self, servers: Servers, limit: int):
        self.servers = servers
        self.limit = limit


class ServerList(_Base):
    def on_get(self, req, resp):
        send_list(req, resp, "server", self.servers.list(req.context.user))

    on_post = on_get


class ServerInfoAll(_Base):
    def on_get(self, req, resp):
        send_many(req, resp, self.servers.info_all(req.context.user))

    on_post = on_get


class ServerCreate(_Base):
    def __init__(self, servers: Servers, limit: int, start: bool):
        super().__init__(servers, limit)
        self.start = start

    def on_post(self, req, resp):
        send_one(req, resp, self.servers.create(req.context.user, read_fields(req, self.limit), start=self.start))


class ServerInfo(_Base):
    def on_get(self, req, resp, server):
        send_one(req, resp, self.servers.info(req.context.user, server))

    on_post = on_get


class ServerSet(_Base):
    def on_post(self, req, resp, server):
        send_one(req, resp, self.servers.set(req.context.user, server, read_fields(req, self.limit)))


class ServerAction(_Base):
    """start, stop, shutdown, reset, destroy: 204 on success."""

    def __init__(self, servers: Servers, limit: int, action: str):
        super().__init__(servers, limit)
        self.action = getattr(servers, action)

    def on_post(self, req, resp, server):
        self.action(req.context.user, server)
        no_content(resp)


class ServerConsole:
    """A one-time link to the server's console page in the browser (the console proxy's)."""

    def __init__(self, consoles: Consoles):
        self.consoles = consoles

    def on_post(self, req, resp, server):
        send_one(req, resp, self.consoles.open_vnc(req.context.user, server))


def add_routes(app: falcon.App, servers: Servers, limit: int) -> None:
    app.add_route("/servers/list", ServerList(servers, limit))
    app.add_route("/servers/info", ServerInfoAll(servers, limit))
    app.add_route("/servers/create", ServerCreate(servers, limit, start=True))
    app.add_route("/servers/create/stopped", ServerCreate(servers, limit, start=False))
    app.add_route("/servers/{server}/info", ServerInfo(servers, limit))
    app.add_route("/servers/{server}/set", ServerSet(servers, limit))
    for action in ("start", "stop", "shutdown", "reset", "destroy"):
        app.add_route(f"/servers/{{server}}/{action}", ServerAction(servers, limit, action))
    app.add_route("/servers/{server}/console", ServerConsole(Consoles(servers.db, servers.settings)))
