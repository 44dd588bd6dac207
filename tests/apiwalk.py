"""What the Falcon app serves, read from its router, for the tests that hold the OpenAPI document and
tenant isolation to every route (tests/test_openapi.py, tests/test_tenancy.py)."""

from __future__ import annotations

import re

import falcon

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def served_routes(app: falcon.App) -> dict[str, set[str]]:
    """{uri template: methods with a responder of their own} for every route of the app's router
    (static routes are files, not API routes, and are not in the router)."""
    out: dict[str, set[str]] = {}

    def walk(nodes) -> None:
        for node in nodes:
            if node.resource is not None:
                methods = {m for m in METHODS if callable(getattr(node.resource, f"on_{m.lower()}", None))}
                # OpenAPI names a parameter without Falcon's converter: {path:path} is {path}
                out[re.sub(r"\{(\w+):[^}]*\}", r"{\1}", node.uri_template)] = methods
            walk(node.children)

    walk(app._router._roots)
    return out


def build_app(env: dict) -> falcon.App:
    """The same app the installation's gunicorn serves, built in this process from its settings."""
    from controlplane.app import build_services, create_app
    from controlplane.config import Settings

    return create_app(build_services(Settings.from_env(env)))


def documented_routes(doc: dict) -> dict[str, set[str]]:
    return {path: {m.upper() for m in item if m.upper() in METHODS} for path, item in doc["paths"].items()}
