"""Containers face (`/api/v1`): the test endpoint, projects and workspaces (contract endpoints 1-10, 15-17).

Resources parse and render only; services decide and raise the contract's errors.
"""

from __future__ import annotations

import json

import falcon

from ..services.projects import Projects
from ..services.workspace_files import WorkspaceFiles
from ..services.workspaces import MAX_UPLOAD, CreateRequest, Workspaces
from . import containers_body


def _json(resp: falcon.Response, value, status=falcon.HTTP_200) -> None:
    resp.status = status
    resp.content_type = "application/json"
    resp.text = json.dumps(value)


class Test:
    def __init__(self, accelerator):
        self.accelerator = accelerator

    def on_get(self, req, resp):
        _json(resp, {"message": "You can use Sphere Engine Containers API", "accelerator": self.accelerator()})


class ProjectCollection:
    def __init__(self, projects: Projects):
        self.projects = projects

    def on_get(self, req, resp):
        _json(resp, self.projects.page(req.context.user, req.get_param("limit"), req.get_param("page_token")))


class ProjectItem:
    def __init__(self, projects: Projects):
        self.projects = projects

    def on_get(self, req, resp, project_id):
        _json(resp, self.projects.render(self.projects.get(req.context.user, project_id)))


class _Base:
    def __init__(self, workspaces: Workspaces, files: WorkspaceFiles, public_url: str):
        self.workspaces = workspaces
        self.files = files
        self.public_url = public_url

    def base(self, req) -> str:
        return containers_body.base_url(req, self.public_url)


def _states(req) -> list[str]:
    values = []
    for key in ("states[]", "states"):
        values += req.get_param_as_list(key) or []
    return values


class WorkspaceCollection(_Base):
    def on_get(self, req, resp):
        _json(resp, self.workspaces.page(req.context.user, self.base(req), req.get_param("project_id"),
                                         _states(req), req.get_param("limit"), req.get_param("page_token")))

    def on_post(self, req, resp):
        fields, files = containers_body.read(req, ("files",), MAX_UPLOAD)
        ws = self.workspaces.create(req.context.user, CreateRequest(fields, files.get("files")), self.base(req))
        _json(resp, {"message": "Workspace has been created", "workspace": ws}, falcon.HTTP_201)


class WorkspaceItem(_Base):
    def on_get(self, req, resp, workspace_id):
        _json(resp, self.workspaces.get(req.context.user, workspace_id, self.base(req)))


class WorkspaceAction(_Base):
    MESSAGES = {"stop": "Workspace has been stopped", "resume": "Workspace is resuming",
                "remove": "Workspace has been removed"}

    def __init__(self, action: str, *args):
        super().__init__(*args)
        self.action = action

    def on_put(self, req, resp, workspace_id):
        getattr(self.workspaces, self.action)(req.context.user, workspace_id)
        _json(resp, {"message": self.MESSAGES[self.action]})


class WorkspaceStream(_Base):
    def on_get(self, req, resp, workspace_id, stream):
        resp.data = self.workspaces.stream(req.context.user, workspace_id, stream)
        resp.content_type = "text/plain; charset=utf-8"


class WorkspaceUpload(_Base):
    def on_post(self, req, resp, workspace_id):
        # The workspace is looked at first: an unknown id is 404/1001 whatever the body.
        self.workspaces.get(req.context.user, workspace_id, "")
        fields, files = containers_body.read(req, ("filedata",), MAX_UPLOAD)
        path = self.files.upload(req.context.user, workspace_id, fields.get("filepath"), files.get("filedata"))
        _json(resp, {"path": path})


class WorkspaceFile(_Base):
    def on_get(self, req, resp, workspace_id, path):
        name, data = self.files.download(req.context.user, workspace_id, path)
        resp.data = data
        resp.content_type = "application/octet-stream"
        safe = "".join(c for c in name if c.isprintable() and c not in '"\\') or "file"
        resp.set_header("Content-Disposition", f'attachment; filename="{safe}"')


class WorkspaceListing(_Base):
    def on_get(self, req, resp, workspace_id, path=None):
        _json(resp, self.files.listing(req.context.user, workspace_id, path))


def add_routes(app: falcon.App, projects: Projects, workspaces: Workspaces, files: WorkspaceFiles,
               public_url: str, accelerator) -> None:
    args = (workspaces, files, public_url)
    app.add_route("/api/v1/test", Test(accelerator))
    app.add_route("/api/v1/projects", ProjectCollection(projects))
    app.add_route("/api/v1/projects/{project_id}", ProjectItem(projects))
    app.add_route("/api/v1/workspaces", WorkspaceCollection(*args))
    app.add_route("/api/v1/workspaces/{workspace_id}", WorkspaceItem(*args))
    for action in ("stop", "resume", "remove"):
        app.add_route(f"/api/v1/workspaces/{{workspace_id}}/{action}", WorkspaceAction(action, *args))
    app.add_route("/api/v1/workspaces/{workspace_id}/files", WorkspaceUpload(*args))
    app.add_route("/api/v1/workspaces/{workspace_id}/files/{path:path}", WorkspaceFile(*args))
    app.add_route("/api/v1/workspaces/{workspace_id}/list_files", WorkspaceListing(*args))
    app.add_route("/api/v1/workspaces/{workspace_id}/list_files/{path:path}", WorkspaceListing(*args))
    app.add_route("/api/v1/workspaces/{workspace_id}/{stream}", WorkspaceStream(*args))
