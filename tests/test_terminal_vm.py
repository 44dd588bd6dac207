"""The workspace terminal with real VMs: the terminal service holding the workspaces' terminal ports,
the SSH gateway with paramiko as the client (shell with a pty and resize, exec with its status and
streams, refusals), the proxy's local session protocol (open, keys, resize, end reasons), a process
started in a terminal outliving the session and a stop/resume, auto_resume on entry."""

from __future__ import annotations

import io
import re
import socket
import time

import paramiko
import pytest

from controlplane.terminal import wire

from .conftest import new_installation
from .containers import make_project, new_account
from .test_workspaces_vm import wait_state

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    inst, drop = new_installation(tmp_path_factory.mktemp("term"), "sqlite", OPENHOSTING_WORKSPACE_SLOTS="2",
                                  OPENHOSTING_SANDBOX_POOL_SIZE="1")
    inst.start(("image", "build", "base"))
    inst.start_terminal()
    yield inst
    inst.stop()
    inst.purge_libvirt()
    drop()


def new_key() -> tuple[paramiko.PKey, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                     serialization.NoEncryption()).decode()
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(pem))
    return key, f"{key.get_name()} {key.get_base64()} test"


class Account:
    def __init__(self, site, tmp_path):
        self.api = new_account(site)
        self.key, line = new_key()
        r = self.api.post_json("/ssh-keys", {"key": line})
        assert r.status == 201, r.text
        self.site, self.tmp = site, tmp_path

    def workspace(self, **fields) -> str:
        project = make_project(self.site, self.tmp, user=self.api.user)
        r = self.api.post_json("/workspaces", {"project_id": project, "retention_time_stopped": 60, **fields})
        assert r.status == 201, r.text
        ws = r.json()["workspace"]["id"]
        body = wait_state(self.api, ws, (2, 5), timeout=1200)   # the first waits for its template to boot
        assert body["state"]["code"] == 2, body
        return ws

    def ssh(self, ws: str, key: paramiko.PKey | None = None) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect("127.0.0.1", self.site.ssh_port, username=ws, pkey=key or self.key, allow_agent=False,
                       look_for_keys=False, timeout=30, banner_timeout=30, auth_timeout=30)
        return client


def run(client: paramiko.SSHClient, command: str, stdin: bytes = b"") -> tuple[int, bytes, bytes]:
    i, o, e = client.exec_command(command, timeout=600)
    if stdin:
        i.write(stdin)
    i.channel.shutdown_write()
    out, err = o.read(), e.read()
    return o.channel.recv_exit_status(), out, err


def read_until(chan: paramiko.Channel, pattern: bytes, timeout: float = 120) -> bytes:
    chan.settimeout(timeout)
    seen = b""
    while not re.search(pattern, seen):
        data = chan.recv(65536)
        if not data:
            raise AssertionError(f"{pattern!r} never came; got {seen[-300:]!r}")
        seen += data
    return seen


@pytest.fixture(scope="module")
def alice(site, tmp_path_factory):
    acct = Account(site, tmp_path_factory.mktemp("alice"))
    acct.ws = acct.workspace()
    return acct


def test_ssh_shell_with_pty_and_resize(alice):
    with alice.ssh(alice.ws) as client:
        chan = client.invoke_shell(term="xterm", width=100, height=30)
        chan.sendall(b"stty size; echo $((6*7))\n")
        out = read_until(chan, rb"\r\n42\r\n")
        assert b"30 100" in out
        chan.resize_pty(width=120, height=40)
        chan.sendall(b"stty size\n")
        read_until(chan, rb"40 120")
        chan.sendall(b"exit 5\n")
        assert chan.recv_exit_status() == 5


def test_ssh_exec_status_streams_and_stdin(alice):
    with alice.ssh(alice.ws) as client:
        assert run(client, "echo out; echo err >&2; pwd; exit 3") == (3, b"out\n/home/user/workspace\n", b"err\n")
        assert run(client, "tr a-z A-Z", stdin=b"hello\n") == (0, b"HELLO\n", b"")
        assert run(client, "id -un")[1] == b"user\n"


def test_ssh_refusals(site, alice, tmp_path):
    bob = Account(site, tmp_path)
    # a key nobody registered: authentication fails
    stranger, _ = new_key()
    with pytest.raises(paramiko.AuthenticationException):
        alice.ssh(alice.ws, key=stranger)
    # bob's key on alice's workspace, and on a workspace that never existed: the same sentence
    for ws in (alice.ws, "0" * 32):
        with bob.ssh(ws) as client:
            status, out, err = run(client, "echo should-not-run")
        assert (status, out) == (1, b"") and err == f"openhosting: no workspace {ws} for this user\r\n".encode()


def open_session(site, owner: str, ws: str, rows=24, cols=80, auto_resume=True) -> tuple[socket.socket, dict]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(600)
    sock.connect(str(site.state_dir / "run" / "terminal.sock"))
    sock.sendall(wire.pack(wire.OPEN, {"owner": owner, "workspace": ws, "rows": rows, "cols": cols,
                                       "auto_resume": auto_resume}))
    kind, payload = wire.recv(sock)
    assert kind == wire.ANSWER
    return sock, wire.as_json(payload)


def screen_until(sock: socket.socket, pattern: bytes) -> bytes:
    seen = b""
    while not re.search(pattern, seen):
        got = wire.recv(sock)
        assert got is not None and got[0] == wire.DATA, (got, seen[-300:])
        seen += got[1]
    return seen


def end_of(sock: socket.socket) -> dict:
    while (got := wire.recv(sock)) is not None:
        if got[0] == wire.END:
            return wire.as_json(got[1])
    raise AssertionError("the session closed without an end frame")


def test_proxy_sessions_background_process_survives_close_and_stop_resume(site, alice):
    sock, answer = open_session(site, alice.api.user, alice.ws, rows=20, cols=70)
    assert answer == {"ok": True, "resumed": False}
    sock.sendall(wire.pack(wire.DATA, b"stty size; nohup sh -c 'while :; do sleep 1; done' >/dev/null 2>&1 & "
                                      b"echo PID=$!\n"))
    out = screen_until(sock, rb"PID=(\d+)\r")
    assert b"20 70" in out
    pid = int(re.search(rb"PID=(\d+)\r", out).group(1))
    sock.sendall(wire.pack(wire.RESIZE, {"rows": 33, "cols": 91}) + wire.pack(wire.DATA, b"stty size\n"))
    screen_until(sock, rb"33 91")
    sock.close()                                  # the tab closes: the shell is hung up

    # several sessions at once; the background process is there
    first, _ = open_session(site, alice.api.user, alice.ws)
    second, _ = open_session(site, alice.api.user, alice.ws)
    second.sendall(wire.pack(wire.DATA, f"kill -0 {pid} && echo ALIVE-$((1+1))\n".encode()))
    screen_until(second, rb"ALIVE-2")
    second.sendall(wire.pack(wire.DATA, b"exit 7\n"))
    assert end_of(second) == {"reason": "the shell exited (7)", "exit": 7}

    # stop: the open session ends with the reason; the process survives the stop and a resume on entry
    assert alice.api.put(f"/workspaces/{alice.ws}/stop").status == 200
    assert end_of(first)["reason"] == "the workspace was stopped"
    with alice.ssh(alice.ws) as client:           # auto_resume: entering resumes it
        status, out, _ = run(client, f"kill -0 {pid} && echo still-here")
    assert (status, out) == (0, b"still-here\n")
    assert alice.api.get(f"/workspaces/{alice.ws}").json()["state"]["code"] == 2


def test_stopped_workspace_without_auto_resume_is_refused(site, alice):
    ws = alice.workspace(auto_resume=False)
    assert alice.api.put(f"/workspaces/{ws}/stop").status == 200
    with alice.ssh(ws) as client:
        status, out, err = run(client, "echo no")
    assert status == 1 and b"is stopped (auto_resume is off" in err
    sock, answer = open_session(site, alice.api.user, ws)
    assert answer["ok"] is False and "is stopped" in answer["reason"]
    assert alice.api.get(f"/workspaces/{ws}").json()["state"]["code"] == 3
    # another user's workspace through the proxy socket: the same words as one that never existed
    sock, answer = open_session(site, "someone-else", alice.ws)
    assert answer == {"ok": False, "reason": f"no workspace {alice.ws} for this user"}
    assert alice.api.request("PUT", f"/workspaces/{ws}/remove").status == 200
