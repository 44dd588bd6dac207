"""Pads, their events and environments, and runs (pads-api.md E1-E6, E17): parse, call, render."""

from __future__ import annotations

import falcon

from ..padface import base_url, ok, page_links, read_params
from ..services.pad_params import PAGE_SIZE, integer, page, sort


class PadsResource:
    def __init__(self, face):
        self.face = face

    def caller(self, req):
        return self.face.accounts.caller(req.context.user)

    def base(self, req) -> str:
        return base_url(req, self.face.settings.public_url)

    def params(self, req) -> dict:
        return read_params(req, self.face.settings.max_body)

    def listing(self, req, resp, key: str, call, default_sort: str = "created_at,desc") -> None:
        params = self.params(req)
        field, ascending, sort_text = sort(params.get("sort"), default_sort)
        number = page(params.get("page"))
        items, total = call(field, ascending, number)
        ok(resp, {key: items, "total": total,
                  **page_links(req, self.face.settings.public_url, number, total, sort_text, PAGE_SIZE)})


class PadCollection(PadsResource):
    def on_get(self, req, resp):
        caller = self.caller(req)
        self.listing(req, resp, "pads", lambda f, a, n: self.face.pads.list(caller, f, a, n, self.base(req)))

    def on_post(self, req, resp):
        caller = self.caller(req)
        pad, public_id = self.face.pads.create(caller, self.params(req), self.base(req))
        ok(resp, pad, location=f"/api/pads/{public_id}")


class PadItem(PadsResource):
    def on_get(self, req, resp, pad_id):
        ok(resp, self.face.pads.show(self.caller(req), pad_id, self.base(req)))

    def on_put(self, req, resp, pad_id):
        pad = self.face.pads.update(self.caller(req), pad_id, self.params(req), self.base(req))
        ok(resp, pad or {})

    on_patch = on_put


class PadEvents(PadsResource):
    def on_get(self, req, resp, pad_id):
        caller = self.caller(req)
        self.listing(req, resp, "events", lambda f, a, n: self.face.pads.events(caller, pad_id, a, n),
                     default_sort="created_at,asc")


class PadHistory(PadsResource):
    def on_get(self, req, resp, pad_id):
        after = self.params(req).get("after") or "0"
        ok(resp, self.face.pads.history(self.caller(req), pad_id, integer(after, "after")))


class PadRun(PadsResource):
    def on_post(self, req, resp, pad_id):
        if self.face.runs is None:
            raise falcon.HTTPServiceUnavailable()
        ok(resp, self.face.runs.run(self.caller(req), pad_id, self.params(req)))


class PadEnvironmentItem(PadsResource):
    def on_get(self, req, resp, env_id):
        ok(resp, self.face.pads.environment(self.caller(req), env_id))


class OrgPads(PadsResource):
    def on_get(self, req, resp):
        caller = self.caller(req)
        self.listing(req, resp, "pads",
                     lambda f, a, n: self.face.pads.list(caller, f, a, n, self.base(req), org=True))


def add_routes(app: falcon.App, face) -> None:
    app.add_route("/api/pads", PadCollection(face))
    app.add_route("/api/pads/{pad_id}", PadItem(face))
    app.add_route("/api/pads/{pad_id}/events", PadEvents(face))
    app.add_route("/api/pads/{pad_id}/history", PadHistory(face))
    app.add_route("/api/pads/{pad_id}/run", PadRun(face))
    app.add_route("/api/pad_environments/{env_id}", PadEnvironmentItem(face))
    app.add_route("/api/organization/pads", OrgPads(face))
