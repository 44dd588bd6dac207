"""Tenant isolation, for every route the app serves (read from its router, not a hand-kept list).

Every route with an object id in its path is called, with every method it serves, by an intruder
with the owner's ids (and, where a path names two objects, with every mix of the owner's and the
intruder's own): the answer is the face's "not found", the same as for an id that never existed, it
shows none of the owner's ids, and the owner's view of everything (infos, lists, drive bytes) is
the same before and after. Routes without ids (lists, creates) must show none of the owner's ids.

A path parameter that `IDS` and `VALUES` do not know fails the test: teach it how to make an object
of the owner for it. The installation runs without its agent, so nothing the owner has changes on
its own (a sandbox stays queued) and any change is the intruder's doing.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import uuid

import pytest

from .apiwalk import build_app, served_routes
from .containers import make_project, targz
from .containers import multipart as named_multipart
from .conftest import BACKENDS, new_installation
from .test_sandboxes_api import multipart

# Path parameters that name an object: which object of a user's set they take, and an id of the
# same form that never existed.
IDS = {
    "drive": ("drive", lambda: str(uuid.uuid4())),
    "source": ("source", lambda: str(uuid.uuid4())),
    "server": ("server", lambda: str(uuid.uuid4())),
    "name": ("resources", lambda: "10.255.255.254"),  # with its {kind}, below
    "sandbox_id": ("sandbox", lambda: secrets.token_hex(8)),
    "pad_id": ("pad", lambda: "".join(secrets.choice("23456789ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(8))),
    "env_id": ("pad_environment", lambda: str(10**9 + secrets.randbelow(10**6))),
    "question_id": ("question", lambda: str(10**9 + secrets.randbelow(10**6))),
    "project_id": ("project", lambda: secrets.token_hex(16)),
    "workspace_id": ("workspace", lambda: secrets.token_hex(16)),
    "submission_id": ("submission", lambda: str(10**9 + secrets.randbelow(10**6))),
    "key_id": ("ssh_key", lambda: str(10**9 + secrets.randbelow(10**6))),
}
# Path parameters that are values, not objects.
VALUES = {"offset": "0", "size": "4096", "mode": "gzip", "kind": "vlan",  # with {name}: the resource's own kind
          "stream": "workspace_init_output", "path": "Y2FsYy5weQ"}  # a stream of both; Base64 of calc.py
V1 = "/api/v1/"  # the workspaces face: bearer tokens, its own "not found" (404 with an error_code)
PATTERN = b"owner's bytes\n" * 300


@pytest.fixture(scope="module", params=BACKENDS)
def site(request, tmp_path_factory):
    inst, drop = new_installation(tmp_path_factory.mktemp("tenancy"), request.param)
    inst.state_dir.mkdir(parents=True, exist_ok=True)
    inst.admin("db", "upgrade")
    inst.admin("image", "build", "base")
    inst.start_api()  # no agent: see the module's docstring
    yield inst
    inst.stop()
    inst.purge_libvirt()
    drop()


def tokens(site, user) -> str:
    out = site.admin("token", "create", "--user", user.uuid).stdout.split()
    return out[out.index("token") + 1]


class Caller:
    """One user's HTTP client: Basic for every face, its bearer token on the workspaces face."""

    def __init__(self, site, user):
        self.api, self.token = site.client(user), tokens(site, user)

    def request(self, method: str, path: str, body=None, headers=None):
        if path.startswith(V1):
            hdrs = {**(headers or {}), "Authorization": f"Bearer {self.token}"}
            return self.api.request(method, path, body, headers=hdrs, auth=False)
        return self.api.request(method, path, body, headers=headers)

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def __getattr__(self, name):
        return getattr(self.api, name)


def make_objects(site, api, tmp) -> dict:
    """One object of every kind a path can name, owned by `api`'s user."""
    drive = api.create_drive(1 << 20, name="mine")
    assert api.post(f"/drives/{drive}/write", PATTERN).status == 204
    server = api.post_kv("/servers/create/stopped", {"name": "mine", "ide:0:0": drive})
    assert server.status == 200, server.text
    ip, vlan = api.post("/resources/ip/create"), api.post_kv("/resources/vlan/create", {"name": "mine"})
    assert ip.status == 200 and vlan.status == 200, (ip.text, vlan.text)
    body, ctype = multipart({"image": "base", "cmd": json.dumps(["echo mine"])}, {"a.txt": b"mine"})
    sandbox = api.post("/api/sandboxes", body, headers={"Content-Type": ctype})
    assert sandbox.status == 201, sandbox.text
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    pad = api.post("/api/pads", "title=mine&language=python3", headers=form)
    question = api.post("/api/questions", "title=mine&language=python3", headers=form)
    assert pad.status == 200 and question.status == 200, (pad.text, question.text)
    project = make_project(site, tmp, user=api.user.uuid, files={"calc.py": b"print('mine')\n"})
    workspace = api.request("POST", V1 + "workspaces", f"project_id={project}", headers=form)
    assert workspace.status == 201, workspace.text
    body, ctype = named_multipart({"project_id": project}, {"source": ("s.tar.gz", targz({"workspace/a.py": b"1"}))})
    submission = api.request("POST", V1 + "submissions", body, headers={"Content-Type": ctype})
    assert submission.status == 201, submission.text
    key = api.request("POST", V1 + "ssh-keys", json.dumps({"key": ed25519_line()}),
                      headers={"Content-Type": "application/json"})
    assert key.status == 201, key.text
    return {"project": project, "workspace": workspace.json()["workspace"]["id"],
            "ssh_key": str(key.json()["key"]["id"]),
            "submission": str(submission.json()["id"]),"drive": drive, "source": api.create_drive(1 << 20, name="source"), "server": server.kv()["server"],
            "resources": [("ip", ip.kv()["resource"]), ("vlan", vlan.kv()["resource"])], "sandbox": sandbox.json(),
            "pad": pad.json()["id"], "pad_environment": str(pad.json()["active_environment_id"]),
            "question": str(question.json()["id"])}


def ed25519_line() -> str:
    """A well-formed ssh-ed25519 public-key line with a random key (the API checks form, not curve)."""
    import base64
    import struct

    blob = b"".join(struct.pack(">I", len(p)) + p for p in (b"ssh-ed25519", secrets.token_bytes(32)))
    return "ssh-ed25519 " + base64.b64encode(blob).decode() + " tenancy"


def ids_of(objs: dict) -> list[str]:
    """Ids that cannot occur by chance in an answer (pad environments and questions are small integers:
    their leaks show in the 404 comparison instead)."""
    return [objs["drive"], objs["source"], objs["server"], objs["sandbox"], objs["pad"], objs["project"],
            objs["workspace"]] + \
        [r for _, r in objs["resources"]]


def view(api, objs: dict) -> dict:
    """Everything the owner can see of their objects (counters of reads excluded: they are the owner's)."""
    def info(path):
        r = api.get(path, headers={"Accept": "application/json"})
        assert r.status == 200, (path, r.text)
        return r.json()

    out = {}
    for key in ("drive", "source"):
        drive = info(f"/drives/{objs[key]}/info")
        out[key] = {k: v for k, v in drive.items() if not k.startswith("read:")}
    out["bytes"] = api.get(f"/drives/{objs['drive']}/read/0/{len(PATTERN)}").body
    out["server"] = info(f"/servers/{objs['server']}/info")
    out["resources"] = [info(f"/resources/{kind}/{name}/info") for kind, name in objs["resources"]]
    out["sandbox"] = info(f"/api/sandboxes/{objs['sandbox']}")
    out["lists"] = [api.get(p).text for p in ("/drives/list", "/servers/list", "/resources/list")]
    out["pad"] = info(f"/api/pads/{objs['pad']}")
    out["pad_environment"] = info(f"/api/pad_environments/{objs['pad_environment']}")
    out["question"] = info(f"/api/questions/{objs['question']}")
    out["pad_lists"] = [api.get(p).text for p in ("/api/pads", "/api/questions")]
    out["project"] = info(f"{V1}projects/{objs['project']}")
    out["workspace"] = info(f"{V1}workspaces/{objs['workspace']}")
    out["submission"] = info(f"{V1}submissions/{objs['submission']}")
    out["v1_lists"] = [api.get(V1 + p).text for p in ("projects", "workspaces", "submissions", "ssh-keys")]
    # a workspace_url carries a fresh one-time terminal ticket each time: compare without it
    out["workspace"]["workspace_url"] = out["workspace"]["workspace_url"].partition("#")[0]
    out["v1_lists"] = [re.sub(r'#[A-Za-z0-9_-]{20,}"', '"', text) for text in out["v1_lists"]]
    return out


def bindings(template: str, owner: dict, intruder: dict) -> list[dict[str, str]]:
    """Every way to fill the template's ids from the owner's and the intruder's objects, with at least
    one of the owner's; an unknown parameter fails here."""
    names = re.findall(r"{(\w+)}", template)
    unknown = [n for n in names if n not in IDS and n not in VALUES]
    assert not unknown, (f"route {template}: the tenancy walk cannot make an object for {unknown}; "
                         "add it to IDS (an object of the owner) or VALUES (tests/test_tenancy.py)")
    choices = []
    for name in (n for n in names if n in IDS):
        key = IDS[name][0]
        if name == "name":
            choices.append([{"kind": k, "name": r, "_owner": who}
                            for who, objs in (("owner", owner), ("intruder", intruder)) for k, r in objs[key]])
        else:
            choices.append([{name: objs[key], "_owner": who} for who, objs in (("owner", owner), ("intruder", intruder))])
    out = []
    for combo in itertools.product(*choices):
        if combo and all(c["_owner"] == "intruder" for c in combo):
            continue
        values = {k: v for k, v in VALUES.items() if v is not None}
        for c in combo:
            values.update({k: v for k, v in c.items() if k != "_owner"})
        out.append(values)
    return out


def never_existed(template: str, values: dict[str, str]) -> dict[str, str]:
    fresh = dict(values)
    for name in re.findall(r"{(\w+)}", template):
        if name in IDS:
            fresh[name] = IDS[name][1]()
    return fresh


def not_found(path: str, r) -> bool:
    """The face's own "not found": the cloud vocabulary's `missing`, or the workspaces face's codes."""
    if path.startswith(V1):
        return r.status == 404 and r.json().get("error_code") in (1001, 200201)
    return r.status == 404 and r.error == "missing"


def request(api, method: str, path: str):
    if method in ("POST", "PUT", "PATCH"):
        return api.request(method, path, b"name intruder\n", headers={"Content-Type": "application/octet-stream"})
    return api.request(method, path)


def test_another_users_ids_answer_not_found_on_every_route(site, tmp_path):
    owner, intruder = Caller(site, site.create_user("owner")), Caller(site, site.create_user("intruder"))
    mine, theirs = make_objects(site, owner, tmp_path), make_objects(site, intruder, tmp_path)
    secret_ids = ids_of(mine)
    routes = served_routes(build_app(site.env))
    before = view(owner, mine)
    walked = 0
    for template, methods in sorted(routes.items()):
        with_ids = any(n in IDS for n in re.findall(r"{(\w+)}", template))
        for method in sorted(methods):
            for values in bindings(template, mine, theirs):
                path = template.format(**values)
                if not with_ids and method != "GET":
                    r = intruder.request(method, path)  # no body: a create must not even start
                else:
                    r = request(intruder, method, path)
                walked += 1
                leaked = [i for i in secret_ids if i in r.text]
                assert not leaked, f"{method} {path} shows the owner's {leaked}: {r.status} {r.text[:200]}"
                if not with_ids:
                    continue
                assert not_found(path, r), f"{method} {path}: {r.status} {r.text[:200]}"
                fresh = never_existed(template, values)
                unknown = request(intruder, method, template.format(**fresh))
                assert (unknown.status, unknown.error) == (r.status, r.error), f"{method} {path}"
                masked = r.text
                for name, value in values.items():
                    if len(value) >= 8:  # a small integer id would also match digits of the body
                        masked = masked.replace(value, fresh[name])
                assert masked == unknown.text, f"{method} {path}: {r.text!r} vs {unknown.text!r}"
            assert view(owner, mine) == before, f"{method} {template} changed the owner's objects"
    print(f"\ntenancy: {len(routes)} routes, {walked} intruder requests")
    assert walked >= sum(len(m) for m in routes.values())
