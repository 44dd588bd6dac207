"""The Falcon application factory. gunicorn calls get_app(); tests and tools call create_app()."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import falcon

from . import faces, padwiring
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
from .services.resources import PublicNetwork, Resources
from .services.sandboxes import Sandboxes
from .services.servers import Claims, Servers
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
    pads: object = None  # padwiring.PadFace


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
    accounts = Accounts(db)
    return Services(settings=settings, db=db, accounts=accounts, pool=pool, drives=drives,
                    resources=resources, servers=Servers(db, settings, drives, resources, substrate),
                    sandboxes=sandboxes, pads=padwiring.build(settings, db, accounts, sandboxes))


def create_app(services: Services) -> falcon.App:
    extra = padwiring.faces(services.pads, services.accounts) if services.pads else ()
    table = faces.build_table(services.accounts, extra)
    app = falcon.App(middleware=[faces.FaceMiddleware(table), PageHeaders()], media_type=TEXT)
    app.req_options.strip_url_path_trailing_slash = True
    app.resp_options.secure_cookies_by_default = False
    faces.install(app, table)
    drive_resources.add_routes(app, services.drives)
    netresources.add_routes(app, services.resources, services.settings.max_body)
    server_resources.add_routes(app, services.servers, services.settings.max_body)
    sandbox_resources.add_routes(app, services.sandboxes, services.settings.max_body)
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
