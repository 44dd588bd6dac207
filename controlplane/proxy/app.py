"""The console proxy's ASGI app, assembled from a list of route modules.

Adding a browser face is one line in `MODULES`: a module with `routes(ctx) -> list[BaseRoute]`
(Starlette `Route`, `WebSocketRoute`, `Mount`). Mount points in use: `/vnc/…` (server consoles,
vnc.py), `/terminal/…` (workspace terminals), `/pads/…` pages and `/rooms/…` WebSockets (pad pages).
`/static/vendor/<npm package>/…` serves the pinned npm packages from ./node_modules (package.json),
`/static/<file>` the proxy's own page scripts (controlplane/proxy/static).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..config import Settings
from ..db import Database
from ..services.tickets import Tickets
from .gate import Gate
from .origin import Origins

ROOT = Path(__file__).resolve().parents[2]
STATIC = Path(__file__).resolve().parent / "static"

#: Route modules, each `routes(ctx)`; one line per browser face.
MODULES = [
    "controlplane.proxy.vnc",
    "controlplane.proxy.pads",
    "controlplane.proxy.terminal",
]


def vendor_dir() -> Path:
    return Path(os.environ.get("OPENHOSTING_NODE_MODULES") or ROOT / "node_modules")


@dataclass
class ProxyContext:
    """What route modules share: settings, the database, the ticket gate, a libvirt host (lazily)."""

    settings: Settings
    db: Database
    gate: Gate
    extra: dict = field(default_factory=dict)   # per-module state, keyed by module

    @cached_property
    def host(self):
        from hypervisor.host import Host

        return Host(self.settings.installation_id, uri=self.settings.libvirt_uri)


def make_context(settings: Settings) -> ProxyContext:
    db = Database(settings)
    gate = Gate(Tickets(db), Origins(settings.console_base, settings.console_origins))
    return ProxyContext(settings=settings, db=db, gate=gate)


SWEEP_INTERVAL = 600.0


@contextlib.asynccontextmanager
async def lifespan(app):
    """Delete long-expired tickets every SWEEP_INTERVAL seconds while the proxy runs."""
    ctx: ProxyContext = app.state.ctx

    async def sweeper():
        while True:
            try:
                swept = await run_in_threadpool(ctx.gate.tickets.sweep)
                if swept:
                    logging.getLogger("openhosting.proxy").info("swept %d expired tickets", swept)
            except Exception:
                logging.getLogger("openhosting.proxy").exception("ticket sweep")
            await asyncio.sleep(SWEEP_INTERVAL)

    task = asyncio.create_task(sweeper())
    try:
        yield
    finally:
        task.cancel()


async def health(request):
    return PlainTextResponse("ok\n")


def build_app(settings: Settings | None = None) -> Starlette:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ctx = make_context(settings or Settings.from_env())
    routes = [Route("/health", health)]
    for name in MODULES:
        routes.extend(importlib.import_module(name).routes(ctx))
    routes.append(Mount("/static/vendor", StaticFiles(directory=vendor_dir(), check_dir=False), name="vendor"))
    routes.append(Mount("/static", StaticFiles(directory=STATIC), name="static"))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.ctx = ctx
    return app
