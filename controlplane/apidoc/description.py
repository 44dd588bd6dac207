"""The description: this document and its human page (no authentication)."""

from __future__ import annotations

from .common import operation, response

TAG = "description"
SCHEMAS: dict = {}


def paths() -> dict:
    return {
        "/api/openapi.json": {"get": operation(
            "openapi", TAG, "This OpenAPI document",
            {"200": response(200, {"application/json": {"schema": {"type": "object"}}})})},
        "/api/docs": {"get": operation(
            "docs", TAG, "The document as a page for humans (Swagger UI)",
            {"200": response(200, {"text/html": {"schema": {"type": "string"}}}),
             "503": {"description": "The page's assets are not installed (tools/setup.sh installs them)",
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}})},
    }
