"""The pads face over HTTP (pads-api.md): credentials, objects, roles, quota, pages, sort, end and
delete, questions, login. Runs in VMs are in test_pads_run.py."""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from .pads import PadApi, make_org, make_user

DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture(scope="module")
def org(installation):
    name = make_org(installation, "--email-domains", "acme.test")
    owner = make_user(installation, "Olive Owner", name, "owner")
    member = make_user(installation, "Mo Member", name, "member")
    outsider = make_user(installation, "Otto Outsider")
    return {"name": name, "owner": owner, "member": member, "outsider": outsider}


@pytest.fixture
def as_(installation, org):
    return lambda who: PadApi(installation, org[who])


def error(r, status: int, code: str) -> dict:
    assert r.status == status, (r.status, r.text)
    body = r.json()
    assert body["status"] == "ERROR" and body["code"] == code, body
    assert r.headers["content-type"].startswith("application/json")
    return body


# ---- the seed's examples, verbatim, with curl -----------------------------------------------------

def curl(installation, *args: str) -> dict:
    out = subprocess.run(["curl", "-s", *args], capture_output=True, text=True, timeout=60, check=True)
    return __import__("json").loads(out.stdout)


def test_seed_curl_examples(installation, org):
    key, base = org["member"].key, f"http://127.0.0.1:{installation.port}"
    auth = f'Authorization: Token token="{key}"'
    created = curl(installation, "--data", "title=Rob Zombie's Interview", "--data", 'language=ruby',
                   "--data", "contents=print 'Hello, World'", "--data", "notes=Your private notes",
                   "-H", auth, f"{base}/api/pads")
    assert created["status"] == "OK" and created["title"] == "Rob Zombie's Interview"
    assert created["language"] == "ruby" and created["contents"] == "print 'Hello, World'"
    assert created["notes"] == "Your private notes" and created["events"] == []
    assert created["participants"] == ["Mo Member"] and created["owner_email"] == org["member"].email
    assert created["private"] is False and created["execution_enabled"] is True and created["ended_at"] is None
    assert re.fullmatch(r"[23456789ABCDEFGHJKLMNPQRSTUVWXYZ]{8}", created["id"])
    assert DATE.match(created["created_at"]) and created["url"] == f"{installation.console_url}/pads/{created['id']}"
    assert created["drawing"] is None and created["state"] == "active" and len(created["pad_environment_ids"]) == 1
    pad_id = created["id"]
    shown = curl(installation, "-H", auth, f"{base}/api/pads/{pad_id}")
    assert shown["id"] == pad_id and shown["status"] == "OK"
    listed = curl(installation, "-H", auth, f"{base}/api/pads?sort=updated_at,desc")
    assert pad_id in [p["id"] for p in listed["pads"]] and listed["total"] >= 1
    updated = curl(installation, "-X", "PUT", "--data", 'title=Interview with Greg', "-H", auth,
                   f"{base}/api/pads/{pad_id}")
    assert updated["title"] == "Interview with Greg"
    env = curl(installation, "-H", auth, f"{base}/api/pad_environments/{shown['pad_environment_ids'][0]}")
    assert env["file_contents"] == [{"path": "coderpad/main.rb", "contents": "print 'Hello, World'"}]
    assert env["pad_public_id"] == pad_id and isinstance(env["pad_id"], int)
    question = curl(installation, "--data", "title=Are avocados fruity?", "--data", "description=Fruit puzzler round 2",
                    "--data", 'language=ruby', "--data", r"contents=def is_fruity?(thing);\n  end\n",
                    "--data", "solution=This is the solution",
                    "--data", "candidate_description=Implement the is_fruity method", "-H", auth,
                    f"{base}/api/questions")
    assert question["status"] == "OK" and question["used"] == 0 and question["shared"] is True
    assert question["solution"] == "This is the solution"
    qid = question["id"]
    changed = curl(installation, "-X", "PUT", "--data", "description=We've noticed candidates", "-H", auth,
                   f"{base}/api/questions/{qid}")
    assert changed["description"] == "We've noticed candidates"
    assert curl(installation, "-H", auth, f"{base}/api/questions?sort=updated_at,desc")["total"] >= 1
    assert curl(installation, "-H", auth, f"{base}/api/quota")["status"] == "OK"
    assert curl(installation, "-H", auth, f"{base}/api/organization")["organization_name"] == org["name"]
    assert curl(installation, "-H", auth, f"{base}/api/organization/pads?sort=updated_at,desc")["total"] >= 1
    assert curl(installation, "-H", auth, f"{base}/api/organization/questions?sort=updated_at,desc")["status"] == "OK"
    assert curl(installation, "-X", "DELETE", "-H", auth, f"{base}/api/questions/{qid}") == {"status": "OK"}


# ---- credentials ----------------------------------------------------------------------------------

def test_every_credential_form_and_bad_ones(installation, org, as_):
    user = org["member"]
    anon = PadApi(installation, None)
    for header in (f'Token token="{user.key}"', f"Token token={user.key}", f'token token="{user.key}", email="x"',
                   f"Token {user.key}", f"Bearer {user.key}"):
        r = anon.get("/api/quota", headers={"Authorization": header})
        assert r.status == 200, (header, r.text)
    assert anon.get(f"/api/quota?token={user.key}").status == 200
    assert anon.get("/api/quota", headers={"Cookie": f"session-access-key={user.key}"}).status == 200
    import base64

    basic = base64.b64encode(f"{user.uuid}:{user.secret}".encode()).decode()
    assert anon.get("/api/quota", headers={"Authorization": f"Basic {basic}"}).status == 200
    for header in ('Token token="0123456789abcdef0123456789abcdef"', "Token", "Digest abc",
                   "Basic " + base64.b64encode(f"{user.uuid}:wrong".encode()).decode()):
        r = anon.get("/api/pads", headers={"Authorization": header})
        body = error(r, 401, "invalid_api_key")
        assert body["message"] == "Invalid API key" and "Token" in r.headers["www-authenticate"]
    # the first credential present decides: a bad header does not fall through to a good query token
    error(anon.get(f"/api/pads?token={user.key}", headers={"Authorization": "Token nope"}), 401, "invalid_api_key")
    error(anon.get("/api/pads?token=nope"), 401, "invalid_api_key")
    error(anon.get("/api/pads"), 401, "invalid_api_key")
    # a revoked key stops working
    spare = make_user(installation, "Spare")
    installation.admin("apikey", "revoke", spare.key)
    error(PadApi(installation, spare).get("/api/pads"), 401, "invalid_api_key")
    # a cookie write from another site is refused; same site is fine
    cookie = {"Cookie": f"session-access-key={user.key}"}
    r = anon.post("/api/pads", {"title": "x"}, headers={**cookie, "Origin": "https://evil.example"})
    error(r, 403, "forbidden")
    r = anon.post("/api/pads", {"title": "x"}, headers={**cookie, "Origin": f"http://127.0.0.1:{installation.port}"})
    assert r.status == 200, r.text
    # keys sent in the query are masked in the access log
    log = (installation.state_dir / "api.log").read_text()
    assert "token=***" in log and user.key not in log


def test_keys_are_stored_hashed(installation, org):
    from sqlalchemy import create_engine, text

    engine = create_engine(installation.database_url)
    try:
        with engine.connect() as conn:
            rows = [r[0] for r in conn.execute(text("SELECT digest FROM tokens"))]
    finally:
        engine.dispose()
    assert rows and org["member"].key not in rows and all(org["member"].key not in r for r in rows)


def test_login_logout_and_throttle(installation, org):
    user = org["outsider"]
    anon = PadApi(installation, None)
    r = anon.post("/api/auth/login", json_body={"username": user.email, "password": user.secret})
    assert r.status == 200, r.text
    body = r.json()
    assert body["value"] == body["token"] and DATE.match(body["expires_at"])
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"session-access-key={body['token']}") and "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()
    assert anon.get("/api/quota", headers={"Authorization": f"Bearer {body['token']}"}).status == 200
    assert anon.get("/api/quota", headers={"Cookie": f"session-access-key={body['token']}"}).status == 200
    r = anon.post(f"/api/auth/logout?token={body['token']}")
    assert r.status == 204 and "max-age=0" in r.headers["set-cookie"].lower()
    error(anon.get(f"/api/quota?token={body['token']}"), 401, "invalid_api_key")
    assert anon.post("/api/auth/logout?token=unknown").status == 204
    error(anon.post("/api/auth/logout"), 400, "bad_request")
    # uuid works as username too (form body); an API key survives logout with it
    r = anon.post("/api/auth/login", {"username": user.uuid, "password": user.secret})
    assert r.status == 200
    assert anon.post(f"/api/auth/logout?token={user.key}").status == 204
    assert PadApi(installation, user).get("/api/quota").status == 200
    error(anon.post("/api/auth/login", json_body={"username": "", "password": ""}), 400, "bad_request")
    victim = make_user(installation, "Victim")
    for _ in range(5):
        r = anon.post("/api/auth/login", {"username": victim.email, "password": "wrong"})
        body = error(r, 401, "invalid_api_key")
        assert body["message"] == "Authentication failed. Please check username and password."
    r = anon.post("/api/auth/login", {"username": victim.email, "password": victim.secret})
    error(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) > 0


# ---- input rules and errors -------------------------------------------------------------------------

def test_bad_input_is_400_and_changes_nothing(as_):
    api = as_("member")
    pad = api.pad(title="keep", language="python3")
    for fields in ({"private": "maybe"}, {"execution_enabled": "2"}, {"language": "python"},
                   {"language": "klingon"}, {"title": "x" * 256}, {"question_id": "abc"}):
        body = error(api.put(f"/api/pads/{pad['id']}", fields), 400, "bad_request")
        assert body["message"].startswith("Bad Request: ")
    assert api.get(f"/api/pads/{pad['id']}").json()["title"] == "keep"
    error(api.post("/api/pads", {"contents": "x" * (1024 * 1024 + 1)}), 400, "bad_request")
    error(api.get("/api/pads?sort=title"), 400, "bad_request")
    error(api.get("/api/pads?page=0"), 400, "bad_request")
    error(api.get("/api/pads?page=x"), 400, "bad_request")
    # Rails-wrapped keys, JSON wrapped objects, PATCH, case-insensitive ids, trailing slash
    r = api.request("PATCH", f"/api/pads/{pad['id'].lower()}/", form={"pad[title]": "wrapped"})
    assert r.status == 200 and r.json()["title"] == "wrapped", r.text
    r = api.request("POST", "/api/questions", json_body={"question": {"title": "Q", "language": "postgresql"}})
    assert r.status == 200 and r.json()["language"] == "postgresql" and r.headers["location"].startswith("/api/questions/")
    r = api.request("DELETE", "/api/pads")
    error(r, 405, "method_not_allowed")
    assert "GET" in r.headers["allow"]
    error(api.get("/api/pads/NOTAPAD!"), 404, "not_found")
    error(api.get("/api/pad_environments/x"), 404, "not_found")
    defaults = api.pad()
    assert defaults["title"] == f"Untitled Pad {defaults['id']}" and defaults["language"] == "plaintext"
    hello = api.pad(language="python3")
    assert hello["contents"] == 'print("Hello, World!")\n'


# ---- roles and visibility ---------------------------------------------------------------------------

def test_roles_and_visibility(installation, org, as_):
    pad = as_("member").pad(title="member's")
    path = f"/api/pads/{pad['id']}"
    for who, read, write in (("member", 200, 200), ("owner", 200, 200), ("outsider", 404, 404)):
        assert as_(who).get(path).status == read, who
        assert as_(who).put(path, {"notes": who}).status == write, who
    colleague = make_user(installation, "Colleague", org["name"])
    api = PadApi(installation, colleague)
    assert api.get(path).status == 200
    error(api.put(path, {"title": "mine now"}), 403, "forbidden")
    assert pad["id"] in [p["id"] for p in api.get("/api/organization/pads").json()["pads"]]
    assert pad["id"] not in [p["id"] for p in api.get("/api/pads").json()["pads"]]
    error(as_("outsider").get("/api/organization"), 404, "not_found")
    error(as_("outsider").get("/api/organization/pads"), 404, "not_found")
    error(as_("member").get("/api/organization/stats"), 403, "forbidden")
    stats = as_("owner").get("/api/organization/stats").json()
    assert stats["pads_created"] >= 1 and DATE.match(stats["start_time"])
    assert any(u["email"] == org["member"].email and u["pads_created"] >= 1 for u in stats["users"])
    error(as_("owner").get("/api/organization/stats?start_time=2020-01-01T00:00:00Z"), 400, "bad_request")
    error(as_("owner").get("/api/organization/stats?start_time=2020-01-02T00:00:00Z&end_time=2020-01-01"), 400,
          "bad_request")
    r = as_("owner").get("/api/organization/stats?start_time=2015-12-07T00:31:52Z&end_time=2015-12-15T00:31:52-07:00")
    assert r.status == 200 and r.json()["end_time"] == "2015-12-15T07:31:52Z" and r.json()["pads_created"] == 0
    # hidden pads: members of an organization without pads_visible_to_members see only their own
    hidden = make_org(installation, "--hide-pads")
    boss, worker, other = (make_user(installation, n, hidden, r) for n, r in
                           (("Boss", "owner"), ("Worker", "member"), ("Other", "member")))
    secret_pad = PadApi(installation, worker).pad()
    error(PadApi(installation, other).get(f"/api/pads/{secret_pad['id']}"), 404, "not_found")
    error(PadApi(installation, other).get("/api/organization/pads"), 403, "forbidden")
    assert PadApi(installation, boss).get(f"/api/pads/{secret_pad['id']}").status == 200
    # user_email: only org owners; domain rule for new accounts
    error(as_("member").post("/api/pads", {"user_email": org["owner"].email}), 403, "forbidden")
    r = as_("owner").post("/api/pads", {"user_email": org["member"].email})
    assert r.status == 200 and r.json()["owner_email"] == org["member"].email
    r = as_("owner").post("/api/pads", {"user_email": "new.hire@acme.test"})
    assert r.status == 200 and r.json()["owner_email"] == "new.hire@acme.test"
    error(as_("owner").post("/api/pads", {"user_email": "someone@elsewhere.test"}), 400, "bad_request")
    error(as_("owner").post("/api/pads", {"user_email": "not an email"}), 400, "bad_request")
    organization = as_("member").get("/api/organization").json()
    assert "new.hire@acme.test" in [u["email"] for u in organization["users"]]
    assert organization["user_count"] == len(organization["users"])


def test_questions_visibility_and_question_pads(installation, org, as_):
    owner_q = as_("member").post("/api/questions", {"title": "Shared", "language": "python3",
                                                    "contents": "print(42)\n"}).json()
    private_q = as_("member").post("/api/questions", {"title": "Mine", "language": "c", "shared": "false"}).json()
    assert as_("owner").get(f"/api/questions/{private_q['id']}").status == 200
    colleague = PadApi(installation, make_user(installation, "Q Colleague", org["name"]))
    assert colleague.get(f"/api/questions/{owner_q['id']}").status == 200
    error(colleague.get(f"/api/questions/{private_q['id']}"), 404, "not_found")
    error(colleague.put(f"/api/questions/{owner_q['id']}", {"title": "no"}), 403, "forbidden")
    error(as_("outsider").get(f"/api/questions/{owner_q['id']}"), 404, "not_found")
    ids = [q["id"] for q in colleague.get("/api/organization/questions").json()["questions"]]
    assert owner_q["id"] in ids and private_q["id"] not in ids
    error(as_("member").post("/api/questions", {"title": "", "language": "c"}), 400, "bad_request")
    error(as_("member").post("/api/questions", {"title": "T"}), 400, "bad_request")
    # a pad from a question: its language and contents, `used` counts, conflicts are 400
    pad = colleague.pad(question_id=str(owner_q["id"]))
    assert pad["language"] == "python3" and pad["contents"] == "print(42)\n" and pad["question_ids"] == [owner_q["id"]]
    assert colleague.get(f"/api/questions/{owner_q['id']}").json()["used"] == 1
    error(colleague.post("/api/pads", {"question_id": owner_q["id"], "contents": "x"}), 400, "bad_request")
    error(colleague.post("/api/pads", {"question_id": owner_q["id"], "language": "ruby"}), 400, "bad_request")
    error(colleague.post("/api/pads", {"question_id": private_q["id"]}), 404, "not_found")
    env = colleague.get(f"/api/pad_environments/{pad['active_environment_id']}").json()
    assert env["question_id"] == owner_q["id"]
    assert as_("member").request("DELETE", f"/api/questions/{owner_q['id']}").json() == {"status": "OK"}
    after = colleague.get(f"/api/pads/{pad['id']}").json()
    assert after["question_ids"] == [] and after["contents"] == "print(42)\n"
    error(as_("member").get(f"/api/questions/{owner_q['id']}"), 404, "not_found")


# ---- lifecycle ----------------------------------------------------------------------------------------

def test_end_and_delete_rules(installation, org, as_):
    api = as_("member")
    pad = api.pad(language="python3", execution_enabled="true")
    path = f"/api/pads/{pad['id']}"
    r = api.put(path, {"execution_enabled": "false"})
    assert r.json()["execution_enabled"] is False and r.json()["events"][-1]["kind"] == "disabled"
    assert api.put(path, {"ended": "false"}).json()["ended_at"] is None
    assert api.put(path, {"ended": "yes"}).json()["ended_at"] is None
    ended = api.put(path, {"ended": "true"}).json()
    assert DATE.match(ended["ended_at"]) and ended["state"] == "ended"
    again = api.put(path, {"ended": "1"}).json()
    assert again["ended_at"] == ended["ended_at"] and [e["kind"] for e in again["events"]].count("ended") == 1
    event = again["events"][-1]
    assert event["message"] == f"{event['created_at']}: Mo Member ended the interview"
    assert event["user_email"] == org["member"].email
    for fields in ({"contents": "x"}, {"language": "ruby"}, {"execution_enabled": "true"}):
        error(api.put(path, fields), 409, "conflict")
    assert api.put(path, {"title": "after", "notes": "n", "private": "true"}).json()["private"] is True
    events = api.get(f"{path}/events").json()
    assert [e["kind"] for e in events["events"]] == ["disabled", "ended"] and events["total"] == 2
    assert [e["kind"] for e in api.get(f"{path}/events?sort=created_at,desc").json()["events"]] == ["ended", "disabled"]
    assert api.put(path, {"deleted": "nope"}).status == 200
    assert api.put(path, {"deleted": "true", "title": "ignored"}).json() == {"status": "OK"}
    error(api.get(path), 404, "not_found")
    error(api.get(f"{path}/events"), 404, "not_found")
    error(api.put(path, {"title": "x"}), 404, "not_found")
    assert pad["id"] not in [p["id"] for p in api.get("/api/pads").json()["pads"]]
    # a language change makes a new active environment; switching back reuses the old one
    other = api.pad(language="python3")
    ruby = api.put(f"/api/pads/{other['id']}", {"language": "ruby"}).json()
    assert ruby["language"] == "ruby" and ruby["contents"] == "5.times do\n  puts 'Hello, World!'\nend\n"
    assert len(ruby["pad_environment_ids"]) == 2
    back = api.put(f"/api/pads/{other['id']}", {"language": "python3"}).json()
    assert back["active_environment_id"] == other["active_environment_id"] and len(back["pad_environment_ids"]) == 2


# ---- quota ---------------------------------------------------------------------------------------------

def test_quota_at_the_limit_under_concurrency(installation):
    name = make_org(installation, "--monthly-pad-limit", "5")
    user = make_user(installation, "Quota User", name, "owner")
    api = PadApi(installation, user)
    for _ in range(3):
        api.pad()
    quota = api.get("/api/quota").json()
    assert quota["pads_used"] == 3 and quota["pads_remaining"] == 2 and quota["monthly_pad_limit"] == 5
    assert quota["unlimited"] is False and quota["overages_enabled"] is False
    assert DATE.match(quota["quota_reset_at"]) and quota["quota_reset_at"].endswith("-01T00:00:00Z")
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: PadApi(installation, user).post("/api/pads", {}), range(20)))
    statuses = sorted(r.status for r in results)
    assert statuses == [200, 200] + [429] * 18, statuses
    body = error(next(r for r in results if r.status == 429), 429, "over_quota")
    assert body["message"] == "Over quota"
    quota = api.get("/api/quota").json()
    assert quota["pads_used"] == 5 and quota["pads_remaining"] == 0
    # deleted pads still count
    first = api.get("/api/pads").json()["pads"][0]
    api.put(f"/api/pads/{first['id']}", {"deleted": "true"})
    assert api.get("/api/quota").json()["pads_used"] == 5
    error(api.post("/api/pads", {}), 429, "over_quota")
    unlimited = PadApi(installation, make_user(installation, "Free"))
    quota = unlimited.get("/api/quota").json()
    assert quota["unlimited"] is True and "pads_remaining" not in quota and "monthly_pad_limit" not in quota


# ---- pages and sort -------------------------------------------------------------------------------------

def walk(api: PadApi, first: str, key: str, direction: str) -> list[list[str]]:
    pages, url = [], first
    while url:
        r = api.get(url)
        assert r.status == 200, r.text
        body = r.json()
        pages.append([item["id"] for item in body[key]])
        link = body.get(direction)
        if link:
            parts = urlsplit(link)
            assert parts.scheme == "http" and parts.netloc == f"127.0.0.1:{api.api.port}" and "token" not in link
            url = f"{parts.path}?{parts.query}"
        else:
            url = None
    return pages


def test_pagination_over_120_pads_both_directions_and_sort(installation):
    api = PadApi(installation, make_user(installation, "Pager"))
    made = [api.pad(title=f"p{i}")["id"] for i in range(120)]
    pages = walk(api, "/api/pads?sort=created_at,asc", "pads", "next_page")
    assert [len(p) for p in pages] == [50, 50, 20]
    assert [i for p in pages for i in p] == made
    last = api.get("/api/pads?sort=created_at,asc&page=3").json()
    assert "next_page" not in last and last["prev_page"].endswith("/api/pads?sort=created_at,asc&page=2")
    back = walk(api, "/api/pads?sort=created_at,asc&page=3", "pads", "prev_page")
    assert sorted(i for p in back for i in p) == sorted(made) and len([i for p in back for i in p]) == 120
    default = api.get("/api/pads").json()
    assert default["total"] == 120 and default["pads"][0]["id"] == made[-1]
    assert default["next_page"].endswith("/api/pads?page=2") and "prev_page" not in default
    assert api.get("/api/pads?page=4").json()["pads"] == []
    api.put(f"/api/pads/{made[0]}", {"notes": "touched"})
    assert api.get("/api/pads?sort=updated_at,desc").json()["pads"][0]["id"] == made[0]
    assert api.get("/api/pads?sort=updated_at").json()["pads"][0]["id"] == made[0]
    assert api.get("/api/pads?sort=updated_at,asc").json()["pads"][0]["id"] == made[1]
    assert api.get("/api/pads?sort=created_at,desc").json()["pads"][0]["id"] == made[-1]


def test_public_url_links_and_session_expiry(fresh_installation):
    inst = fresh_installation(OPENHOSTING_PUBLIC_URL="https://pads.example.com/", OPENHOSTING_SESSION_TTL="1")
    user = make_user(inst, "Linked")
    api = PadApi(inst, user)
    pad = api.pad()
    assert pad["url"] == f"https://pads.example.com/pads/{pad['id']}"
    assert pad["events_url"] == f"https://pads.example.com/api/pads/{pad['id']}/events"
    page = api.get("/api/pads?sort=updated_at,asc&page=2").json()
    assert page["prev_page"] == "https://pads.example.com/api/pads?sort=updated_at,asc&page=1"
    r = api.post("/api/auth/login", {"username": user.email, "password": user.secret})
    assert r.status == 200 and "secure" not in r.headers["set-cookie"].lower()  # plain HTTP here
    token = r.json()["token"]
    import time

    time.sleep(2)  # past the one-second session lifetime: an expiry, not a speed
    error(api.get(f"/api/quota?token={token}", auth=False), 401, "invalid_api_key")
    assert api.get("/api/quota").status == 200  # API keys do not expire


def test_run_in_an_image_not_built_is_503_naming_the_build(installation, org):
    # this installation builds no image: every runnable language answers how to build its image
    api = PadApi(installation, org["outsider"])
    pad = api.pad(language="ruby")
    body = error(api.post(f"/api/pads/{pad['id']}/run", {}), 503, "unavailable")
    assert "openhosting-admin image build ruby" in body["message"], body
    languages = {lang["id"]: lang for lang in api.get("/api/languages").json()["languages"]}
    assert languages["ruby"]["image"] == "ruby" and languages["ruby"]["runnable"] is False
