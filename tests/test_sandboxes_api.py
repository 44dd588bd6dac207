"""The sandboxes API (OpenDevelop) with real VMs from the warm pool, through HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid

import pytest

pytestmark = pytest.mark.vm


def multipart(fields: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = []
    for name, value in fields.items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for i, (filename, data) in enumerate(files.items()):
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{i}"; filename="{filename}"\r\n'
                   f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def post(api, cmd, files=None, image="base", timeout=None, wait=False, raw_cmd=False):
    fields = {"image": image, "cmd": cmd if raw_cmd or isinstance(cmd, str) else json.dumps(cmd)}
    if timeout is not None:
        fields["timeout"] = str(timeout)
    body, ctype = multipart(fields, files or {})
    return api.post("/api/sandboxes" + ("?wait=true" if wait else ""), body, headers={"Content-Type": ctype})


def run(api, cmd, **kw) -> dict:
    r = post(api, cmd, wait=True, **kw)
    assert r.status == 200, r.text
    box = r.json()
    assert box["status"] == "terminated", box
    return box


def wait_terminated(api, sid, timeout=120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        box = api.get(f"/api/sandboxes/{sid}").json()
        if box["status"] == "terminated":
            return box
        time.sleep(0.1)
    raise AssertionError(f"sandbox {sid} still running")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from .conftest import new_installation

    inst, drop = new_installation(tmp_path_factory.mktemp("sb"), "sqlite", OPENHOSTING_SANDBOX_POOL_SIZE="2",
                                  OPENHOSTING_SANDBOX_OUTPUT_CAP="64k", OPENHOSTING_SANDBOX_MAX_FILES="4",
                                  OPENHOSTING_SANDBOX_MAX_FILE="1M", OPENHOSTING_SANDBOX_USER_LIMIT="6")
    inst.start(("image", "build", "base"))
    yield inst
    inst.stop()
    inst.purge_libvirt()
    drop()


@pytest.fixture
def api(site):
    return site.client(site.create_user())


def sandbox_domains(site) -> list[str]:
    installation = (site.state_dir / "installation-id").read_text().strip()
    out = subprocess.run(["virsh", "list", "--name"], capture_output=True, text=True).stdout.split()
    return [name for name in out if name.startswith(f"oh-{installation}-")]


def test_images(api):
    r = api.get("/api/images")
    assert r.status == 200 and r.json() == ["base"]


def test_the_seed_flow(api):
    code = b'print("hello opendevelop!")\n'
    r = post(api, ["python hello.py"], files={"hello.py": code})
    assert r.status == 201, r.text
    sid = r.json()
    assert isinstance(sid, str) and r.headers["location"] == f"/api/sandboxes/{sid}"
    box = wait_terminated(api, sid)
    assert box["logs"] == "hello opendevelop!\n"
    assert box["return_code"] == 0 and box["timed_out"] is False
    assert box["cmd"] == '["python hello.py"]' and box["image"] == "base"
    assert box["created_at"] and box["finished_at"]
    listed = api.get("/api/sandboxes").json()["sandboxes"]
    assert sid in [b["id"] for b in listed]


def test_exit_codes_and_several_commands(api):
    assert run(api, ["exit 3"])["return_code"] == 3
    box = run(api, ["echo one", "echo two >&2", "false", "echo never"])
    assert box["logs"] == "one\ntwo\n" and box["return_code"] == 1
    box = run(api, "python3 -c 'print(1+1)'", raw_cmd=True)
    assert box["logs"] == "2\n" and box["return_code"] == 0


def test_files_land_in_the_working_directory(api):
    box = run(api, ["ls", "cat a.txt b.txt"], files={"a.txt": b"alpha\n", "b.txt": b"beta\n"})
    assert box["logs"] == "a.txt\nb.txt\nalpha\nbeta\n"


def test_no_network_interface(api):
    assert run(api, ["ls /sys/class/net"])["logs"] == "lo\n"


def test_timeout_kills_an_infinite_loop(site, api):
    box = run(api, ["while :; do :; done"], timeout=2)
    assert box["timed_out"] is True and box["return_code"] == 137
    deadline = time.monotonic() + 60
    while len(sandbox_domains(site)) > 2:  # only the warm pool is left once it has refilled
        assert time.monotonic() < deadline, sandbox_domains(site)
        time.sleep(0.5)


def test_output_flood_is_capped(api):
    box = run(api, ["yes openhosting | head -c 3000000", "echo after"])
    assert len(box["logs"]) < 70_000
    assert "output truncated at 65536 bytes" in box["logs"]
    assert box["logs"].startswith("openhosting\nopenhosting\n")


def test_hostile_code_does_not_hurt_the_next_sandbox(api):
    hog = run(api, ["python3 -c 'a = bytearray(4 << 30)'"], timeout=20)
    assert hog["return_code"] != 0
    bomb = run(api, ["f() { f | f & }; f"], timeout=3)
    assert bomb["status"] == "terminated"
    assert run(api, ["python3 -c 'print(6*7)'"])["logs"] == "42\n"


def test_more_concurrent_sandboxes_than_the_pool(api):
    ids = []
    for i in range(6):
        r = post(api, [f"echo {i}"])
        assert r.status == 201, r.text
        ids.append(r.json())
    for i, sid in enumerate(ids):
        box = wait_terminated(api, sid)
        assert (box["logs"], box["return_code"]) == (f"{i}\n", 0)


def test_delete_kills_a_running_sandbox(api):
    sid = post(api, ["sleep 60"]).json()
    time.sleep(1)
    assert api.request("DELETE", f"/api/sandboxes/{sid}").status == 204
    box = wait_terminated(api, sid, timeout=30)
    assert box["killed"] is True and box["return_code"] == 137
    assert api.request("DELETE", f"/api/sandboxes/{sid}").status == 204  # forgets it
    assert api.get(f"/api/sandboxes/{sid}").status == 404


def test_bad_requests(site, api):
    def error(r, status):
        assert r.status == status, r.text
        assert r.json()["message"]

    error(post(api, ["true"], image="nope"), 400)
    error(post(api, "[not json", raw_cmd=True), 400)
    error(post(api, "[]", raw_cmd=True), 400)
    error(post(api, "", raw_cmd=True), 400)
    for bad in ("abc", "0", "99999"):
        error(post(api, ["true"], timeout=bad), 400)
    error(post(api, ["true"], files={f"f{i}": b"x" for i in range(5)}), 400)
    error(post(api, ["true"], files={"big": b"x" * (1 << 20 | 1)}), 400)
    error(post(api, ["true"], files={"../escape": b"x"}), 400)
    error(api.post("/api/sandboxes", b"{}", headers={"Content-Type": "text/plain"}), 400)
    error(site.client().get("/api/sandboxes", auth=False), 401)
    error(api.get("/api/sandboxes/doesnotexist"), 404)


def test_users_are_isolated(site, api):
    other = site.client(site.create_user())
    sid = post(api, ["echo mine"]).json()
    assert other.get(f"/api/sandboxes/{sid}").status == 404
    assert other.request("DELETE", f"/api/sandboxes/{sid}").status == 404
    assert sid not in [b["id"] for b in other.get("/api/sandboxes").json()["sandboxes"]]
    assert wait_terminated(api, sid)["logs"] == "mine\n"


def test_concurrency_limit_per_user(api):
    ids = [post(api, ["sleep 30"]).json() for _ in range(6)]
    r = post(api, ["true"])
    assert r.status == 429 and "limit" in r.json()["message"]
    for sid in ids:
        api.request("DELETE", f"/api/sandboxes/{sid}")
    for sid in ids:
        wait_terminated(api, sid, timeout=60)


def test_agent_restart_mid_run(site, api):
    sid = post(api, ["sleep 4", "echo finished"]).json()
    time.sleep(1.5)
    site.stop_agent(signal.SIGKILL)
    site.start_agent()
    box = wait_terminated(api, sid, timeout=180)
    assert box["logs"] == "finished\n" and box["return_code"] == 0
    # no orphan: once the pool has settled only its own VMs remain
    deadline = time.monotonic() + 60
    while len(sandbox_domains(site)) > 2:
        assert time.monotonic() < deadline, sandbox_domains(site)
        time.sleep(0.5)
