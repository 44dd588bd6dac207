"""Containers face (`/api/v1`): submissions (contract endpoints 11-14). Parse and render only."""

from __future__ import annotations

import json

import falcon

from ..services.submissions import MAX_UPLOAD, Submissions
from . import containers_body


def _json(resp: falcon.Response, value, status=falcon.HTTP_200) -> None:
    resp.status = status
    resp.content_type = "application/json"
    resp.text = json.dumps(value)


class _Base:
    def __init__(self, submissions: Submissions, public_url: str):
        self.submissions = submissions
        self.public_url = public_url

    def base(self, req) -> str:
        return containers_body.base_url(req, self.public_url)


class SubmissionCollection(_Base):
    def on_get(self, req, resp):
        _json(resp, self.submissions.page(req.context.user, self.base(req), req.get_param("ids"),
                                          req.get_param("limit"), req.get_param("page_token")))

    def on_post(self, req, resp):
        fields, files = containers_body.read(req, ("source",), MAX_UPLOAD)
        submission_id = self.submissions.create(req.context.user, fields, files.get("source"))
        _json(resp, {"message": "Submission has been created", "id": submission_id}, falcon.HTTP_201)


class SubmissionItem(_Base):
    def on_get(self, req, resp, submission_id):
        _json(resp, self.submissions.get(req.context.user, submission_id, self.base(req), req.get_param("wait")))


class SubmissionStream(_Base):
    def on_get(self, req, resp, submission_id, stream):
        resp.data, resp.content_type = self.submissions.stream(req.context.user, submission_id, stream)


def add_routes(app: falcon.App, submissions: Submissions, public_url: str) -> None:
    args = (submissions, public_url)
    app.add_route("/api/v1/submissions", SubmissionCollection(*args))
    app.add_route("/api/v1/submissions/{submission_id}", SubmissionItem(*args))
    app.add_route("/api/v1/submissions/{submission_id}/{stream}", SubmissionStream(*args))
