"""The workspaces face's SSH keys (`/api/v1/ssh-keys`): the public keys the SSH gateway lets into the
user's workspaces. Parse and render only; `services/ssh_keys.py` decides."""

from __future__ import annotations

import json

import falcon

from ..services.ssh_keys import SshKeys
from . import containers_body


def _json(resp: falcon.Response, value, status=falcon.HTTP_200) -> None:
    resp.status = status
    resp.content_type = "application/json"
    resp.text = json.dumps(value)


class KeyCollection:
    def __init__(self, keys: SshKeys):
        self.keys = keys

    def on_get(self, req, resp):
        _json(resp, {"items": self.keys.list(req.context.user)})

    def on_post(self, req, resp):
        fields, _ = containers_body.read(req, (), 0)
        key = self.keys.add(req.context.user, fields.get("key", ""), fields.get("comment"))
        _json(resp, {"message": "SSH key has been added", "key": key}, falcon.HTTP_201)


class KeyItem:
    def __init__(self, keys: SshKeys):
        self.keys = keys

    def on_get(self, req, resp, key_id):
        found = [k for k in self.keys.list(req.context.user) if str(k["id"]) == key_id]
        if not found:
            from ..services.ssh_keys import key_not_found

            raise key_not_found()
        _json(resp, found[0])

    def on_delete(self, req, resp, key_id):
        self.keys.remove(req.context.user, key_id)
        _json(resp, {"message": "SSH key has been removed"})


def add_routes(app: falcon.App, keys: SshKeys) -> None:
    app.add_route("/api/v1/ssh-keys", KeyCollection(keys))
    app.add_route("/api/v1/ssh-keys/{key_id}", KeyItem(keys))
