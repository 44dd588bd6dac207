"""The Falcon application factory. gunicorn calls get_app(); tests and tools call create_app()."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import falcon

from . import containers_face, faces, padwiring
from .config import Settings
from .db import Database
from .http import TEXT
from .pages import PageHeaders
from .resources import description
from .resources import drives as drive_resources
from .resources import netresources
from .resources import sandboxes as sandbox_resources
from .resources import servers as server_resources
from .services.accounts import Accounts
from .services.drives import Drives
from .services.ippool import public_pool
from .services.resources import PublicNetwork, Resources
from .services.sandboxes import Sandboxes
from .services.servers import Claims, Servers
from .services.throttle import AuthThrottle
from storage.pool import DrivePool

log = logging.getLogger("openhosting.api")


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
    pads: object = None  # padwiring.PadFace


@dataclass
class WorkspacesFace:
    """The Containers face's services (tokens, projects, workspaces and their files)."""
    tokens: object
    projects: object
    workspaces: object
    files: object
    accelerator: object  # () -> "kvm" | "tcg"
    submissions: object = None
    ssh_keys: object = None  # services.ssh_keys.SshKeys


def build_workspaces_face(settings: Settings, db: Database, host, notify, finished=None,
                          waiters=None) -> WorkspacesFace:
    from storage.projects import ProjectFiles, WorkspaceUploads

    from .services.projects import Projects
    from .services.ssh_keys import SshKeys
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
                              notify=notify, finished=finished, waiters=waiters)
    return WorkspacesFace(tokens=Tokens(db), projects=projects, workspaces=workspaces,
                          files=WorkspaceFiles(workspaces, guest_factory(settings, host)),
                          accelerator=lambda: str(host.accelerator), submissions=submissions,
                          ssh_keys=SshKeys(db))


def build_services(settings: Settings) -> Services:
    from hypervisor.host import Host
    from hypervisor.servers import ServerSubstrate

    db = Database(settings)
    pool = DrivePool(settings.drive_dir, reserve=settings.pool_reserve)
    drives = Drives(db, pool, settings, claims=Claims())
    ip_pool = public_pool(settings)
    resources = Resources(db, PublicNetwork(ip_pool))
    host = Host(settings.installation_id, uri=settings.libvirt_uri)
    substrate = ServerSubstrate(host, settings.run_dir, ip_pool, settings.console_address,
                                settings.public_forward)
    from storage.uploads import UploadStore

    from .doorbell import Waiters, notifier, ringer

    # The same services serve the API and the agent: the API side rings the agent and waits on
    # `waiters` (its socket is made on the first wait), the agent side rings the waiters.
    waiters_dir = settings.run_dir / "waiters"
    finished, waiters = ringer(waiters_dir), Waiters(waiters_dir)   # sandboxes' and submissions' waits
    sandboxes = Sandboxes(db, settings, UploadStore(settings.state_dir / "uploads"),
                          notify=notifier(settings.run_dir / "agent.sock"), finished=finished, waiters=waiters)
    accounts = Accounts(db)
    return Services(settings=settings, db=db, accounts=accounts, pool=pool, drives=drives,
                    resources=resources, servers=Servers(db, settings, drives, resources, substrate),
                    sandboxes=sandboxes,
                    workspaces_face=build_workspaces_face(settings, db, host,
                                                          notifier(settings.run_dir / "agent.sock"),
                                                          finished, waiters),
                    pads=padwiring.build(settings, db, accounts, sandboxes))


def create_app(services: Services) -> falcon.App:
    face = services.workspaces_face
    extra = [containers_face.face(face.tokens)] if face is not None else []
    if services.pads:
        extra += list(padwiring.faces(services.pads, services.accounts))
    table = faces.build_table(services.accounts, extra, AuthThrottle.for_settings(services.settings))
    app = falcon.App(middleware=[faces.FaceMiddleware(table), PageHeaders()], media_type=TEXT)
    app.req_options.strip_url_path_trailing_slash = True
    app.resp_options.secure_cookies_by_default = False
    faces.install(app, table)
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
        if face.ssh_keys is not None:
            from .resources import ssh_keys as ssh_key_resources

            ssh_key_resources.add_routes(app, face.ssh_keys)
    if services.pads:
        padwiring.add_routes(app, services.pads)
    description.add_routes(app, table)
    return app


def get_app() -> falcon.App:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return CanonicalHeaders(create_app(build_services(Settings.from_env())))


class CanonicalHeaders:
    """WSGI wrapper: Falcon emits header names in lower case; scripts grep for `X-Elastic-Error`."""

    NAMES = {"x-elastic-error": "X-Elastic-Error", "content-type": "Content-Type",
             "content-length": "Content-Length", "location": "Location", "allow": "Allow",
             "www-authenticate": "WWW-Authenticate", "connection": "Connection",
             "content-security-policy": "Content-Security-Policy",
             "x-content-type-options": "X-Content-Type-Options", "referrer-policy": "Referrer-Policy",
             "x-frame-options": "X-Frame-Options"}

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        def start(status, headers, exc_info=None):
            return start_response(status, [(self.NAMES.get(k, k), v) for k, v in headers], exc_info)

        return self.app(environ, start)
