"""The workspace terminal with real VMs: the terminal service holding the workspaces' terminal ports,
the SSH gateway with paramiko as the client (shell with a pty and resize, exec with its status and
streams, refusals), the proxy's local session protocol (open, keys, resize, end reasons), a process
started in a terminal outliving the session and a stop/resume, auto_resume on entry."""

from __future__ import annotations

import io
import re
import socket

import paramiko
import pytest

from controlplane.terminal import wire

from .browser import browser, page, save_screenshot  # noqa: F401  (fixtures)
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
    # nohup ignores SIGHUP only once it runs (then it execs sh): wait for that before the hang-up
    sock.sendall(wire.pack(wire.DATA, b"stty size; nohup sh -c 'while :; do sleep 1; done' >/dev/null 2>&1 & "
                                      b"p=$!; while [ \"$(cat /proc/$p/comm)\" != sh ]; do sleep 0.1; done; "
                                      b"echo PID=$p\n"))
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


# --- the browser face: the console proxy's /terminal page and WebSocket ----------------------------

def terminal_url(acct: Account, ws: str) -> str:
    body = acct.api.get(f"/workspaces/{ws}").json()
    url = body["workspace_url"]
    assert url.startswith(f"{acct.site.console_url}/terminal/{ws}#")
    return url


def ws_connect(site, ws: str, ticket: str | None, *, origin: str | None = "", token: str | None = None,
               rows: int = 24, cols: int = 80):
    from websockets.sync.client import connect

    protocols = ["tty"] + ([f"ticket.{ticket}"] if ticket else []) + ([f"wstoken.{token}"] if token else [])
    url = site.console_url.replace("http", "ws", 1) + f"/terminal/{ws}/ws?rows={rows}&cols={cols}"
    return connect(url, subprotocols=protocols, origin=site.console_url if origin == "" else origin,
                   open_timeout=30, max_size=None)


def ws_status(site, ws: str, ticket: str | None, **kw) -> int:
    from websockets.exceptions import InvalidStatus

    try:
        with ws_connect(site, ws, ticket, **kw):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def ws_closed(conn) -> tuple[int, str]:
    """Read to the end: the close code and reason the proxy sent."""
    from websockets.exceptions import ConnectionClosed

    try:
        while True:
            conn.recv(timeout=600)
    except ConnectionClosed as exc:
        return exc.rcvd.code, exc.rcvd.reason


def ws_until(conn, pattern: bytes) -> bytes:
    seen = b""
    while not re.search(pattern, seen):
        msg = conn.recv(timeout=300)
        if isinstance(msg, bytes):
            seen += msg
    return seen


def ws_state(conn) -> dict:
    import json

    while True:
        msg = conn.recv(timeout=600)
        if isinstance(msg, str) and json.loads(msg).get("state") == "open":
            return json.loads(msg)


def tickets(site):
    from controlplane.config import Settings
    from controlplane.db import Database
    from controlplane.services.tickets import Tickets

    return Tickets(Database(Settings.from_env(site.env)))


def test_browser_terminal_types_reads_and_resizes(site, alice, page):  # noqa: F811
    page.goto(terminal_url(alice, alice.ws))
    page.wait_for_selector("body[data-state=connected]", timeout=600_000)
    assert "#" not in page.url
    page.keyboard.type("echo $((6*7))")
    page.keyboard.press("Enter")
    screen = "() => { const b = window.term.buffer.active; const out = [];" \
             " for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true)); return out; }"
    page.wait_for_function(f"({screen})().includes('42')", timeout=120_000)
    size = page.evaluate("() => [window.term.rows, window.term.cols]")
    page.set_viewport_size({"width": 700, "height": 420})
    page.wait_for_function(f"window.term.rows !== {size[0]} && window.term.cols !== {size[1]}", timeout=30_000)
    rows, cols = page.evaluate("() => [window.term.rows, window.term.cols]")
    assert (rows, cols) != tuple(size)
    page.keyboard.type("stty size")
    page.keyboard.press("Enter")
    page.wait_for_function(f"({screen})().includes('{rows} {cols}')", timeout=120_000)
    save_screenshot(page, alice.tmp / "terminal.png")


def test_terminal_websocket_refusals(site, alice, tmp_path):
    t = tickets(site)
    ws = alice.ws
    # no ticket, forged, expired, foreign Origin, another workspace's or another kind's ticket: 403
    assert ws_status(site, ws, None) == 403
    assert ws_status(site, ws, "forged-" + "x" * 40) == 403
    expired, _ = t.issue("terminal", ws, alice.api.user, ttl=-1)
    assert ws_status(site, ws, expired) == 403
    good = terminal_url(alice, ws).partition("#")[2]
    assert ws_status(site, ws, good, origin="http://evil.example") == 403
    assert ws_status(site, ws, good, origin=None) == 403
    vnc, _ = t.issue("vnc", ws, alice.api.user)
    assert ws_status(site, ws, vnc) == 403
    # a good ticket works once (the refusals above were before its claim)
    with ws_connect(site, ws, good) as conn:
        assert conn.subprotocol == "tty" and ws_state(conn)["state"] == "open"
    assert ws_status(site, ws, good) == 403                                       # reused
    # bob holding a ticket for alice's workspace (as if one leaked): the service refuses it by name
    bob = Account(site, tmp_path)
    ticket, _ = t.issue("terminal", ws, bob.api.user)
    with ws_connect(site, ws, ticket) as conn:
        assert ws_closed(conn) == (4001, f"no workspace {ws} for this user")
    log = (site.state_dir / "proxy.log").read_text()
    assert good not in log and expired not in log and ticket not in log


def test_terminal_of_stopped_workspace_resumes_and_background_survives(site, alice):
    good = terminal_url(alice, alice.ws).partition("#")[2]
    with ws_connect(site, alice.ws, good) as conn:
        ws_state(conn)
        # (setsid forks when its caller leads a process group, as a job does: the loop writes its own pid)
        conn.send(b"setsid sh -c 'echo $$ > bg.pid; while :; do sleep 1; done' >/dev/null 2>&1 </dev/null & "
                  b"until [ -s bg.pid ]; do sleep 0.1; done; echo BG=$(cat bg.pid)\n")
        pid = int(re.search(rb"BG=(\d+)\r", ws_until(conn, rb"BG=\d+\r")).group(1))
    # the tab closed; stop the workspace, then open its terminal again: it resumes it
    assert alice.api.put(f"/workspaces/{alice.ws}/stop").status == 200
    good = terminal_url(alice, alice.ws).partition("#")[2]
    with ws_connect(site, alice.ws, good) as conn:
        assert ws_state(conn) == {"state": "open", "resumed": True}
        conn.send(f"kill -0 {pid} && echo BACK-$((40+2)) || echo GONE-$((40+2))\n".encode())
        assert b"BACK-42" in ws_until(conn, rb"(BACK|GONE)-42")
        # a stop while the terminal is open closes it with the reason
        assert alice.api.put(f"/workspaces/{alice.ws}/stop").status == 200
        assert ws_closed(conn) == (4000, "the workspace was stopped")
    assert alice.api.put(f"/workspaces/{alice.ws}/resume").status == 200
    wait_state(alice.api, alice.ws, (2,))


def test_terminal_token_required_and_no_auto_resume(site, alice):
    ws = alice.workspace(workspace_token_required=True, auto_resume=False)
    token = alice.api.get(f"/workspaces/{ws}").json()["workspace_token"]
    with ws_connect(site, ws, terminal_url(alice, ws).partition("#")[2]) as conn:
        assert ws_closed(conn) == (4003, "this workspace requires its workspace token")
    with ws_connect(site, ws, terminal_url(alice, ws).partition("#")[2], token="0" * 36) as conn:
        assert ws_closed(conn)[0] == 4003
    with ws_connect(site, ws, terminal_url(alice, ws).partition("#")[2], token=token) as conn:
        ws_state(conn)
        conn.send(b"echo TOKEN-OK\n")
        ws_until(conn, rb"TOKEN-OK\r")
    assert alice.api.put(f"/workspaces/{ws}/stop").status == 200
    with ws_connect(site, ws, terminal_url(alice, ws).partition("#")[2], token=token) as conn:
        code, reason = ws_closed(conn)
    assert code == 4001 and "is stopped (auto_resume is off" in reason
    assert alice.api.get(f"/workspaces/{ws}").json()["state"]["code"] == 3
    assert alice.api.put(f"/workspaces/{ws}/remove").status == 200
