"""Server consoles through the console proxy, against real QEMU VMs (TCG here) and a real chromium.

The API hands out a one-time link; the proxy logs in to QEMU's VNC with the server's password and
offers the browser "no authentication". Raw WebSocket clients check what is refused (reused, expired,
forged and foreign-Origin tickets, another user's server, a stopped server: HTTP 403 before any
upgrade) and that a session ends with "the server stopped"; chromium opens the page, waits for
noVNC's connected state and finds pixels on the canvas.
"""

from __future__ import annotations

import os
import struct
import subprocess
import time
import uuid
from urllib.parse import urlsplit

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from .browser import browser, page, save_screenshot  # noqa: F401  (fixtures)
from .guestkit import build_test_iso
from .test_servers_vm import CPU, upload, wait_for

pytestmark = pytest.mark.vm

PASSWORD = "s3cret"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from .conftest import new_installation

    inst, drop = new_installation(tmp_path_factory.mktemp("consoles"), "sqlite")
    inst.start()
    yield inst
    inst.stop()
    inst.purge_libvirt()
    drop()


@pytest.fixture(scope="module")
def owner(site):
    return site.client(site.create_user("owner"))


@pytest.fixture(scope="module")
def intruder(site):
    return site.client(site.create_user("intruder"))


@pytest.fixture(scope="module")
def iso(site, owner):
    return upload(owner, build_test_iso(), name="guest.iso", **{"claim:type": "shared"})


def create(api, iso: str, **extra) -> str:
    body = {"name": "console", "cpu": CPU, "mem": "256", "smp": "1", "ide:0:0": iso, "ide:0:0:media": "cdrom",
            "persistent": "true", **extra}
    r = api.post_kv("/servers/create", body)
    assert r.status == 200, r.text
    return r.kv()["server"]


@pytest.fixture(scope="module")
def server(owner, iso):
    return create(owner, iso, **{"vnc:ip": "auto", "vnc:password": PASSWORD})


def open_link(api, sid: str, as_json: bool = False) -> str:
    headers = {"Accept": "application/json"} if as_json else {}
    r = api.post(f"/servers/{sid}/console", headers=headers)
    assert r.status == 200, r.text
    return r.json()["url"] if as_json else r.kv()["url"]


def ws_url(link: str) -> tuple[str, str, str]:
    """(WebSocket URL, ticket, the page's origin) of a console link."""
    parts = urlsplit(link)
    origin = f"{parts.scheme}://{parts.netloc}"
    return f"ws://{parts.netloc}{parts.path}/ws", parts.fragment, origin


def ws_open(link: str, origin: str | None = None, ticket: str | None = None, path: str | None = None):
    url, own_ticket, own_origin = ws_url(link)
    if path is not None:
        url = url.rsplit("/vnc/", 1)[0] + path
    return connect(url, origin=origin or own_origin, subprotocols=["binary", f"ticket.{ticket or own_ticket}"],
                   open_timeout=60, max_size=None)


def refused(link: str, **kw) -> int:
    try:
        with ws_open(link, **kw):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def rfb_client(ws) -> dict:
    """The browser's side of the handshake the proxy offers: RFB 3.8, security type None, ServerInit."""
    buf = bytearray()

    def read(n):
        while len(buf) < n:
            buf.extend(ws.recv(timeout=60))
        out = bytes(buf[:n])
        del buf[:n]
        return out

    assert read(12) == b"RFB 003.008\n"
    ws.send(b"RFB 003.008\n")
    count = read(1)[0]
    assert list(read(count)) == [1], "the proxy must offer only security type None"
    ws.send(b"\x01")
    assert struct.unpack(">I", read(4))[0] == 0
    ws.send(b"\x01")   # ClientInit, shared
    width, height = struct.unpack(">HH", read(4))
    read(16)
    name = read(struct.unpack(">I", read(4))[0]).decode()
    ws.send(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))   # FramebufferUpdateRequest
    while read(1)[0] != 0:   # skip anything before the first FramebufferUpdate
        pass
    return {"width": width, "height": height, "name": name, "rest": bytes(buf)}


def test_console_link_formats_and_refusals_at_the_api(site, owner, intruder, server, iso):
    text = owner.post(f"/servers/{server}/console")
    assert text.status == 200 and text.headers["content-type"].startswith("text/plain")
    fields = text.kv()
    assert fields["server"] == server and fields["url"].startswith(f"{site.console_url}/vnc/{server}#")
    assert int(fields["expires"]) > time.time() + 30
    as_json = owner.post(f"/servers/{server}/console", headers={"Accept": "application/json"}).json()
    assert set(as_json) == {"server", "url", "expires"} and as_json["url"] != fields["url"]
    for api in (intruder,):
        r = api.post(f"/servers/{server}/console")
        assert (r.status, r.error) == (404, "missing") and server not in r.text
    r = owner.post(f"/servers/{uuid.uuid4()}/console")
    assert (r.status, r.error) == (404, "missing")
    # the link's page and its password: never in the API's answer or the page
    assert PASSWORD not in text.text
    # a running server without a VNC password has no console; a stopped one must be started first
    plain = create(owner, iso)
    r = owner.post(f"/servers/{plain}/console")
    assert (r.status, r.error) == (409, "busy") and "password" in r.text
    assert owner.post(f"/servers/{plain}/stop").status == 204
    r = owner.post(f"/servers/{plain}/console")
    assert (r.status, r.error) == (409, "busy") and "start it" in r.text
    owner.post(f"/servers/{plain}/destroy")


def test_cli_prints_the_link(site, owner, server):
    from .test_tools import tool_env

    env = tool_env(owner.port, owner.user)
    out = subprocess.run(["openhosting", "console", server], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    link = out.stdout.strip()
    assert link.startswith(f"{site.console_url}/vnc/{server}#") and "\n" not in link
    with ws_open(link) as ws:
        assert rfb_client(ws)["width"] > 0


def test_websocket_relays_vnc_without_the_password(site, owner, server):
    link = open_link(owner, server)
    with ws_open(link) as ws:
        assert ws.subprotocol == "binary"
        init = rfb_client(ws)
    assert init["width"] >= 320 and init["height"] >= 200
    assert refused(link) == 403        # the link was good for one connection
    # a password changed while the server runs reaches QEMU at its next start: the proxy logs in
    # with the one QEMU checks now
    r = owner.post_kv(f"/servers/{server}/set", {"vnc:password": "n3w"})
    assert r.status == 200, r.text
    with ws_open(open_link(owner, server)) as ws:
        assert rfb_client(ws)["width"] == init["width"]
    assert owner.post_kv(f"/servers/{server}/set", {"vnc:password": PASSWORD}).status == 200
    log = (site.state_dir / "proxy.log").read_text() + (site.state_dir / "api.log").read_text()
    assert urlsplit(link).fragment not in log and PASSWORD not in log


def test_websocket_refusals(site, owner, intruder, server, iso):
    # forged, foreign Origin (not spent: the Origin is checked first), expired
    link = open_link(owner, server)
    assert refused(link, ticket="A" * 43) == 403
    assert refused(link, origin="http://evil.example") == 403
    assert refused(link, origin=site.console_url.replace("127.0.0.1", "localhost")) == 403
    from .test_console_proxy import tickets

    expired, _ = tickets(site).issue("vnc", server, owner.user.uuid, ttl=-1)
    assert refused(link, ticket=expired) == 403
    assert refused(link) == 101         # the good ticket, from the right Origin, still works once
    # another user's server: the API answers 404, and the intruder's own ticket does not open it
    theirs = create(intruder, upload(intruder, build_test_iso(), name="theirs.iso"), **{"vnc:password": "other"})
    their_link = open_link(intruder, theirs)
    assert refused(their_link, path=f"/vnc/{server}/ws") == 403
    intruder.post(f"/servers/{theirs}/destroy")
    # a server stopped after the link was made: refused, and the ticket is spent
    stopped = create(owner, iso, **{"vnc:password": PASSWORD})
    late = open_link(owner, stopped)
    assert owner.post(f"/servers/{stopped}/stop").status == 204
    assert refused(late) == 403
    assert owner.post(f"/servers/{stopped}/start").status == 204
    assert refused(late) == 403
    assert refused(open_link(owner, stopped)) == 101
    owner.post(f"/servers/{stopped}/destroy")


def test_session_ends_when_the_server_stops(site, owner, iso):
    sid = create(owner, iso, **{"vnc:password": PASSWORD})
    with ws_open(open_link(owner, sid)) as ws:
        rfb_client(ws)
        assert owner.post(f"/servers/{sid}/stop").status == 204
        deadline = time.monotonic() + 60
        with pytest.raises(ConnectionClosed):
            while time.monotonic() < deadline:
                ws.recv(timeout=60)
        assert (ws.close_code, ws.close_reason) == (4001, "the server stopped")
    owner.post(f"/servers/{sid}/destroy")


def canvas_colours(pg) -> int:
    """How many distinct colours noVNC's canvas shows (a sample of its pixels)."""
    return pg.evaluate("""() => {
        const c = document.querySelector('#screen canvas');
        if (!c || !c.width) return 0;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let i = 0; i < d.length; i += 4 * 97) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
        return seen.size;
    }""")


def test_browser_shows_the_screen_and_why_it_ended(site, owner, iso, page, tmp_path):  # noqa: F811
    sid = create(owner, iso, **{"vnc:password": PASSWORD})
    started = time.monotonic()
    page.goto(open_link(owner, sid))
    page.wait_for_selector("body[data-state=connected]", timeout=120_000)
    wait_for(lambda: canvas_colours(page) >= 2, timeout=120, interval=0.5, what="pixels on the console's canvas")
    print(f"console link to pixels: {time.monotonic() - started:.1f} s")
    shot = save_screenshot(page, tmp_path / "console.png")
    if os.environ.get("OPENHOSTING_TEST_SCREENSHOTS"):
        shot.replace(os.path.join(os.environ["OPENHOSTING_TEST_SCREENSHOTS"], "console.png"))
    assert "#" not in page.url      # the ticket left the address bar
    # the screen scales with the window, keeping its aspect
    def shown_width():
        return page.evaluate("() => document.querySelector('#screen canvas').getBoundingClientRect().width")

    wide = shown_width()
    page.set_viewport_size({"width": 500, "height": 400})
    wait_for(lambda: shown_width() <= 500, timeout=30, interval=0.2, what="the screen to shrink with the window")
    assert shown_width() < wide
    assert owner.post(f"/servers/{sid}/stop").status == 204
    page.wait_for_selector("body[data-state=disconnected]", timeout=60_000)
    assert page.inner_text("#detail") == "The server stopped."
    owner.post(f"/servers/{sid}/destroy")
