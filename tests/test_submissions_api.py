"""Submissions API (/api/v1/submissions) without an agent: requests are checked and queued in status
0, and every error of the contract that needs no VM; on SQLite and PostgreSQL. The runs themselves
are in test_submissions_vm.py."""

from __future__ import annotations

import json
import time

import pytest

from .conftest import BACKENDS, new_installation
from .containers import EXAMPLE, new_account, targz

SOURCE = targz({"workspace/calc.py": b"print(1)\n"})
NAMES = ["source", "auxdata", "tests_report", "debug_log"] + [
    f"stage_{s}_{k}" for s in ("init", "build", "run", "test", "post") for k in ("output", "error")] + [
    "workspace_init_output", "workspace_init_error"]


@pytest.fixture(scope="module", params=BACKENDS)
def site(request, tmp_path_factory):
    inst, drop = new_installation(tmp_path_factory.mktemp("subapi"), request.param,
                                  OPENHOSTING_SUBMISSION_QUEUE_LIMIT="5")
    inst.state_dir.mkdir(parents=True, exist_ok=True)
    inst.admin("db", "upgrade")
    inst.admin("image", "build", "base")
    inst.start_api()  # no agent: submissions stay in status 0
    yield inst
    inst.stop()
    drop()


@pytest.fixture(scope="module")
def project(site):
    out = site.admin("project", "create", "--name", "calc", "--image", "base", "--from", str(EXAMPLE),
                     "--template").stdout.split()
    return out[out.index("project") + 1]


@pytest.fixture
def acct(site):
    return new_account(site)


def err(r, status, code):
    assert r.status == status, (r.status, r.text)
    body = r.json()
    assert body["error_code"] == code and body["message"] and "\n" not in body["message"], body
    return body


def submit(acct, project, **fields):
    r = acct.post_multipart("/submissions", {"project_id": project, **fields}, {"source": ("s.tar.gz", SOURCE)})
    assert r.status == 201, r.text
    assert r.json()["message"] == "Submission has been created" and isinstance(r.json()["id"], int)
    return r.json()["id"]


def test_create_queues_in_status_zero_with_every_field(site, acct, project):
    sid = submit(acct, project)
    item = acct.get(f"/submissions/{sid}").json()
    assert item["id"] == sid and item["executing"] is True and item["date"].endswith(" +0000")
    assert item["project"] == {"id": project, "name": "calc"} and item["scenario"] == "test"
    assert json.loads(item["config"]) == json.loads((EXAMPLE / "config.json").read_text())
    assert item["result"] == {"status": {"code": 0, "name": "waiting"}, "time": None, "score": None}
    assert list(item["streams"]) == NAMES and item["stages"] is None
    assert item["streams"]["source"]["size"] == len(SOURCE)
    assert item["streams"]["source"]["uri"].endswith(f"/api/v1/submissions/{sid}/source")
    assert item["uri"].endswith(f"/api/v1/submissions/{sid}")
    assert all(item["streams"][n] is None for n in NAMES[1:])
    r = acct.get(f"/submissions/{sid}/source")
    assert r.status == 200 and r.body == SOURCE and r.headers["content-type"] == "application/gzip"
    err(acct.get(f"/submissions/{sid}/debug_log"), 404, 1101)
    err(acct.get(f"/submissions/{sid}/output"), 400, 1105)   # the seed's own example name


def test_scenario_and_config_override(site, acct, project):
    sid = submit(acct, project, scenario="run")
    assert acct.get(f"/submissions/{sid}").json()["scenario"] == "run"
    config = {"version": "2.1", "scenarios": {"mine": {"default": True, "stages": {"run": {"command": "true"}}}}}
    sid = acct.post_json("/submissions", {"project_id": project, "project_config": json.dumps(config),
                                          "source": SOURCE.decode("latin-1")})
    # a JSON body cannot carry a binary tar.gz faithfully; multipart is the way for files
    assert sid.status in (201, 400)
    r = acct.post_multipart("/submissions", {"project_id": project, "project_config": json.dumps(config)},
                            {"source": ("s", SOURCE)})
    item = acct.get(f"/submissions/{r.json()['id']}").json()
    assert item["scenario"] == "mine" and json.loads(item["config"]) == config


def test_bad_requests(site, acct, project):
    def post(fields, source=SOURCE):
        return acct.post_multipart("/submissions", fields, {"source": ("s", source)} if source is not None else {})

    err(post({}), 400, 10)
    err(post({"project_id": project}, None), 400, 10)
    err(post({"project_id": project}, b"not a tar"), 400, 10)
    err(post({"project_id": project}, targz({"../escape": b"x"})), 400, 10)
    err(post({"project_id": project}, targz({"/etc/x": b"x"})), 400, 10)
    err(post({"project_id": project, "scenario": "nope"}), 400, 10)
    err(post({"project_id": project, "project_config": "{}"}), 400, 10)
    no_default = {"version": 2.1, "scenarios": {"a": {"stages": {}}}}
    err(post({"project_id": project, "project_config": json.dumps(no_default)}), 400, 10)
    err(post({"project_id": "0" * 32}), 404, 200201)
    err(post({"project_id": "not-an-id"}), 404, 200201)
    err(post({"project_id": project}, b"\0" * (16 * 1024**2 + 1)), 413, 202511)
    assert acct.get("/submissions").json()["items"] == []     # nothing was kept


def test_get_list_ids_paging_errors(site, acct, project):
    ids = [submit(acct, project) for _ in range(3)]
    for path in ("/submissions/abc", "/submissions/999999", "/submissions/-1", "/submissions/1.5",
                 "/submissions/99999999999999999999", "/submissions/999999/source"):
        err(acct.get(path), 404, 1001)
    err(acct.get("/submissions?ids=1,x"), 400, 205105)
    err(acct.get("/submissions?ids=0"), 400, 205105)
    err(acct.get("/submissions?ids=" + ",".join(str(i) for i in range(1, 22))), 400, 205106)
    err(acct.get("/submissions?limit=21"), 400, 10)
    err(acct.get("/submissions?limit=0"), 400, 10)
    err(acct.get("/submissions?page_token=%25%25"), 400, 10)
    err(acct.get("/submissions", token=None), 401, 1)
    err(acct.get(f"/submissions/{ids[0]}", token="f" * 32), 401, 1)
    r = acct.get("/submissions?ids=" + ",".join(str(i) for i in reversed(ids)) + ",999999")
    assert [i["id"] for i in r.json()["items"]] == ids
    assert r.json()["paging"] == {"previous_page_token": None, "next_page_token": None}
    assert acct.get("/submissions?ids=").json()["items"][0]["id"] == ids[-1]   # empty = absent
    page = acct.get("/submissions?limit=2").json()
    assert [i["id"] for i in page["items"]] == [ids[2], ids[1]]
    assert page["paging"] == {"previous_page_token": None, "next_page_token": "Mg=="}
    rest = acct.get("/submissions?limit=2&page_token=Mg==").json()
    assert [i["id"] for i in rest["items"]] == [ids[0]]
    assert rest["paging"] == {"previous_page_token": "MA==", "next_page_token": None}
    assert acct.get("/submissions?page_token=MTA=").json()["items"] == []


def test_wait_is_checked_and_ends_when_its_time_is_up(site, acct, project):
    sid = submit(acct, project)
    started = time.monotonic()
    item = acct.get(f"/submissions/{sid}?wait=0.6").json()
    assert item["executing"] and item["result"]["status"]["code"] == 0
    assert time.monotonic() - started >= 0.6        # no agent here: nothing ends it sooner
    assert acct.get(f"/submissions/{sid}?wait=0").json() == item
    for bad in ("-1", "60.5", "abc", "nan", "inf", "1e400"):
        err(acct.get(f"/submissions/{sid}?wait={bad}"), 400, 10)
    other = new_account(site)
    started = time.monotonic()
    err(other.get(f"/submissions/{sid}?wait=30"), 404, 1001)
    assert time.monotonic() - started < 30          # refused at once, never after a wait
    err(acct.get("/submissions/999999?wait=30"), 404, 1001)


def test_other_accounts_see_nothing(site, acct, project):
    sid = submit(acct, project)
    other = new_account(site)
    err(other.get(f"/submissions/{sid}"), 404, 1001)
    err(other.get(f"/submissions/{sid}/source"), 404, 1001)
    err(other.get(f"/submissions/{sid}/nope"), 404, 1001)    # the submission is checked first
    assert other.get(f"/submissions?ids={sid}").json()["items"] == []
    assert other.get("/submissions").json()["items"] == []


def test_queue_bound_per_account(site, project):
    acct = new_account(site)
    for _ in range(5):
        submit(acct, project)
    body = err(acct.post_multipart("/submissions", {"project_id": project}, {"source": ("s", SOURCE)}), 400, 1003)
    assert "at most 5" in body["message"]
    submit(new_account(site), project)          # another account is not held up
