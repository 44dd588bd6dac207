"""The console proxy without VMs: it starts with the installation, serves pages and the pinned npm
assets, and refuses WebSockets before the upgrade (HTTP 403) for a bad Origin or ticket; a browser
page without a ticket says why. (VNC through a real server: tests/test_consoles_vm.py.)"""

from __future__ import annotations

import http.client
import time
import uuid
from urllib.parse import urlsplit

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from controlplane.proxy.origin import Origins, normalize

from .browser import browser, page  # noqa: F401  (fixtures)


def tickets(inst):
    from controlplane.config import Settings
    from controlplane.db import Database
    from controlplane.services.tickets import Tickets

    return Tickets(Database(Settings.from_env(inst.env)))


def get(inst, path: str) -> tuple[int, dict, bytes]:
    parts = urlsplit(inst.console_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def ws_status(inst, path: str, ticket: str | None, origin: str | None = "", protocols=("binary",)) -> int:
    """101 when the proxy accepted the WebSocket, else the HTTP status it refused with."""
    url = inst.console_url.replace("http", "ws", 1) + path
    subprotocols = list(protocols) + ([f"ticket.{ticket}"] if ticket else [])
    kwargs = {"origin": inst.console_url if origin == "" else origin}
    try:
        with connect(url, subprotocols=subprotocols, open_timeout=30, **kwargs) as ws:
            assert ws.subprotocol == "binary"   # the ticket is never the chosen protocol
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_origin_rule():
    origins = Origins("http://127.0.0.1:8081", ("https://Console.Example.com:443",))
    assert origins.allows("http://127.0.0.1:8081")
    assert origins.allows("https://console.example.com")
    for bad in (None, "", "null", "http://127.0.0.1:8082", "https://127.0.0.1:8081", "http://localhost:8081",
                "http://127.0.0.1:8081.evil.example", "file://", "http://console.example.com"):
        assert not origins.allows(bad), bad
    assert normalize("HTTP://[::1]:80/") == "http://[::1]"
    assert normalize("not a url") is None


def test_proxy_serves_pages_and_pinned_assets(installation):
    status, headers, body = get(installation, "/health")
    assert (status, body) == (200, b"ok\n")
    status, headers, body = get(installation, f"/vnc/{uuid.uuid4()}")
    assert status == 200 and b"/static/vnc.js" in body
    assert headers["referrer-policy"] == "no-referrer" and headers["cache-control"] == "no-store"
    status, _, body = get(installation, "/static/vendor/@novnc/novnc/core/rfb.js")
    assert status == 200 and b"export default class RFB" in body
    for path in ("/static/vendor/@xterm/xterm/lib/xterm.js", "/static/vendor/@xterm/addon-fit/lib/addon-fit.js",
                 "/static/vnc.js", "/static/console.css"):
        assert get(installation, path)[0] == 200, path
    assert get(installation, "/static/vendor/../../controlplane/config.py")[0] == 404
    assert get(installation, "/nothing")[0] == 404
    # a ticket sent in a query string anyway is masked in the access log
    assert get(installation, "/health?ticket=query-secret-123&x=1")[0] == 200
    # the access line is written after the answer: wait for it rather than read too early
    deadline, log = time.monotonic() + 30, ""
    while "/health?ticket=" not in log and time.monotonic() < deadline:
        time.sleep(0.1)
        log = (installation.state_dir / "proxy.log").read_text()
    assert "/health?ticket=***&x=1" in log
    assert "query-secret-123" not in log


def test_websocket_refused_before_upgrade(installation):
    t = tickets(installation)
    server = str(uuid.uuid4())
    path = f"/vnc/{server}/ws"
    assert ws_status(installation, path, None) == 403                             # no ticket
    assert ws_status(installation, path, "forged-" + "x" * 40) == 403             # forged
    assert ws_status(installation, path, "a" * 500) == 403                        # absurd
    good, _ = t.issue("vnc", server, None)
    assert ws_status(installation, path, good, origin="http://evil.example") == 403
    assert ws_status(installation, path, good, origin=None) == 403                # no Origin at all
    other, _ = t.issue("vnc", str(uuid.uuid4()), None)
    assert ws_status(installation, path, other) == 403                            # another target's
    terminal, _ = t.issue("terminal", server, None)
    assert ws_status(installation, path, terminal) == 403                         # another kind
    expired, _ = t.issue("vnc", server, None, ttl=-1)
    assert ws_status(installation, path, expired) == 403
    # a ticket is spent by its first try, whatever became of it: the server does not exist, so the
    # first try is refused after the claim, and the second finds the ticket used
    assert ws_status(installation, path, good) == 403
    assert t.claim("vnc", good, server) is None
    log = (installation.state_dir / "proxy.log").read_text()
    for secret in (good, other, terminal, expired):
        assert secret not in log
    assert "refused WebSocket" in log


def test_page_without_ticket_says_why(installation, page):  # noqa: F811
    page.goto(f"{installation.console_url}/vnc/{uuid.uuid4()}")
    page.wait_for_selector("body[data-state=refused]", timeout=30_000)
    assert "no ticket" in page.inner_text("#detail")


def test_page_with_spent_ticket_says_refused(installation, page):  # noqa: F811
    server = str(uuid.uuid4())
    ticket, _ = tickets(installation).issue("vnc", server, None)
    assert tickets(installation).claim("vnc", ticket, server) is not None
    page.goto(f"{installation.console_url}/vnc/{server}#{ticket}")
    page.wait_for_selector("body[data-state=refused]", timeout=30_000)
    assert "refused" in page.inner_text("#detail")
    assert ticket not in page.url          # the page removed it from the address bar


def test_vnc_authentication_and_handshake_pieces():
    from controlplane.proxy import rfb

    # DES itself: the classic worked example (key 133457799BBCDFF1, block 0123456789ABCDEF)
    subkeys = rfb._subkeys(bytes.fromhex("133457799BBCDFF1"))
    assert rfb._des_block(subkeys, bytes.fromhex("0123456789ABCDEF")).hex() == "85e813540f0ab405"
    # VNC mirrors the key's bits and uses the first 8 characters only
    challenge = bytes(range(16))
    assert rfb.vnc_response("password", challenge) == rfb.vnc_response("password-and-more", challenge)
    assert rfb.vnc_response("a", challenge) != rfb.vnc_response("b", challenge)
    assert rfb.answer_none(b"RFB 003.008\n") == (b"\x01\x01", 1)
    assert rfb.answer_none(b"RFB 003.003\n") == (b"\x00\x00\x00\x01", 0)
    assert rfb.security_result(b"RFB 003.008\n") == b"\x00\x00\x00\x00"
    assert rfb.security_result(b"RFB 003.007\n") == b""
    with pytest.raises(rfb.RfbError):
        rfb.answer_none(b"GET / HTTP/1.1")


def test_proxy_restarts_alone(fresh_installation):
    inst = fresh_installation()
    server = str(uuid.uuid4())
    ticket, _ = tickets(inst).issue("vnc", server, None)
    inst.stop_proxy()
    inst.start_proxy()          # nothing else restarted: the API and agent keep running
    assert get(inst, "/health")[0] == 200
    assert inst.client().get("/drives/list", auth=False).status == 401
    assert ws_status(inst, f"/vnc/{server}/ws", ticket) == 403   # the ticket was checked by the new one
    assert tickets(inst).claim("vnc", ticket, server) is None
