"""The Containers face (/api/v1) without VMs: tokens, projects, workspace requests and every error
code that needs no running guest. The API runs without an agent here, so a new workspace stays in
state 1 (starting): that is what the state rules and the slot counting are checked against."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from .conftest import BACKENDS, new_installation
from .containers import EXAMPLE, V1, make_project, new_account, targz


@pytest.fixture(scope="module", params=BACKENDS)
def site(request, tmp_path_factory):
    inst, drop = new_installation(tmp_path_factory.mktemp("v1"), request.param, OPENHOSTING_WORKSPACE_SLOTS="3",
                                  OPENHOSTING_WORKSPACE_MEMORY="256M", OPENHOSTING_WORKSPACE_HOST_MEMORY="64G")
    inst.state_dir.mkdir(parents=True, exist_ok=True)
    inst.admin("db", "upgrade")
    inst.admin("image", "build", "base")
    inst.start_api()  # no agent: workspaces stay in state 1
    yield inst
    inst.stop()
    drop()


@pytest.fixture
def acct(site):
    return new_account(site)


def err(r, status, code):
    assert r.status == status, (r.status, r.text)
    body = r.json()
    assert body["error_code"] == code, body
    assert isinstance(body["message"], str) and "\n" not in body["message"] and body["message"]
    return body


# ---- tokens and the face's envelope ---------------------------------------------------------------

def test_test_endpoint_and_token_forms(site, acct):
    r = acct.get("/test")
    assert r.status == 200 and r.json()["message"] == "You can use Sphere Engine Containers API"
    assert r.json()["accelerator"] in ("kvm", "tcg")
    assert V1(site, acct.token, header=True).get("/test").status == 200
    # the query parameter wins over the header
    r = acct.api.request("GET", "/api/v1/test?access_token=nope", headers={"Authorization": f"Bearer {acct.token}"},
                         auth=False)
    err(r, 401, 1)


@pytest.mark.parametrize("path", ["/test", "/workspaces", "/projects", "/workspaces/" + "0" * 32, "/no/such"])
def test_unauthorized_everywhere(site, acct, path):
    err(acct.get(path, token=None), 401, 1)
    err(acct.get(path, token="0" * 32), 401, 1)


def test_cloud_credentials_do_not_open_the_face(site):
    user = site.create_user()
    r = site.client(user).get("/api/v1/test")
    err(r, 401, 1)


def test_unknown_route_and_method(site, acct):
    err(acct.get("/no/such"), 404, 0)
    err(acct.request("DELETE", "/workspaces"), 405, 0)


def test_token_cli_list_revoke_and_hashing(site):
    user = site.create_user()
    out = site.admin("token", "create", "--user", user.uuid, "--label", "ci").stdout.splitlines()
    assert out[0].startswith("token ") and len(out[0].split()[1]) == 32
    token, token_id = out[0].split()[1], out[1].split()[1]
    listed = site.admin("token", "list", "--user", user.uuid).stdout
    assert f"{token_id} workspaces {user.uuid} {token[:4]}…" in listed and token not in listed
    api = V1(site, token)
    assert api.get("/test").status == 200
    from sqlalchemy import create_engine, text

    engine = create_engine(site.database_url)
    try:
        with engine.connect() as conn:
            rows = [r[0] for r in conn.execute(text("SELECT digest FROM tokens"))]
    finally:
        engine.dispose()
    assert rows and all(token not in r for r in rows)
    assert site.admin("token", "revoke", token_id).stdout.strip() == f"revoked {token_id}"
    err(api.get("/test"), 401, 1)
    bad = site.admin("token", "create", "--user", user.uuid, "--kind", "nope", check=False)
    assert bad.returncode != 0 and "unknown token kind" in bad.stderr
    bad = site.admin("token", "create", "--user", "0" * 8, check=False)
    assert bad.returncode != 0


def test_access_log_hides_tokens(site, acct):
    acct.get("/test?limit=1")
    log = (site.state_dir / "api.log").read_text()
    assert "access_token=***" in log
    assert acct.token not in log


# ---- projects -------------------------------------------------------------------------------------

def test_projects_list_get_paging_and_visibility(site, acct, tmp_path):
    other = new_account(site)
    mine = [make_project(site, tmp_path, user=acct.user, name=f"p{i}") for i in range(3)]
    theirs = make_project(site, tmp_path, user=other.user)
    items = []
    token = None
    while True:
        r = acct.get("/projects?limit=2" + (f"&page_token={token}" if token else ""))
        assert r.status == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 2
        items += page["items"]
        token = page["paging"]["next_page_token"]
        if token is None:
            break
    ids = [p["id"] for p in items]
    assert set(mine) <= set(ids) and theirs not in ids
    assert all(p["template"] or p["id"] in mine for p in items)
    first = acct.get("/projects?limit=2").json()
    assert first["paging"]["previous_page_token"] is None and first["paging"]["next_page_token"] == "Mg=="
    second = acct.get("/projects?limit=2&page_token=Mg==").json()
    assert second["paging"]["previous_page_token"] == "MA=="
    p = acct.get(f"/projects/{mine[0]}").json()
    assert p["id"] == mine[0] and p["name"] == "p0" and p["slots"] == 1 and p["template"] is False
    assert json.loads(p["config"]["project_config"])["version"] == 2.1
    assert set(p) == {"id", "name", "created_at", "config", "stack", "template", "description", "slots"}
    err(acct.get(f"/projects/{theirs}"), 404, 200201)
    err(acct.get("/projects/nope"), 404, 200201)
    for bad in ("limit=0", "limit=21", "limit=x", "page_token=%%%", "page_token=eHl6"):
        err(acct.get(f"/projects?{bad}"), 400, 10)


def test_project_cli_from_archive_with_kept_id_show_remove(site, tmp_path):
    archive = tmp_path / "p.tar.gz"
    subprocess.run(["tar", "-czf", str(archive), "-C", str(EXAMPLE), "."], check=True)
    keep = "ab" * 16
    out = site.admin("project", "create", "--name", "calc", "--image", "base", "--from", str(archive),
                     "--template", "--id", keep).stdout
    assert out.strip() == f"project {keep}"
    show = site.admin("project", "show", keep).stdout
    assert "template true" in show and "image base" in show
    assert f"{keep} base template calc" in site.admin("project", "list").stdout
    again = site.admin("project", "create", "--name", "x", "--image", "base", "--from", str(archive),
                       "--template", "--id", keep, check=False)
    assert again.returncode != 0 and "exists" in again.stderr
    assert site.admin("project", "remove", keep).stdout.strip() == f"removed {keep}"
    bad = tmp_path / "bad"
    (bad / "workspace").mkdir(parents=True)
    (bad / "config.json").write_text('{"version": 3}')
    r = site.admin("project", "create", "--name", "x", "--image", "base", "--from", str(bad), "--template", check=False)
    assert r.returncode != 0 and "version" in r.stderr


# ---- workspaces: create and its errors -----------------------------------------------------------

def test_create_forms_and_object(site, acct, tmp_path):
    project = make_project(site, tmp_path, user=acct.user, init="echo hi\n")
    r = acct.post_json("/workspaces", {"project_id": project, "inactivity_timeout": 20, "auto_resume": False,
                                       "workspace_token_required": True, "retention_time_stopped": 30,
                                       "max_storage_time": 100, "unknown": "ignored", "workspace_init": None})
    assert r.status == 201, r.text
    body = r.json()
    assert body["message"] == "Workspace has been created"
    ws = body["workspace"]
    assert ws["state"] == {"code": 1, "name": "starting", "error_reason": None}
    assert ws["permissions"] == {"enter": True, "remove": False, "stop": False}
    assert ws["inactivity_timeout"] == 20 and ws["auto_resume"] is False and ws["workspace_token_required"]
    assert len(ws["workspace_token"]) == 36 and ws["retention_time_stopped"] == 30
    assert ws["retention_time_total"] == 100 == ws["max_storage_time"]
    # the terminal page on the console proxy, with a one-time ticket in the fragment (fresh every time)
    page, _, ticket = ws["workspace_url"].partition("#")
    assert page == f"{site.console_url}/terminal/{ws['id']}" and len(ticket) >= 40
    assert ws["streams"] == {"workspace_init_output": None, "workspace_init_error": None}
    assert ws["terminated_at"] is None and ws["last_usage"] is None and ws["workspace_init_failed"] is False
    assert json.loads(ws["config"])["version"] == 2.1
    again = acct.get(f"/workspaces/{ws['id']}").json()
    assert again.pop("workspace_url").partition("#")[::2] != (page, ticket)
    assert again == {k: v for k, v in ws.items() if k != "workspace_url"}
    r = acct.post_form("/workspaces", {"project_id": project, "auto_resume": "TRUE"})
    assert r.status == 201 and r.json()["workspace"]["workspace_token"] == ""
    r = acct.post_multipart("/workspaces", {"project_id": project},
                            {"files": ("src.tar.gz", targz({"workspace/a.txt": b"A"}))})
    assert r.status == 201, r.text
    err(acct.post_form("/workspaces", {"project_id": project}), 409, 200611)  # 3 slots taken


@pytest.mark.parametrize("fields", [
    {}, {"project_id": ""}, {"inactivity_timeout": "9"}, {"inactivity_timeout": "61"}, {"inactivity_timeout": "1.5"},
    {"auto_resume": "yes"}, {"workspace_token_required": "2"}, {"retention_time_stopped": "-1"},
    {"retention_time_total": "43201"}, {"project_config": "{"}, {"project_config": '{"version": 2.1}'},
    {"project_config": '{"version": 2.1, "scenarios": {"a b": {}}}'},
])
def test_create_invalid_data(site, acct, tmp_path, fields):
    project = make_project(site, tmp_path, user=acct.user)
    body = {"project_id": project, **fields} if fields else {}
    if "project_id" in fields:
        body["project_id"] = fields["project_id"]
    err(acct.post_form("/workspaces", body), 400, 10)


def test_create_project_and_files_errors(site, acct, tmp_path):
    other = new_account(site)
    theirs = make_project(site, tmp_path, user=other.user)
    err(acct.post_form("/workspaces", {"project_id": theirs}), 404, 200201)
    err(acct.post_form("/workspaces", {"project_id": "f" * 32}), 404, 200201)
    project = make_project(site, tmp_path, user=acct.user)
    for bad in (b"not a tar", targz({"../x": b"1"}), targz({"/etc/x": b"1"})):
        err(acct.post_multipart("/workspaces", {"project_id": project}, {"files": ("f.tgz", bad)}), 400, 10)
    big = b"\0" * (16 * 1024**2 + 10)
    err(acct.post_multipart("/workspaces", {"project_id": project}, {"files": ("f.tgz", big)}), 413, 202511)
    unbuilt = make_project(site, tmp_path, user=acct.user, image="no-such-image")
    err(acct.post_form("/workspaces", {"project_id": unbuilt}), 409, 200510)


def test_host_memory_limit(tmp_path):
    inst, drop = new_installation(tmp_path, "sqlite", OPENHOSTING_WORKSPACE_MEMORY="256M",
                                  OPENHOSTING_WORKSPACE_HOST_MEMORY="600M")
    try:
        inst.state_dir.mkdir(parents=True, exist_ok=True)
        inst.admin("db", "upgrade")
        inst.admin("image", "build", "base")
        inst.start_api()
        a, b = new_account(inst), new_account(inst)
        project = make_project(inst, tmp_path)  # a template both see
        assert a.post_form("/workspaces", {"project_id": project}).status == 201
        assert b.post_form("/workspaces", {"project_id": project}).status == 201
        body = err(b.post_form("/workspaces", {"project_id": project}), 409, 200611)
        assert "memory" in body["message"]
    finally:
        inst.stop()
        drop()


# ---- workspaces: states, list, other accounts ----------------------------------------------------

def test_starting_workspace_refuses_actions_and_files(site, acct, tmp_path):
    project = make_project(site, tmp_path, user=acct.user)
    ws = acct.post_form("/workspaces", {"project_id": project}).json()["workspace"]["id"]
    err(acct.put(f"/workspaces/{ws}/stop"), 400, 1013)
    err(acct.put(f"/workspaces/{ws}/resume"), 400, 1013)
    err(acct.put(f"/workspaces/{ws}/remove"), 400, 1013)
    body = err(acct.post_multipart(f"/workspaces/{ws}/files", {"filepath": "a.txt"}, {"filedata": ("a", b"1")}),
               404, 1008)
    assert body["message"] == "workspace is starting"
    err(acct.get(f"/workspaces/{ws}/files/" + base64.b64encode(b"a.txt").decode()), 404, 1108)
    err(acct.get(f"/workspaces/{ws}/list_files"), 404, 1008)
    err(acct.get(f"/workspaces/{ws}/list_files/c3Jj"), 404, 1008)
    err(acct.get(f"/workspaces/{ws}/workspace_init_output"), 404, 1101)
    err(acct.get(f"/workspaces/{ws}/workspace_init_error"), 404, 1101)
    err(acct.get(f"/workspaces/{ws}/output"), 400, 1105)


def test_other_accounts_ids_are_not_found(site, acct, tmp_path):
    project = make_project(site, tmp_path, user=acct.user)
    ws = acct.post_form("/workspaces", {"project_id": project}).json()["workspace"]["id"]
    other = new_account(site)
    for method, path in [("GET", ""), ("PUT", "/stop"), ("PUT", "/resume"), ("PUT", "/remove"),
                         ("GET", "/files/YQ=="), ("GET", "/list_files"), ("GET", "/workspace_init_output")]:
        err(other.request(method, f"/workspaces/{ws}{path}"), 404, 1001)
    err(other.post_multipart(f"/workspaces/{ws}/files", {"filepath": "a"}, {"filedata": ("a", b"1")}), 404, 1001)
    assert ws not in [w["id"] for w in other.get("/workspaces").json()["items"]]
    err(other.get(f"/projects/{project}"), 404, 200201)
    err(acct.get("/workspaces/" + "0" * 32), 404, 1001)
    err(acct.get("/workspaces/NOT-AN-ID"), 404, 1001)


def test_list_filters_and_paging(site, tmp_path):
    acct = new_account(site)
    p1 = make_project(site, tmp_path, user=acct.user)
    p2 = make_project(site, tmp_path, user=acct.user)
    made = [acct.post_form("/workspaces", {"project_id": p}).json()["workspace"]["id"] for p in (p1, p2, p1)]
    r = acct.get("/workspaces?limit=2")
    page = r.json()
    assert [w["id"] for w in page["items"]] == made[::-1][:2]  # newest first
    assert page["paging"] == {"previous_page_token": None, "next_page_token": "Mg=="}
    rest = acct.get("/workspaces?limit=2&page_token=Mg==").json()
    assert [w["id"] for w in rest["items"]] == [made[0]]
    assert rest["paging"] == {"previous_page_token": "MA==", "next_page_token": None}
    assert {w["id"] for w in acct.get(f"/workspaces?project_id={p1}").json()["items"]} == {made[0], made[2]}
    assert acct.get("/workspaces?project_id=unknown").json()["items"] == []
    for q in ("states[]=1&states[]=2", "states=1,2", "states=1&states=2"):
        assert len(acct.get(f"/workspaces?{q}").json()["items"]) == 3, q
    assert acct.get("/workspaces?states[]=3").json()["items"] == []
    assert acct.get("/workspaces?page_token=MTAw").json()["items"] == []
    for bad in ("states[]=6", "states=0", "states=a", "limit=31", "limit=0", "page_token=!!"):
        err(acct.get(f"/workspaces?{bad}"), 400, 10)
    item = acct.get("/workspaces").json()["items"][0]
    assert set(item) >= {"id", "project", "state", "created_at", "terminated_at", "last_usage",
                         "inactivity_timeout", "workspace_token", "workspace_token_required",
                         "workspace_init_failed", "streams", "permissions", "auto_resume",
                         "retention_time_stopped", "retention_time_total", "config", "workspace_url",
                         "max_inactive_storage_time", "max_storage_time"}
