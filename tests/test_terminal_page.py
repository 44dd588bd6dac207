"""The terminal page and its WebSocket without VMs: the page and xterm.js are served, a handshake
without a good ticket is refused before the upgrade, and with the terminal service not running a good
ticket gets an accepted socket closed with 4002 and the reason (the page shows it). The terminal with
real workspaces: tests/test_terminal_vm.py."""

from __future__ import annotations

import secrets

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .browser import browser, page  # noqa: F401  (fixtures)
from .test_console_proxy import get, tickets, ws_status


def test_page_and_assets(installation):
    ws = secrets.token_hex(16)
    status, headers, body = get(installation, f"/terminal/{ws}")
    assert status == 200 and b"/static/terminal.js" in body and b"xterm.css" in body
    assert headers["referrer-policy"] == "no-referrer" and headers["cache-control"] == "no-store"
    for path in ("/static/terminal.js", "/static/vendor/@xterm/xterm/lib/xterm.mjs",
                 "/static/vendor/@xterm/addon-fit/lib/addon-fit.mjs", "/static/vendor/@xterm/xterm/css/xterm.css"):
        assert get(installation, path)[0] == 200, path


def test_refused_before_upgrade_and_service_down(installation):
    ws = secrets.token_hex(16)
    path = f"/terminal/{ws}/ws"
    assert ws_status(installation, path, None, protocols=("tty",)) == 403
    assert ws_status(installation, path, "forged-" + "x" * 40, protocols=("tty",)) == 403
    vnc, _ = tickets(installation).issue("vnc", ws, None)
    assert ws_status(installation, path, vnc, protocols=("tty",)) == 403
    good, _ = tickets(installation).issue("terminal", ws, None)
    url = installation.console_url.replace("http", "ws", 1) + path
    with connect(url, subprotocols=["tty", f"ticket.{good}"], origin=installation.console_url,
                 open_timeout=30) as conn:
        assert conn.subprotocol == "tty"
        try:
            while True:
                conn.recv(timeout=30)
        except ConnectionClosed as exc:
            assert (exc.rcvd.code, exc.rcvd.reason) == (4002, "the terminal service is not running")
    assert good not in (installation.state_dir / "proxy.log").read_text()


def test_page_says_why(installation, page):  # noqa: F811
    ws = secrets.token_hex(16)
    page.goto(f"{installation.console_url}/terminal/{ws}")
    page.wait_for_selector("body[data-state=refused]", timeout=30_000)
    assert "no ticket" in page.inner_text("#detail")
    good, _ = tickets(installation).issue("terminal", ws, None)
    page.goto("about:blank")                      # (a new fragment alone would not load the page again)
    page.goto(f"{installation.console_url}/terminal/{ws}#{good}")
    page.wait_for_selector("body[data-state=disconnected]", timeout=30_000)
    assert page.inner_text("#detail") == "the terminal service is not running"
    assert good not in page.url
