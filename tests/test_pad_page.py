"""The pad page in a real browser (Debian's chromium through Playwright): two contexts on one pad,
typing, cursors, presence, the API's contents, a restart of the console proxy, playback, and the
access rules for guests (pad-page.md)."""

from __future__ import annotations

import signal
import time

import pytest

from .browser import browser  # noqa: F401  (fixture)
from .padroom import login, vm_site  # noqa: F401  (fixture)
from .pads import PadApi, make_user


@pytest.fixture(scope="module")
def olga(installation):
    user = make_user(installation, "Olga Owner")
    api = PadApi(installation, user)
    r = api.post("/api/auth/login", json_body={"username": user.email, "password": user.secret}, auth=False)
    assert r.status == 200, r.text
    return api, r.json()["token"]


def new_pad(api: PadApi, **fields) -> str:
    r = api.post("/api/pads", form={"language": "python3", "contents": "", **fields})
    assert r.status == 200, r.text
    return r.json()["id"]


def context(browser, installation, cookie: str | None = None):  # noqa: F811
    # bypass_csp: Playwright evaluates its wait predicates as strings, which the page's CSP (no eval) refuses
    ctx = browser.new_context(viewport={"width": 1100, "height": 700}, bypass_csp=True)
    if cookie:
        ctx.add_cookies([{"name": "session-access-key", "value": cookie, "url": installation.console_url}])
    return ctx


def open_pad(ctx, installation, pad: str, guest: str | None = None, url: str | None = None):
    page = ctx.new_page()
    page.openhosting_log = []
    page.on("pageerror", lambda exc: page.openhosting_log.append(str(exc)))
    page.goto(url or f"{installation.console_url}/pads/{pad}")
    if guest:
        page.fill("#join-name", guest)
        page.click("#join-form button")
    page.wait_for_function("window.padState && window.padState.synced", timeout=30000)
    return page


def text(page) -> str:
    return page.evaluate("window.padState.ytext.toString()")


def wait_text(page, expected: str, timeout: float = 30) -> None:
    page.wait_for_function("(t) => window.padState.ytext.toString() === t", arg=expected, timeout=timeout * 1000)


def api_contents(api: PadApi, pad: str, expected: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.get(f"/api/pads/{pad}").json()["contents"] == expected:
            return
        time.sleep(0.1)
    assert api.get(f"/api/pads/{pad}").json()["contents"] == expected


def test_two_browsers_edit_one_pad_through_a_proxy_restart(browser, installation, olga):  # noqa: F811
    api, cookie = olga
    pad = new_pad(api)
    owner_ctx, guest_ctx = context(browser, installation, cookie), context(browser, installation)
    try:
        a = open_pad(owner_ctx, installation, pad)
        b = open_pad(guest_ctx, installation, pad, guest="Gina Guest")
        assert not a.is_hidden("#owner-notes") and b.is_hidden("#owner-notes")
        a.click(".cm-content")
        a.keyboard.type("x = 41\n")
        wait_text(b, "x = 41\n")
        assert "x = 41" in b.inner_text(".cm-content")
        b.click(".cm-content")
        b.keyboard.press("Control+End")
        b.keyboard.type("y = x + 1\n")
        wait_text(a, "x = 41\ny = x + 1\n")
        # each sees the other's cursor, named
        a.wait_for_selector(".cm-ySelectionInfo", state="attached", timeout=20000)
        assert "Gina Guest" in a.inner_text(".cm-ySelectionInfo") or \
            "Gina Guest" in a.eval_on_selector(".cm-ySelectionInfo", "e => e.textContent")
        b.wait_for_selector(".cm-ySelectionInfo", state="attached", timeout=20000)
        assert "Olga Owner" in b.eval_on_selector(".cm-ySelectionInfo", "e => e.textContent")
        a.wait_for_function("document.getElementById('participants').textContent.includes('Gina Guest')")
        api_contents(api, pad, "x = 41\ny = x + 1\n")

        # the proxy dies (kill -9) and comes back: nothing acknowledged is lost, the pages reconnect
        installation.stop_proxy(signal.SIGKILL)
        a.wait_for_function("window.padState.status !== 'connected'", timeout=20000)
        installation.start_proxy()
        a.wait_for_function("window.padState.status === 'connected'", timeout=30000)
        b.wait_for_function("window.padState.status === 'connected'", timeout=30000)
        a.click(".cm-content")
        a.keyboard.press("Control+End")
        a.keyboard.type("print\n")
        final = "x = 41\ny = x + 1\nprint\n"
        wait_text(b, final)
        wait_text(a, final)
        api_contents(api, pad, final)
        assert not a.openhosting_log and not b.openhosting_log, (a.openhosting_log, b.openhosting_log)
    finally:
        guest_ctx.close()
    deadline = time.monotonic() + 20   # the room records the leave once it sees the socket close
    while time.monotonic() < deadline:
        names = [(e["kind"], e["user_name"]) for e in api.get(f"/api/pads/{pad}/events").json()["events"]]
        if ("left", "Gina Guest") in names:
            break
        time.sleep(0.1)
    assert ("joined", "Gina Guest") in names and ("left", "Gina Guest") in names
    assert ("joined", "Olga Owner") in names

    # playback, by the owner: the timeline reaches the final text, joins are marked on it
    try:
        p = owner_ctx.new_page()
        p.goto(f"{installation.console_url}/pads/{pad}/playback")
        p.wait_for_function("window.playback && window.playback.loaded", timeout=30000)
        assert p.inner_text("#replay") == ""
        p.select_option("#speed", "16")
        p.click("#play")
        p.wait_for_function("window.playback.index === window.playback.updates.length && !window.playback.playing",
                            timeout=60000)
        assert p.eval_on_selector("#replay", "e => e.textContent") == final
        assert p.locator("#marks span[data-kind=joined]").count() >= 2
        p.fill("#timeline", "0")
        assert p.eval_on_selector("#replay", "e => e.textContent") == ""
    finally:
        owner_ctx.close()


def test_guests_private_and_ended_pads(browser, installation, olga):  # noqa: F811
    api, cookie = olga
    private = new_pad(api, private="true", contents="secret\n")
    ctx = context(browser, installation)
    try:
        page = ctx.new_page()
        page.goto(f"{installation.console_url}/pads/{private}")   # no cookie: refused before any name
        page.wait_for_function("document.getElementById('join-message').textContent.includes('private')")
        assert page.evaluate("window.padState.ytext") is None
        # playback and history need an account that sees the pad
        page.goto(f"{installation.console_url}/pads/{private}/playback")
        page.wait_for_function("document.getElementById('playback-status').textContent.length > 0")
        assert "secret" not in page.inner_text("body")

        ended = new_pad(api, contents="final answer\n")
        assert api.put(f"/api/pads/{ended}", form={"ended": "true"}).status == 200
        g = open_pad(ctx, installation, ended, guest="Late Guest")
        g.wait_for_function("window.padState.readonly === true")
        assert text(g) == "final answer\n"
        assert g.get_attribute(".cm-content", "contenteditable") == "false"
        g.click(".cm-content")
        g.keyboard.type("vandalism")
        time.sleep(1)
        assert text(g) == "final answer\n" and g.is_disabled("#run")
    finally:
        ctx.close()
    assert api.get(f"/api/pads/{ended}").json()["contents"] == "final answer\n"


@pytest.mark.vm
def test_a_run_from_one_page_shows_in_both(browser, vm_site):  # noqa: F811
    installation = vm_site
    api, cookie = login(vm_site, "Olga Owner")
    pad = new_pad(api, contents="print(input() * 2)\n")
    url = api.get(f"/api/pads/{pad}").json()["url"]
    assert url == f"{installation.console_url}/pads/{pad}"   # the API's link opens the page
    owner_ctx, guest_ctx = context(browser, installation, cookie), context(browser, installation)
    try:
        a = open_pad(owner_ctx, installation, pad, url=url)
        b = open_pad(guest_ctx, installation, pad, guest="Runner Guest", url=url)
        b.fill("#stdin", "ab")
        b.click("#run")
        for pg in (a, b):
            pg.wait_for_function("document.getElementById('output').dataset.done", timeout=300000)
            assert pg.inner_text("#output").startswith("abab"), pg.inner_text("#output")
            assert "run by Runner Guest" in pg.inner_text("#output")
        a.wait_for_function("document.getElementById('events').textContent.includes('Runner Guest ran python3 code')")
    finally:
        owner_ctx.close()
        guest_ctx.close()
