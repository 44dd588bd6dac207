"""Cloud API: /resources/… (ip and vlan)."""

from __future__ import annotations

import falcon

from .. import formats
from ..bodies import read_fields
from ..http import no_content, send_many, send_one
from ..services.resources import Resources


def _send_pairs(req, resp, items) -> None:
    as_json = formats.wants_json(req.get_header("Accept"))
    if as_json:
        resp.content_type = "application/json"
        resp.text = formats.json.dumps([{"type": r.type, "resource": r.resource} for r in items])
    else:
        resp.content_type = "text/plain; charset=utf-8"
        resp.text = "".join(f"{r.type} {r.resource}\n" for r in items)


class _Base:
    def __init__(self, resources: Resources, limit: int):
        self.resources = resources
        self.limit = limit


class ResourceList(_Base):
    def on_get(self, req, resp, kind=None):
        _send_pairs(req, resp, self.resources.list(req.context.user, kind))

    on_post = on_get


class ResourceInfoAll(_Base):
    def on_get(self, req, resp, kind=None):
        items = self.resources.list(req.context.user, kind)
        send_many(req, resp, [self.resources.render(r) for r in items])

    on_post = on_get


class ResourceCreate(_Base):
    def on_post(self, req, resp, kind):
        send_one(req, resp, self.resources.create(req.context.user, kind, read_fields(req, self.limit)))


class ResourceInfo(_Base):
    def on_get(self, req, resp, kind, name):
        send_one(req, resp, self.resources.info(req.context.user, kind, name))

    on_post = on_get


class ResourceSet(_Base):
    def on_post(self, req, resp, kind, name):
        send_one(req, resp, self.resources.set(req.context.user, kind, name, read_fields(req, self.limit)))


class ResourceDestroy(_Base):
    def on_post(self, req, resp, kind, name):
        self.resources.destroy(req.context.user, kind, name)
        no_content(resp)


def add_routes(app: falcon.App, resources: Resources, limit: int) -> None:
    app.add_route("/resources/list", ResourceList(resources, limit))
    app.add_route("/resources/info", ResourceInfoAll(resources, limit))
    app.add_route("/resources/{kind}/list", ResourceList(resources, limit))
    app.add_route("/resources/{kind}/info", ResourceInfoAll(resources, limit))
    app.add_route("/resources/{kind}/create", ResourceCreate(resources, limit))
    app.add_route("/resources/{kind}/{name}/info", ResourceInfo(resources, limit))
    app.add_route("/resources/{kind}/{name}/set", ResourceSet(resources, limit))
    app.add_route("/resources/{kind}/{name}/destroy", ResourceDestroy(resources, limit))
