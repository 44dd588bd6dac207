"""Workspaces with real VMs through HTTP: the life cycle, files, init streams, stop and resume with a
counting background process, capacity on resume, init failure, timers, and agent kill -9."""

from __future__ import annotations

import base64
import re
import signal
import subprocess
import threading
import time

import pytest

from hypervisor.xmlbuilder import OPENHOSTING_NS

from .conftest import new_installation
from .containers import make_project, new_account, targz

pytestmark = pytest.mark.vm

# The count is written beside and renamed over, so a read never meets the file truncated and not yet
# written (a stop can save the VM between the two, and the read after resume came first).
COUNTER = ("setsid sh -c 'cd /home/user/workspace; i=0; while :; do echo $i > .count; mv .count count; "
           "i=$((i+1)); sleep 1; done' "
           ">/dev/null 2>&1 </dev/null &\n")
INIT = ("echo init-out\necho init-err >&2\nln -s /etc/shadow leak\nmkdir sub\n"
        "head -c 17000000 /dev/zero > big\n" + COUNTER)


def b64(path: str) -> str:
    return base64.b64encode(path.encode()).decode()


def err(r, status, code):
    assert r.status == status, (r.status, r.text)
    assert r.json()["error_code"] == code, r.json()
    return r.json()


def wait_state(api, ws, codes, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(f"/workspaces/{ws}").json()
        if body["state"]["code"] in codes:
            return body
        time.sleep(0.2)
    raise AssertionError(f"workspace {ws} not in {codes}: {body['state']}")


def vm_owners(inst) -> dict[str, str]:
    """Domain name -> workspace id, for this installation's workspace VMs (not the spares): the
    owner in each domain's metadata, since a workspace may run in a spare VM it took."""
    installation = (inst.state_dir / "installation-id").read_text().strip()
    out = subprocess.run(["virsh", "list", "--all", "--name"], capture_output=True, text=True).stdout.split()
    owners = {}
    for name in out:
        if not name.startswith(f"oh-{installation}-"):
            continue
        meta = subprocess.run(["virsh", "metadata", name, OPENHOSTING_NS], capture_output=True, text=True).stdout
        kind, server = re.search(r"<kind>(.*?)</kind>", meta), re.search(r"<server>(.*?)</server>", meta)
        if kind and server and kind.group(1) == "workspace" and not server.group(1).startswith("spare-"):
            owners[name] = server.group(1)
    return owners


def vm_names(inst) -> list[str]:
    return sorted(vm_owners(inst))


def counter(api, ws) -> int:
    r = api.get(f"/workspaces/{ws}/files/{b64('count')}")
    assert r.status == 200, r.text
    return int(r.body.decode())


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    # A contract "minute" of 3 s: inactivity_timeout 10 is 30 s idle (file calls are activity).
    inst, drop = new_installation(tmp_path_factory.mktemp("wsvm"), "sqlite", OPENHOSTING_WORKSPACE_SLOTS="2",
                                  OPENHOSTING_WORKSPACE_TIMER_INTERVAL="1", OPENHOSTING_WORKSPACE_MINUTE="3",
                                  OPENHOSTING_SANDBOX_POOL_SIZE="1")
    inst.start(("image", "build", "base"))
    yield inst
    inst.stop()
    inst.purge_libvirt()
    drop()


def test_life_cycle_files_stop_resume(site, tmp_path):
    api = new_account(site)
    project = make_project(site, tmp_path, user=api.user, init=INIT, files={"hello.txt": b"hello\n",
                                                                           "tests/t.py": b"pass\n"})
    r = api.post_multipart("/workspaces", {"project_id": project, "retention_time_stopped": "60",
                                           "inactivity_timeout": "60", "auto_resume": "false"},
                           {"files": ("f.tar.gz", targz({"workspace/extra.txt": b"extra"}))})
    assert r.status == 201, r.text
    ws = r.json()["workspace"]["id"]
    # The installation's first workspace waits for its image's template to boot (minutes under TCG).
    body = wait_state(api, ws, (2, 5), timeout=1200)
    assert body["state"] == {"code": 2, "name": "running", "error_reason": None}, body
    assert body["workspace_init_failed"] is False
    assert body["permissions"] == {"enter": True, "remove": True, "stop": True}
    out = body["streams"]["workspace_init_output"]
    assert out["size"] == len(b"init-out\n") and out["uri"].endswith(f"/workspaces/{ws}/workspace_init_output")
    assert api.get(f"/workspaces/{ws}/workspace_init_output").body == b"init-out\n"
    assert api.get(f"/workspaces/{ws}/workspace_init_error").body == b"init-err\n"

    listing = api.get("/workspaces/%s/list_files" % ws).json()
    assert listing["listed_dir"] == "/home/user/workspace"
    names = {f["name"] for f in listing["files"]}
    assert {"hello.txt", "extra.txt", "big", "leak"} <= names, listing
    assert {d["name"] for d in listing["dirs"]} >= {"sub", "tests"}
    hello = next(f for f in listing["files"] if f["name"] == "hello.txt")
    assert hello["size"] == 6 and isinstance(hello["perm"], int) and isinstance(hello["time"], int)
    assert api.get(f"/workspaces/{ws}/list_files/{b64('tests')}").json()["files"][0]["name"] == "t.py"
    r = api.get(f"/workspaces/{ws}/files/{b64('hello.txt')}")
    assert r.status == 200 and r.body == b"hello\n" and r.headers["content-type"] == "application/octet-stream"
    assert "attachment" in r.headers["content-disposition"]
    assert api.get(f"/workspace/{ws}".replace("/workspace/", "/workspaces/") + "/files/" +
                   base64.urlsafe_b64encode(b"extra.txt").decode().rstrip("=")).body == b"extra"
    assert api.get("/workspaces").json()["items"][0]["last_usage"] is not None

    # file errors that need a running guest
    err(api.get(f"/workspaces/{ws}/files/{b64('nope')}"), 400, 1101)
    err(api.get(f"/workspaces/{ws}/files/{b64('sub')}"), 400, 1101)
    err(api.get(f"/workspaces/{ws}/files/{b64('../../../etc/passwd')}"), 400, 1102)
    err(api.get(f"/workspaces/{ws}/files/{b64('leak')}"), 400, 1102)
    err(api.get(f"/workspaces/{ws}/files/{b64('big')}"), 413, 1111)
    err(api.get(f"/workspaces/{ws}/files/***"), 400, 1105)
    err(api.get(f"/workspaces/{ws}/list_files/{b64('hello.txt')}"), 400, 1101)
    err(api.get(f"/workspaces/{ws}/list_files/{b64('nope')}"), 400, 1101)
    up = lambda path, data=b"x": api.post_multipart(f"/workspaces/{ws}/files", {"filepath": path},
                                                    {"filedata": ("f", data)})
    r = up("new.txt", b"new content")
    assert r.status == 200 and r.json() == {"path": "/home/user/workspace/new.txt"}
    r = up("/home/user/workspace/sub/abs.txt")
    assert r.status == 200 and r.json()["path"] == "/home/user/workspace/sub/abs.txt"
    assert up("new.txt", b"replaced").status == 200
    assert api.get(f"/workspaces/{ws}/files/{b64('new.txt')}").body == b"replaced"
    err(up("missing/dir/a.txt"), 400, 202601)
    err(up("sub"), 400, 202612)
    err(up("../outside.txt"), 400, 202602)
    err(up("/etc/passwd"), 400, 202602)
    err(up("tests/t.py"), 400, 202602)  # files.read_only of the example config
    err(up("leak/x"), 400, 202602)
    err(api.post_multipart(f"/workspaces/{ws}/files", {"filepath": "a"}), 400, 202504)
    err(api.post_multipart(f"/workspaces/{ws}/files", {}, {"filedata": ("f", b"1")}), 400, 202604)
    err(up("huge", b"\0" * (16 * 1024**2 + 1)), 413, 202511)

    # stop: the counting process and the new file survive, the count goes on from where it was
    first = counter(api, ws)
    time.sleep(2)
    before = counter(api, ws)
    assert before > first
    r = api.put(f"/workspaces/{ws}/stop")
    assert r.status == 200 and r.json() == {"message": "Workspace has been stopped"}, r.text
    body = api.get(f"/workspaces/{ws}").json()
    assert body["state"]["code"] == 3 and body["permissions"] == {"enter": False, "remove": True, "stop": False}
    assert ws not in vm_owners(site).values(), "a stopped workspace has no QEMU process"
    assert err(up("x"), 404, 1008)["message"] == "workspace is stopped"
    err(api.get(f"/workspaces/{ws}/files/{b64('count')}"), 404, 1108)
    err(api.get(f"/workspaces/{ws}/list_files"), 404, 1008)
    err(api.put(f"/workspaces/{ws}/stop"), 400, 1013)

    # the slots are free while stopped: a workspace of a 2-slot project takes them, and resume finds none
    big = make_project(site, tmp_path, user=api.user, slots=2)
    other = api.post_form("/workspaces", {"project_id": big}).json()["workspace"]["id"]
    err(api.put(f"/workspaces/{ws}/resume"), 409, 200611)
    wait_state(api, other, (2, 5))
    assert api.put(f"/workspaces/{other}/remove").status == 200

    r = api.put(f"/workspaces/{ws}/resume")
    assert r.status == 200 and r.json() == {"message": "Workspace is resuming"}, r.text
    err(api.put(f"/workspaces/{ws}/resume"), 400, 1013)
    wait_state(api, ws, (2, 5))
    assert api.get(f"/workspaces/{ws}").json()["state"]["code"] == 2
    after = counter(api, ws)
    assert after >= before  # continued, not restarted
    time.sleep(2)
    assert counter(api, ws) > after
    assert api.get(f"/workspaces/{ws}/files/{b64('new.txt')}").body == b"replaced"

    r = api.put(f"/workspaces/{ws}/remove")
    assert r.status == 200 and r.json() == {"message": "Workspace has been removed"}
    body = api.get(f"/workspaces/{ws}").json()
    assert body["state"]["code"] == 4 and body["terminated_at"] is not None
    assert body["permissions"] == {"enter": False, "remove": False, "stop": False}
    err(api.put(f"/workspaces/{ws}/remove"), 400, 1013)
    deadline = time.monotonic() + 60
    while vm_names(site) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert vm_names(site) == []


def test_auto_resume_on_access(site, tmp_path):
    """A files call on a stopped workspace with auto_resume resumes it and is then served; one
    without auto_resume answers 404/1008 and stays stopped; no free slots → 409/200611."""
    api = new_account(site)
    project = make_project(site, tmp_path, user=api.user, init=COUNTER)
    ws = api.post_form("/workspaces", {"project_id": project, "retention_time_stopped": "60",
                                       "inactivity_timeout": "60"}).json()["workspace"]["id"]
    # run alone, this is the installation's first workspace: it waits for the template's boot
    assert wait_state(api, ws, (2, 5), timeout=1200)["state"]["code"] == 2
    time.sleep(2)
    before = counter(api, ws)
    assert api.put(f"/workspaces/{ws}/stop").status == 200
    body = api.get(f"/workspaces/{ws}").json()
    assert body["state"]["code"] == 3 and body["auto_resume"] and body["permissions"]["enter"] is True
    assert _domains(site, ws) == []

    # no free slots: the access cannot resume it (the 2-slot project takes both of the account's)
    big = make_project(site, tmp_path, user=api.user, slots=2)
    other = api.post_form("/workspaces", {"project_id": big}).json()["workspace"]["id"]
    err(api.get(f"/workspaces/{ws}/list_files"), 409, 200611)
    assert api.get(f"/workspaces/{ws}").json()["state"]["code"] == 3
    wait_state(api, other, (2, 5))
    assert api.put(f"/workspaces/{other}/remove").status == 200

    after = counter(api, ws)       # this call resumes it (the test installation waits up to 30 s)
    assert after >= before, (before, after)
    body = api.get(f"/workspaces/{ws}").json()
    assert body["state"]["code"] == 2 and body["last_usage"] is not None
    assert len(_domains(site, ws)) == 1
    time.sleep(2)
    assert counter(api, ws) > after   # the counting process came back and counts on

    manual = api.post_form("/workspaces", {"project_id": project, "retention_time_stopped": "60",
                                           "auto_resume": "0"}).json()["workspace"]["id"]
    assert wait_state(api, manual, (2, 5))["state"]["code"] == 2
    assert api.put(f"/workspaces/{manual}/stop").status == 200
    assert err(api.get(f"/workspaces/{manual}/list_files"), 404, 1008)["message"] == "workspace is stopped"
    assert api.get(f"/workspaces/{manual}").json()["state"]["code"] == 3
    for w in (ws, manual):
        assert api.put(f"/workspaces/{w}/remove").status == 200


def test_init_failure_is_flagged(site, tmp_path):
    api = new_account(site)
    project = make_project(site, tmp_path, user=api.user)
    r = api.post_json("/workspaces", {"project_id": project, "workspace_init": "echo broken >&2; exit 3"})
    assert r.status == 201, r.text
    ws = r.json()["workspace"]["id"]
    body = wait_state(api, ws, (2, 5))
    assert body["state"]["code"] == 2 and body["workspace_init_failed"] is True
    assert api.get(f"/workspaces/{ws}/workspace_init_error").body == b"broken\n"
    assert body["streams"]["workspace_init_output"] is None
    err(api.get(f"/workspaces/{ws}/workspace_init_output"), 404, 1101)
    err(api.put(f"/workspaces/{ws}/stop"), 400, 1013)  # retention_time_stopped 0: cannot be stopped
    assert api.put(f"/workspaces/{ws}/remove").status == 200


def test_inactivity_stops_then_retention_removes(site, tmp_path):
    api = new_account(site)
    project = make_project(site, tmp_path, user=api.user)
    keep = api.post_form("/workspaces", {"project_id": project, "inactivity_timeout": "10",
                                         "retention_time_stopped": "10"}).json()["workspace"]["id"]
    drop = api.post_form("/workspaces", {"project_id": project, "inactivity_timeout": "10"}).json()["workspace"]["id"]
    wait_state(api, keep, (2, 5))
    wait_state(api, drop, (2, 5))
    assert wait_state(api, keep, (3, 4, 5), timeout=120)["state"]["code"] == 3   # idle: stopped (it may resume)
    assert wait_state(api, drop, (3, 4, 5), timeout=120)["state"]["code"] == 4   # idle, no stopped retention
    assert wait_state(api, keep, (4, 5), timeout=120)["state"]["code"] == 4      # stopped past its retention
    deadline = time.monotonic() + 60
    while set(vm_owners(site).values()) & {keep, drop} and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not set(vm_owners(site).values()) & {keep, drop}


def _kill_agent(site) -> None:
    site.stop_agent(signal.SIGKILL)
    site.start_agent()


def _domains(site, ws) -> list[str]:
    return [n for n, owner in vm_owners(site).items() if owner == ws]


def test_agent_kill_during_create_stop_resume(site, tmp_path):
    api = new_account(site)
    project = make_project(site, tmp_path, user=api.user, init=COUNTER)
    ws = api.post_form("/workspaces", {"project_id": project, "retention_time_stopped": "60",
                                       "inactivity_timeout": "60"}).json()["workspace"]["id"]
    deadline = time.monotonic() + 60
    while not _domains(site, ws) and time.monotonic() < deadline:  # the create is under way
        time.sleep(0.1)
    _kill_agent(site)
    body = wait_state(api, ws, (2, 5), timeout=1200)   # run alone: the template boots first
    assert body["state"]["code"] == 2, body
    assert len(_domains(site, ws)) == 1

    answers = []
    stopper = threading.Thread(target=lambda: answers.append(api.put(f"/workspaces/{ws}/stop")))
    stopper.start()
    time.sleep(0.5)
    _kill_agent(site)
    stopper.join(400)
    assert answers and answers[0].status == 200, answers and answers[0].text
    assert api.get(f"/workspaces/{ws}").json()["state"]["code"] == 3
    assert _domains(site, ws) == []

    assert api.put(f"/workspaces/{ws}/resume").status == 200
    _kill_agent(site)
    assert wait_state(api, ws, (2, 5))["state"]["code"] == 2
    assert len(_domains(site, ws)) == 1
    first = counter(api, ws)
    deadline = time.monotonic() + 30      # it counts once a second; a loaded host may be slower
    while counter(api, ws) == first and time.monotonic() < deadline:
        time.sleep(0.5)
    # the counting process came back with the VM
    assert counter(api, ws) > first, (site.state_dir / "agent.log").read_text()[-4000:]

    assert api.put(f"/workspaces/{ws}/remove").status == 200
    deadline = time.monotonic() + 60
    while _domains(site, ws) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _domains(site, ws) == []
    assert not (site.state_dir / "workspace-vms" / "ws" / ws).exists()
