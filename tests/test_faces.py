"""The face table (who authenticates and how errors look, per path prefix) and the shared body
reader's refusals, through the live server on both databases."""

from __future__ import annotations

import json

import pytest

from controlplane.faces import Face, FaceTable, build_table, cloud_error, json_error

from .test_sandboxes_api import multipart

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def test_the_longest_whole_segment_prefix_wins_and_unknown_paths_fall_to_the_default():
    a, b, c = (Face(n, p, None, json_error) for n, p in (("a", ("/api",)), ("b", ("/api/v1",)), ("c", ("/x/",))))
    fallback = Face("default", (), None, cloud_error)
    table = FaceTable([a, b, c], default=fallback)
    assert table.face_for("/api/v1/workspaces").name == "b"
    assert table.face_for("/api/v1").name == "b"
    assert table.face_for("/api/v10").name == "a"
    assert table.face_for("/api").name == "a"
    assert table.face_for("/apix").name == "default"
    assert table.face_for("/x/y").name == "c"
    assert table.face_for("/").name == "default"


def test_the_built_table_names_each_existing_face():
    table = build_table(accounts=None)
    names = {path: table.face_for(path).name for path in (
        "/drives/list", "/servers/x/info", "/resources/ip/list", "/api/sandboxes/1", "/api/images",
        "/api/openapi.json", "/api/docs", "/api/elsewhere", "/elsewhere")}
    assert names == {"/drives/list": "cloud", "/servers/x/info": "cloud", "/resources/ip/list": "cloud",
                     "/api/sandboxes/1": "sandboxes", "/api/images": "sandboxes",
                     "/api/openapi.json": "description", "/api/docs": "description",
                     "/api/elsewhere": "api", "/elsewhere": "cloud"}
    assert table.face_for("/api/docs").auth is None and table.face_for("/drives/list").auth is not None


def test_each_face_renders_its_own_errors(installation, alice):
    anyone = installation.client()
    r = anyone.get("/drives/list", auth=False)
    assert (r.status, r.error) == (401, "auth") and r.headers["www-authenticate"].startswith("Basic")
    assert r.headers["content-type"].startswith("text/plain") and r.text.endswith("\n")
    r = anyone.get("/drives/list", auth=False, headers={"Accept": "application/json"})
    assert r.status == 401 and r.json()["error"] == "auth"
    r = anyone.get("/api/sandboxes", auth=False)  # JSON whatever the Accept
    assert r.status == 401 and r.json()["error"] == "auth" and r.headers["www-authenticate"]
    r = alice.request("PUT", "/api/images")
    assert r.status == 405 and r.json()["error"] == "method" and "GET" in r.headers["allow"]
    r = alice.request("DELETE", "/drives/list")
    assert (r.status, r.error) == (405, "method") and "POST" in r.headers["allow"]


BAD_BODIES = [
    ("deep JSON array", b"[" * 100_000, "application/json"),
    ("deep JSON object", b'{"a":' * 100_000, "application/json"),
    ("NUL in a JSON string", json.dumps({"name": "a\x00b", "size": 1000}).encode(), "application/json"),
    ("NUL in a JSON key", json.dumps({"user:a\x00": "x", "name": "a", "size": 1000}).encode(), "application/json"),
    ("lone surrogate", b'{"name": "\\ud800", "size": 1000}', "application/json"),
    ("NUL in text", b"name a\x00b\nsize 1000\n", "application/octet-stream"),
    ("not UTF-8", b"name \xff\nsize 1000\n", "text/plain"),
]


@pytest.mark.parametrize("label,body,ctype", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_key_value_bodies_are_usage_errors(alice, label, body, ctype):
    before = alice.get("/drives/list").text
    for path in ("/drives/create", "/servers/create/stopped", "/resources/vlan/create"):
        r = alice.post(path, body, headers={"Content-Type": ctype})
        assert (r.status, r.error) == (400, "usage"), (label, path, r.status, r.text)
    assert alice.get("/drives/list").text == before


BAD_FORMS = [
    ("deep JSON", b"[" * 100_000, "application/json"),
    ("NUL in JSON", json.dumps({"image": "base", "cmd": "true\x00"}).encode(), "application/json"),
    ("lone surrogate", b'{"image": "\\ud800", "cmd": "true"}', "application/json"),
    ("NUL urlencoded", b"image=base&cmd=true%00", "application/x-www-form-urlencoded"),
    ("NUL in a multipart field", *multipart({"image": "base", "cmd": "true\x00"}, {})),
    ("NUL in a file name", *multipart({"image": "base", "cmd": "true"}, {"a\x00b": b"x"})),
    ("broken multipart", b"--nope\r\n", "multipart/form-data; boundary=abc"),
    ("no form", b"image base", "text/plain"),
]


@pytest.mark.parametrize("label,body,ctype", BAD_FORMS, ids=[b[0] for b in BAD_FORMS])
def test_bad_forms_are_usage_errors(alice, label, body, ctype):
    r = alice.post("/api/sandboxes", body, headers={"Content-Type": ctype})
    assert r.status == 400 and r.json()["error"] == "usage", (label, r.status, r.text)


def test_too_many_multipart_parts(alice):
    body, ctype = multipart({"image": "base", "cmd": "true"}, {f"f{i}": b"x" for i in range(80)})
    r = alice.post("/api/sandboxes", body, headers={"Content-Type": ctype})
    assert r.status == 400 and r.json()["error"] == "usage"


@pytest.mark.parametrize("path", ["/drives/%00/info", "/resources/vlan/%00/info", "/api/sandboxes/%00",
                                  "/servers/a%00b/info"])
def test_a_nul_in_the_path_names_nothing(alice, path):
    r = alice.get(path, headers={"Accept": "application/json"})
    assert r.status == 404 and r.json()["error"] == "missing", r.text
    assert "\x00" not in r.text and "\\u0000" not in r.text


def test_more_memory_than_the_host_has_is_a_usage_error(alice):
    r = alice.post("/servers/create", json.dumps({"name": "huge", "mem": 1024 * 1024}), headers=JSON_HEADERS)
    assert r.status == 400 and r.json()["error"] == "usage" and "more than this host has" in r.json()["message"]
    assert alice.get("/servers/list").text == ""
