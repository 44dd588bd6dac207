"""The Falcon application factory. gunicorn calls get_app(); tests and tools call create_app()."""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass

import falcon

from . import containers_face, formats
from .config import Settings
from .db import Database
from .errors import DomainError, Unauthorized, http_status
from .http import JSON, TEXT
from .resources import drives as drive_resources
from .resources import netresources
from .resources import sandboxes as sandbox_resources
from .resources import servers as server_resources
from .services.accounts import Accounts
from .services.drives import Drives
from .services.resources import PublicNetwork, Resources
from .services.sandboxes import Sandboxes
from .services.servers import Claims, Servers
from storage.errors import BadData, ChunkTooLarge, OutOfBounds, PoolFull, StorageError
from storage.pool import DrivePool

log = logging.getLogger("openhosting.api")

# Storage errors, mapped once to (status, X-Elastic-Error).
STORAGE_HTTP = {
    OutOfBounds: (400, "usage"),
    BadData: (400, "usage"),
    ChunkTooLarge: (413, "usage"),
    PoolFull: (507, "full"),
}

# Falcon's own errors (routing, method) in the cloud API's vocabulary.
FALCON_KINDS = {400: "usage", 401: "auth", 404: "missing", 405: "method", 411: "usage", 413: "usage",
                415: "usage"}


@dataclass
class Services:
    settings: Settings
    db: Database
    accounts: Accounts
    drives: Drives
    pool: DrivePool
    resources: Resources
    servers: Servers
    sandboxes: Sandboxes
    workspaces_face: "WorkspacesFace | None" = None


@dataclass
class WorkspacesFace:
    """The Containers face's services (tokens, projects, workspaces and their files)."""
    tokens: object
    projects: object
    workspaces: object
    files: object
    accelerator: object  # () -> "kvm" | "tcg"
    submissions: object = None


def build_workspaces_face(settings: Settings, db: Database, host, notify) -> WorkspacesFace:
    from storage.projects import ProjectFiles, WorkspaceUploads

    from .services.projects import Projects
    from .services.tokens import Tokens
    from .services.workspace_files import WorkspaceFiles
    from .services.workspace_guest import guest_factory
    from .services.workspaces import Workspaces

    projects = Projects(db, ProjectFiles(settings.state_dir / "projects"))
    workspaces = Workspaces(db, settings, projects, WorkspaceUploads(settings.state_dir / "workspace-uploads"),
                            notify=notify)
    from storage.submissions import SubmissionFiles
    from .services.submissions import Submissions

    submissions = Submissions(db, settings, projects, SubmissionFiles(settings.state_dir / "submissions"),
                              notify=notify)
    return WorkspacesFace(tokens=Tokens(db), projects=projects, workspaces=workspaces,
                          files=WorkspaceFiles(workspaces, guest_factory(settings, host)),
                          accelerator=lambda: str(host.accelerator), submissions=submissions)


def build_services(settings: Settings) -> Services:
    from hypervisor.host import Host
    from hypervisor.servers import ServerSubstrate

    db = Database(settings)
    pool = DrivePool(settings.drive_dir, reserve=settings.pool_reserve)
    drives = Drives(db, pool, settings, claims=Claims())
    resources = Resources(db, PublicNetwork(settings.ip_pool))
    host = Host(settings.installation_id, uri=settings.libvirt_uri)
    substrate = ServerSubstrate(host, settings.run_dir, settings.ip_pool, settings.console_address,
                                settings.public_forward)
    from storage.uploads import UploadStore

    from .doorbell import Waiters, notifier, ringer

    # The same services serve the API and the agent: the API side rings the agent and waits on
    # `waiters` (its socket is made on the first wait), the agent side rings the waiters.
    waiters = settings.run_dir / "waiters"
    sandboxes = Sandboxes(db, settings, UploadStore(settings.state_dir / "uploads"),
                          notify=notifier(settings.run_dir / "agent.sock"), finished=ringer(waiters),
                          waiters=Waiters(waiters))
    return Services(settings=settings, db=db, accounts=Accounts(db), pool=pool, drives=drives,
                    resources=resources, servers=Servers(db, settings, drives, resources, substrate),
                    sandboxes=sandboxes,
                    workspaces_face=build_workspaces_face(settings, db, host,
                                                          notifier(settings.run_dir / "agent.sock")))


class BasicAuth:
    """Every request carries HTTP Basic credentials: user UUID and secret API key."""

    def __init__(self, accounts: Accounts):
        self.accounts = accounts

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if containers_face.owns(req.path):
            return  # the workspaces face has its own tokens (BearerAuth)
        header = req.get_header("Authorization") or ""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise Unauthorized("HTTP Basic authentication required (user UUID and secret API key)")
        try:
            user, _, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed Basic authorization header") from None
        req.context.user = self.accounts.authenticate(user, secret)


def _render_error(req: falcon.Request, resp: falcon.Response, status: int, kind: str, message: str) -> None:
    resp.status = falcon.code_to_http_status(status)
    resp.set_header("X-Elastic-Error", kind)
    message = " ".join(message.split())  # one line
    if formats.wants_json(req.get_header("Accept")) or req.path.startswith("/api/"):
        resp.content_type = JSON
        resp.text = formats.json.dumps({"error": kind, "message": message})
    else:
        resp.content_type = TEXT
        resp.text = message + "\n"
    if status == 401:
        resp.set_header("WWW-Authenticate", 'Basic realm="openhosting"')
    # An error may come before the body was read; do not let a keep-alive reuse a half-read stream.
    if req.content_length:
        resp.set_header("Connection", "close")


def _domain_error(req, resp, exc: DomainError, params) -> None:
    status, kind = http_status(exc)
    _render_error(req, resp, status, kind, exc.message)


def _storage_error(req, resp, exc: StorageError, params) -> None:
    status, kind = next((v for cls, v in STORAGE_HTTP.items() if isinstance(exc, cls)), (500, "failed"))
    _render_error(req, resp, status, kind, exc.message)


def _falcon_error(req, resp, exc: falcon.HTTPError, params) -> None:
    status = int(exc.status_code)
    kind = FALCON_KINDS.get(status, "failed" if status >= 500 else "usage")
    if status == 404:
        message = f"no such command or object: {req.path}"
    elif status == 405:
        message = f"{req.method} is not allowed on {req.path}"
        resp.set_header("Allow", exc.headers.get("Allow", "") if exc.headers else "")
    else:
        message = exc.title + (f": {exc.description}" if exc.description else "")
    _render_error(req, resp, status, kind, message)


def _hypervisor_error(req, resp, exc, params) -> None:
    from hypervisor.errors import (ConnectionFailed, ConnectionLost, DomainNotFound, InvalidConfig,
                                   InvalidState, Unsupported)

    log.warning("hypervisor error on %s %s: %s %s", req.method, req.path, type(exc).__name__, exc.context)
    if isinstance(exc, (InvalidConfig, Unsupported)):
        # Our own checks word these for users; what libvirt itself said may name host paths.
        own = "libvirt_code" not in exc.context
        _render_error(req, resp, 400, "usage", exc.message if own else "the server configuration was refused")
    elif isinstance(exc, (ConnectionLost, ConnectionFailed)):
        _render_error(req, resp, 500, "system", "the hypervisor is not reachable right now; try again")
    elif isinstance(exc, InvalidState):
        _render_error(req, resp, 409, "busy", "the server is in a state that does not allow this now")
    elif isinstance(exc, DomainNotFound):
        _render_error(req, resp, 409, "busy", "the server's virtual machine is not running")
    else:
        _render_error(req, resp, 500, "failed", f"the hypervisor refused: {type(exc).__name__}")


def _unexpected(req, resp, exc: Exception, params) -> None:
    if isinstance(exc, falcon.HTTPError):
        return _falcon_error(req, resp, exc, params)
    log.exception("unhandled error on %s %s", req.method, req.path)
    _render_error(req, resp, 500, "system", "internal error; the operator's log has the details")


def create_app(services: Services) -> falcon.App:
    middleware = [BasicAuth(services.accounts)]
    face = services.workspaces_face
    if face is not None:
        middleware.append(containers_face.BearerAuth(face.tokens))
    app = falcon.App(middleware=middleware, media_type=TEXT)
    app.req_options.strip_url_path_trailing_slash = True
    app.resp_options.secure_cookies_by_default = False
    # Order matters: Falcon picks the most specific handler registered.
    # containers_face.handles: errors on /api/v1 get that face's envelope.
    app.add_error_handler(Exception, containers_face.handles(_unexpected))
    app.add_error_handler(falcon.HTTPError, containers_face.handles(_falcon_error))
    app.add_error_handler(StorageError, containers_face.handles(_storage_error))
    app.add_error_handler(DomainError, containers_face.handles(_domain_error))
    from hypervisor.errors import HypervisorError

    app.add_error_handler(HypervisorError, containers_face.handles(_hypervisor_error))
    drive_resources.add_routes(app, services.drives)
    netresources.add_routes(app, services.resources, services.settings.max_body)
    server_resources.add_routes(app, services.servers, services.settings.max_body)
    sandbox_resources.add_routes(app, services.sandboxes, services.settings.max_body)
    if face is not None:
        from .resources import containers

        containers.add_routes(app, face.projects, face.workspaces, face.files, services.settings.public_url,
                              face.accelerator)
        if face.submissions is not None:
            from .resources import submissions as submission_resources

            submission_resources.add_routes(app, face.submissions, services.settings.public_url)
    return app


def get_app() -> falcon.App:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return CanonicalHeaders(create_app(build_services(Settings.from_env())))


class CanonicalHeaders:
    """WSGI wrapper: Falcon emits header names in lower case; scripts grep for `X-Elastic-Error`."""

    NAMES = {"x-elastic-error": "X-Elastic-Error", "content-type": "Content-Type",
             "content-length": "Content-Length", "location": "Location", "allow": "Allow",
             "www-authenticate": "WWW-Authenticate", "connection": "Connection"}

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        def start(status, headers, exc_info=None):
            return start_response(status, [(self.NAMES.get(k, k), v) for k, v in headers], exc_info)

        return self.app(environ, start)
