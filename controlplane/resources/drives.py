"""Cloud API: /drives/… — parse, call the drives service, render."""

from __future__ import annotations

import falcon

from ..bodies import read_bytes, read_fields
from ..errors import Usage
from ..http import no_content, send_list, send_many, send_one
from ..services.drives import Drives


class _Base:
    def __init__(self, drives: Drives):
        self.drives = drives

    def limit(self) -> int:
        return self.drives.settings.max_body


class DriveList(_Base):
    def __init__(self, drives: Drives, standard: bool = False):
        super().__init__(drives)
        self.standard = standard

    def on_get(self, req, resp):
        send_list(req, resp, "drive", self.drives.list(req.context.user, standard=self.standard))

    on_post = on_get


class DriveInfoAll(DriveList):
    def on_get(self, req, resp):
        send_many(req, resp, self.drives.info_all(req.context.user, standard=self.standard))

    on_post = on_get


class DriveCreate(_Base):
    def on_post(self, req, resp):
        send_one(req, resp, self.drives.create(req.context.user, read_fields(req, self.limit())))


class DriveInfo(_Base):
    def on_get(self, req, resp, drive):
        send_one(req, resp, self.drives.info(req.context.user, drive))

    on_post = on_get


class DriveSet(_Base):
    def on_post(self, req, resp, drive):
        send_one(req, resp, self.drives.set(req.context.user, drive, read_fields(req, self.limit())))


class DriveDestroy(_Base):
    def on_post(self, req, resp, drive):
        self.drives.destroy(req.context.user, drive)
        no_content(resp)


class DriveRead(_Base):
    def on_get(self, req, resp, drive, offset, size):
        length, stream = self.drives.read(req.context.user, drive, offset, size)
        resp.content_type = "application/octet-stream"
        resp.content_length = length
        resp.stream = stream

    on_post = on_get


class DriveWrite(_Base):
    def on_post(self, req, resp, drive, offset=None):
        encoding = (req.get_header("Content-Encoding") or "").strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip"):
            raise Usage("Content-Encoding must be gzip or none")
        body = read_bytes(req, self.limit())
        self.drives.write(req.context.user, drive, offset, body, gzip=encoding in ("gzip", "x-gzip"))
        no_content(resp)


class DriveImage(_Base):
    def on_post(self, req, resp, drive, source, mode=""):
        self.drives.image(req.context.user, drive, source, mode)
        no_content(resp)


def add_routes(app: falcon.App, drives: Drives) -> None:
    app.add_route("/drives/list", DriveList(drives))
    app.add_route("/drives/info", DriveInfoAll(drives))
    app.add_route("/drives/list/standard", DriveList(drives, standard=True))
    app.add_route("/drives/info/standard", DriveInfoAll(drives, standard=True))
    app.add_route("/drives/create", DriveCreate(drives))
    app.add_route("/drives/{drive}/info", DriveInfo(drives))
    app.add_route("/drives/{drive}/set", DriveSet(drives))
    app.add_route("/drives/{drive}/destroy", DriveDestroy(drives))
    app.add_route("/drives/{drive}/read/{offset}/{size}", DriveRead(drives))
    write = DriveWrite(drives)
    app.add_route("/drives/{drive}/write", write)
    app.add_route("/drives/{drive}/write/{offset}", write)
    image = DriveImage(drives)
    app.add_route("/drives/{drive}/image/{source}", image)
    app.add_route("/drives/{drive}/image/{source}/{mode}", image)
