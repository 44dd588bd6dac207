"""The description face: GET /api/openapi.json (the OpenAPI document) and /api/docs (Swagger UI).

Swagger UI's files come from the npm package swagger-ui-dist, which tools/setup.sh unpacks into
var/vendor/swagger-ui-dist (not committed); OPENHOSTING_DOCS_ASSETS points elsewhere. Without them the
page answers 503 and says how to install them; the document itself needs nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import falcon

from .. import apidoc

ROOT = Path(__file__).resolve().parents[2]
OWN_STATIC = Path(__file__).resolve().parents[1] / "static"


def assets_dir() -> Path:
    return Path(os.environ.get("OPENHOSTING_DOCS_ASSETS") or ROOT / "var" / "vendor" / "swagger-ui-dist")


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>openhosting API</title>
<link rel="stylesheet" href="/api/docs/ui/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/api/docs/ui/swagger-ui-bundle.js"></script>
<script src="/api/docs/static/docs.js"></script>
</body>
</html>
"""


class OpenApiDocument:
    def __init__(self, table):
        self.text = json.dumps(apidoc.document(table), indent=1)

    def on_get(self, req, resp):
        resp.content_type = "application/json"
        resp.text = self.text


class DocsPage:
    def __init__(self, assets: Path):
        self.assets = assets

    def on_get(self, req, resp):
        if not (self.assets / "swagger-ui-bundle.js").is_file():
            raise falcon.HTTPServiceUnavailable(
                title="the documentation page's files are not installed",
                description="tools/setup.sh installs them (npm package swagger-ui-dist)")
        resp.content_type = "text/html; charset=utf-8"
        resp.text = PAGE


def add_routes(app: falcon.App, table) -> None:
    assets = assets_dir()
    app.add_route("/api/openapi.json", OpenApiDocument(table))
    app.add_route("/api/docs", DocsPage(assets))
    # Static files are not router routes (they serve no JSON): Swagger UI's, and our own start script.
    app.add_static_route("/api/docs/ui", str(assets), downloadable=False)
    app.add_static_route("/api/docs/static", str(OWN_STATIC))
