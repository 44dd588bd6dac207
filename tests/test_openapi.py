"""The OpenAPI document: valid, served without auth, true to the router both ways; the docs page."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from .apiwalk import build_app, documented_routes, served_routes


@pytest.fixture(scope="module")
def doc(installation):
    r = installation.client().get("/api/openapi.json", auth=False)
    assert r.status == 200 and r.headers["content-type"].startswith("application/json"), r.text
    return r.json()


def test_the_document_is_valid_openapi_3_1(doc):
    validate(doc)
    assert doc["openapi"].startswith("3.1")


def test_every_served_route_is_described_and_every_described_path_is_served(installation, doc):
    served = served_routes(build_app(installation.env))
    described = documented_routes(doc)
    assert sorted(set(served) - set(described)) == [], "served but not in the OpenAPI document"
    assert sorted(set(described) - set(served)) == [], "in the OpenAPI document but not served"
    wrong = {path: (sorted(served[path]), sorted(described[path]))
             for path in served if served[path] != described[path]}
    assert wrong == {}, "methods differ (served, described)"


def test_every_operation_has_an_id_and_only_the_description_is_public(doc):
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    public = sorted(path for path, item in doc["paths"].items()
                    if any(op.get("security") == [] for op in item.values()))
    assert public == ["/api/auth/login", "/api/auth/logout", "/api/docs", "/api/openapi.json"]


def test_the_docs_page_and_its_security_headers(installation):
    anyone = installation.client()
    r = anyone.get("/api/docs", auth=False)
    assert r.status == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-eval" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"
    # every script and style the page names is served, so the page renders with nothing from elsewhere
    import re

    for ref in re.findall(r'(?:src|href)="([^"]+)"', r.text):
        assert ref.startswith("/api/docs/"), ref
        asset = anyone.get(ref, auth=False)
        assert asset.status == 200 and asset.body, ref
        assert "html" not in asset.headers["content-type"]


def test_non_html_answers_carry_no_page_headers(installation, alice):
    r = alice.get("/drives/list")
    assert r.status == 200 and "content-security-policy" not in r.headers
    r = installation.client().get("/api/openapi.json", auth=False)
    assert "content-security-policy" not in r.headers


def test_unknown_paths_fall_to_a_face(installation, alice):
    r = installation.client().get("/nowhere", auth=False)
    assert r.status == 401 and r.error == "auth" and r.headers["content-type"].startswith("text/plain")
    r = alice.get("/nowhere")
    assert r.status == 404 and r.error == "missing" and r.text.startswith("no such command")
    r = alice.get("/api/nowhere")
    assert r.status == 404 and r.json()["error"] == "missing"
    r = installation.client().get("/api/docs/nowhere", auth=False)
    assert r.status == 404 and r.json()["error"] == "missing"
    r = installation.client().request("POST", "/api/openapi.json", auth=False)
    assert r.status == 405 and r.json()["error"] == "method" and r.headers["allow"]
