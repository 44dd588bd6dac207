"""The terminal half of the consoles benchmark: workspace terminals through the console proxy.

    .venv/bin/python -m bench.consoles_terminal [--keys 200] [--opens 8]

(`bench/consoles.py` holds the VNC half; its main may call `terminal_figures(inst, ...)` here.)
One installation (API, agent, console proxy, terminal service), one running workspace. Prints:

- open → first prompt: `GET /api/v1/workspaces/<id>` (a fresh `workspace_url`), the WebSocket
  handshake with its ticket, until the shell's first prompt arrives (p50/p95 over `--opens`), and the
  same from `POST /api/v1/workspaces` (a new workspace, state 2 first) once;
- keystroke echo: one key sent, until its echo comes back (p50/p99 over `--keys`), through the proxy's
  WebSocket, through SSH (paramiko), and, as the floor measured in the same run, through a local PTY
  running bash on the host (no VM, no relay). Target: p50 ≤ 30 ms through the proxy under TCG.
Prints the accelerator.
"""

from __future__ import annotations

import argparse
import os
import pty
import re
import select
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import installation, percentile as pct  # noqa: E402
from tests.containers import make_project, new_account  # noqa: E402

PROMPT = re.compile(rb"[$#] $")


def _ws_open(inst, url: str):
    from websockets.sync.client import connect

    page, _, ticket = url.partition("#")
    ws_id = page.rsplit("/", 1)[1]
    return connect(inst.console_url.replace("http", "ws", 1) + f"/terminal/{ws_id}/ws?rows=24&cols=80",
                   subprotocols=["tty", f"ticket.{ticket}"], origin=inst.console_url, open_timeout=60)


def _until(recv, pattern: re.Pattern, timeout: float = 120) -> bytes:
    seen, deadline = b"", time.monotonic() + timeout
    while not pattern.search(seen):
        data = recv(max(0.01, deadline - time.monotonic()))
        if data is None:
            raise TimeoutError(f"{pattern.pattern!r} never came; got {seen[-200:]!r}")
        seen += data
    return seen


def _ws_recv(conn):
    def recv(timeout: float) -> bytes | None:
        while True:
            try:
                msg = conn.recv(timeout=timeout)
            except TimeoutError:
                return None
            if isinstance(msg, bytes):
                return msg
    return recv


def _echo_times(send, recv, keys: int) -> list[float]:
    """One key at a time, its echo awaited; a Ctrl-U every 50 keys keeps the line short (not timed)."""
    out = []
    for i in range(keys):
        if i and i % 50 == 0:
            send(b"\x15")
            time.sleep(0.05)
            while recv(0.05):
                pass
        t0 = time.perf_counter()
        send(b"x")
        _until(recv, re.compile(rb"x"), 30)
        out.append(time.perf_counter() - t0)
    send(b"\x15")
    return out


def local_floor(keys: int) -> list[float]:
    """The same keystroke echo through a local PTY running bash (the floor: no VM, no relay)."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe("bash", ["bash", "--norc", "-i"], {"PS1": "$ ", "TERM": "xterm", "PATH": os.environ["PATH"]})

    def recv(timeout: float) -> bytes | None:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 65536) if ready else None

    try:
        _until(recv, PROMPT)
        return _echo_times(lambda b: os.write(fd, b), recv, keys)
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(fd)


def terminal_figures(inst, acct, ws: str, keys: int, opens: int) -> dict:
    import paramiko

    figures: dict = {}
    first = []
    for _ in range(opens):
        t0 = time.perf_counter()
        url = acct.get(f"/workspaces/{ws}").json()["workspace_url"]
        with _ws_open(inst, url) as conn:
            _until(_ws_recv(conn), PROMPT)
            first.append(time.perf_counter() - t0)
    figures["open_to_prompt"] = first

    url = acct.get(f"/workspaces/{ws}").json()["workspace_url"]
    with _ws_open(inst, url) as conn:
        recv = _ws_recv(conn)
        _until(recv, PROMPT)
        figures["echo_proxy"] = _echo_times(conn.send, recv, keys)

    key = paramiko.Ed25519Key.from_private_key_file(str(inst.state_dir / "bench_key"))
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", inst.ssh_port, username=ws, pkey=key, allow_agent=False, look_for_keys=False,
                   timeout=60, banner_timeout=60, auth_timeout=60)
    try:
        chan = client.invoke_shell(width=80, height=24)

        def recv(timeout: float) -> bytes | None:
            chan.settimeout(timeout)
            try:
                return chan.recv(65536) or None
            except TimeoutError:
                return None
        _until(recv, PROMPT)
        figures["echo_ssh"] = _echo_times(chan.sendall, recv, keys)
    finally:
        client.close()
    figures["echo_floor"] = local_floor(keys)
    return figures


def _make_key(inst, acct) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    import paramiko

    pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                     serialization.NoEncryption())
    path = inst.state_dir / "bench_key"
    path.write_bytes(pem)
    path.chmod(0o600)
    public = paramiko.Ed25519Key.from_private_key_file(str(path))
    r = acct.post_json("/ssh-keys", {"key": f"{public.get_name()} {public.get_base64()} bench"})
    assert r.status == 201, r.text


def _wait_running(acct, ws: str, timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = acct.get(f"/workspaces/{ws}").json()["state"]
        if state["code"] == 2:
            return
        if state["code"] == 5:
            raise RuntimeError(f"workspace failed: {state}")
        time.sleep(0.1)
    raise TimeoutError("workspace did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--opens", type=int, default=8)
    args = parser.parse_args()
    inst = installation(OPENHOSTING_WORKSPACE_SLOTS="4", OPENHOSTING_SANDBOX_POOL_SIZE="1")
    try:
        inst.start(("image", "build", "base"))
        inst.start_terminal()
        acct = new_account(inst)
        _make_key(inst, acct)
        project = make_project(inst, inst.state_dir, user=acct.user)
        accel = acct.get("/test").json()["accelerator"]
        t0 = time.perf_counter()
        ws = acct.post_json("/workspaces", {"project_id": project}).json()["workspace"]["id"]
        _wait_running(acct, ws)
        print(f"accelerator {accel}; first workspace (template boot included) running in "
              f"{time.perf_counter() - t0:.1f} s")
        # POST -> first prompt with the template ready
        t0 = time.perf_counter()
        body = acct.post_json("/workspaces", {"project_id": project}).json()["workspace"]
        _wait_running(acct, body["id"])
        with _ws_open(inst, acct.get(f"/workspaces/{body['id']}").json()["workspace_url"]) as conn:
            _until(_ws_recv(conn), PROMPT)
        post_to_prompt = time.perf_counter() - t0
        f = terminal_figures(inst, acct, ws, args.keys, args.opens)
        ms = lambda xs, p: pct(xs, p) * 1000  # noqa: E731
        print(f"POST /workspaces -> first prompt: {post_to_prompt:.2f} s (one sample)")
        print(f"GET workspace_url -> first prompt: p50 {ms(f['open_to_prompt'], 50):.0f} ms, "
              f"p95 {ms(f['open_to_prompt'], 95):.0f} ms ({len(f['open_to_prompt'])} opens)")
        for name, label in (("echo_proxy", "browser path (WebSocket via proxy)"), ("echo_ssh", "SSH gateway"),
                            ("echo_floor", "floor: local PTY on the host")):
            xs = f[name]
            print(f"keystroke echo, {label}: p50 {ms(xs, 50):.1f} ms, p99 {ms(xs, 99):.1f} ms ({len(xs)} keys)")
        target = ms(f["echo_proxy"], 50) <= 30
        print(f"target p50 <= 30 ms through the proxy: {'met' if target else 'NOT met'}")
    finally:
        inst.stop()
        inst.purge_libvirt()


if __name__ == "__main__":
    main()
