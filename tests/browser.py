"""Browser tests: Debian's chromium driven by Playwright (PyPI), never a downloaded browser.

Use in a test module with `from .browser import browser, page  # noqa: F401` (pytest fixtures):
- `browser`: one headless chromium per test module (`/usr/bin/chromium`, or OPENHOSTING_CHROMIUM),
  installed by `tools/setup.sh --with-browser` (tools/test.sh passes it). Per module, not per session:
  Playwright's sync API keeps an asyncio loop running in the main thread while it is started, and
  later modules that run asyncio themselves (qemu.qmp's sync monitor, websockets clients) would meet
  "This event loop is already running".
- `page`: a fresh browser context and page per test (no cookies or storage shared between tests);
  the page's console messages and failed requests are collected in `page.openhosting_log`. When the
  test fails, a screenshot (`failure.png`) and that log (`browser.log`) are saved in the test's
  tmp_path, whose path the failure report then names.
- `save_screenshot(page, path)`: a screenshot on purpose (e.g. the proof that a console showed).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("OPENHOSTING_CHROMIUM", "/usr/bin/chromium")
# chromium's own sandbox needs user namespaces that root in a container may not have; the pages
# tested are our own.
LAUNCH_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]


# At most one Playwright (and chromium) at a time in the test process: a second sync_playwright() in
# the same thread fails ("Sync API inside the asyncio loop") while the first still runs.
_SHARED: dict = {"users": 0}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run tools/setup.sh --with-browser (tools/test.sh does)")
    if _SHARED["users"] == 0:
        _SHARED["pw"] = sync_playwright().start()
        _SHARED["chromium"] = _SHARED["pw"].chromium.launch(executable_path=CHROMIUM, headless=True,
                                                            args=LAUNCH_ARGS)
    _SHARED["users"] += 1
    try:
        yield _SHARED["chromium"]
    finally:
        _SHARED["users"] -= 1
        if _SHARED["users"] == 0:
            _SHARED.pop("chromium").close()
            _SHARED.pop("pw").stop()


@pytest.fixture
def page(browser, request, tmp_path):
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    pg = context.new_page()
    log: list[str] = []
    pg.on("console", lambda msg: log.append(f"console.{msg.type}: {msg.text}"))
    pg.on("pageerror", lambda exc: log.append(f"pageerror: {exc}"))
    pg.on("requestfailed", lambda req: log.append(f"requestfailed: {req.method} {req.url.split('#')[0]}"))
    pg.openhosting_log = log
    yield pg
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        try:
            pg.screenshot(path=str(tmp_path / "failure.png"))
        except Exception as exc:  # a crashed page: keep the log at least
            log.append(f"screenshot failed: {exc}")
        (tmp_path / "browser.log").write_text("\n".join(log) + "\n")
        print(f"browser screenshot and log: {tmp_path}")
    context.close()


def save_screenshot(pg, path: Path) -> Path:
    pg.screenshot(path=str(path))
    return path
