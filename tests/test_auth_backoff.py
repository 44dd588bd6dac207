"""Backoff after failed authentication (controlplane/services/throttle.py), through HTTP.

Clients connect from different loopback addresses (127.0.0.2, 127.0.0.3, …: all of 127/8 is local)
so that the address the server sees differs per test client. No timing asserts: the windows are
read back from the log lines the server writes, and "a correct key still works" is a status.
"""

from __future__ import annotations

import base64
import http.client
import re
import sqlite3
import time
import uuid

import pytest

from .support import Response

SMALL = {"OPENHOSTING_AUTH_FREE_FAILURES": "2", "OPENHOSTING_AUTH_BACKOFF_BASE": "0.2",
         "OPENHOSTING_AUTH_BACKOFF_MAX": "0.8", "OPENHOSTING_AUTH_USER_BACKOFF_MAX": "0.4"}


def call(inst, source: str, user: str, secret: str, path: str = "/drives/list") -> Response:
    token = base64.b64encode(f"{user}:{secret}".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", inst.port, timeout=60, source_address=(source, 0))
    try:
        conn.request("GET", path, headers={"Authorization": f"Basic {token}"})
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def waits(inst, address: str) -> list[float]:
    text = (inst.state_dir / "api.log").read_text()
    return [float(w) for w in re.findall(rf"authentication failed from {re.escape(address)} .*? wait ([\d.]+) s",
                                         text)]


@pytest.fixture
def site(fresh_installation):
    return fresh_installation(**SMALL)


def test_failures_back_off_per_address_and_a_correct_key_still_works(site):
    alice, bob = site.create_user("alice"), site.create_user("bob")
    wrong = "not-the-key-" + uuid.uuid4().hex
    for _ in range(6):
        r = call(site, "127.0.0.2", alice.uuid, wrong)
        # the face's normal 401, every time
        assert (r.status, r.error) == (401, "auth") and "www-authenticate" in r.headers
    # free failures cost nothing, then the window doubles up to its cap
    assert waits(site, "127.0.0.2") == [0.0, 0.0, 0.2, 0.4, 0.8, 0.8]
    # the correct key works from the same address (after the window) and from another one
    assert call(site, "127.0.0.2", alice.uuid, alice.secret).status == 200
    assert call(site, "127.0.0.3", alice.uuid, alice.secret).status == 200
    # other users and addresses are not affected
    assert call(site, "127.0.0.1", bob.uuid, bob.secret).status == 200
    # logged, never with a secret
    log = (site.state_dir / "api.log").read_text()
    assert f"authentication failed from 127.0.0.2 for user {alice.uuid}" in log
    assert wrong not in log and alice.secret not in log and bob.secret not in log


def test_per_user_backoff_is_short_and_cleared_by_a_correct_key(site):
    alice = site.create_user("alice")
    # one failure each from many addresses: no address reaches its free failures, the user id does
    for i in range(6):
        assert call(site, f"127.0.1.{i + 1}", alice.uuid, "wrong").status == 401
    user_waits = [float(w) for w in re.findall(rf"for user {alice.uuid}: .*? wait ([\d.]+) s",
                                               (site.state_dir / "api.log").read_text())]
    assert user_waits == [0.0, 0.0, 0.2, 0.4, 0.4, 0.4]     # capped at the user's short maximum
    assert call(site, "127.0.2.1", alice.uuid, alice.secret).status == 200
    # the success cleared the user id's count: the next failure from a new address is free again
    assert call(site, "127.0.2.2", alice.uuid, "wrong").status == 401
    assert waits(site, "127.0.2.2") == [0.0]


def test_unchecked_refusal_inside_a_window_then_the_key_works(fresh_installation):
    # max_waiting 0: inside a window, attempts are refused at once without checking (a long window
    # here, so that the next request falls inside it even on a loaded machine)
    site = fresh_installation(OPENHOSTING_AUTH_FREE_FAILURES="0", OPENHOSTING_AUTH_BACKOFF_BASE="15",
                              OPENHOSTING_AUTH_BACKOFF_MAX="15", OPENHOSTING_AUTH_USER_BACKOFF_MAX="15",
                              OPENHOSTING_AUTH_BACKOFF_WAITING="0")
    alice = site.create_user("alice")
    assert call(site, "127.0.0.4", alice.uuid, "wrong").status == 401
    r = call(site, "127.0.0.4", alice.uuid, alice.secret)
    assert (r.status, r.error) == (401, "auth") and "try again" in r.text
    # after the window the same key gets in (polled: no timing assumption)

    deadline = time.monotonic() + 120
    while (r := call(site, "127.0.0.4", alice.uuid, alice.secret)).status != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert r.status == 200


def test_state_is_bounded(fresh_installation):
    site = fresh_installation(OPENHOSTING_AUTH_BACKOFF_ENTRIES="20")
    for i in range(30):
        assert call(site, f"127.0.3.{i + 1}", str(uuid.uuid4()), "wrong").status == 401
    with sqlite3.connect(site.state_dir / "run" / "auth-failures.sqlite") as db:
        assert db.execute("SELECT count(*) FROM failures").fetchone()[0] <= 20
