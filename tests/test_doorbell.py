"""The doorbells between API processes and the agent (controlplane/doorbell.py), and `Sandboxes.wait`
on top of them, on real sockets, real processes and an Alembic-migrated SQLite database. No VM."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import update

from controlplane.config import Settings
from controlplane.db import Database, upgrade
from controlplane.doorbell import SUFFIX, Waiters, ringer
from controlplane.errors import NotFound
from controlplane.models import Sandbox
from controlplane.services.accounts import Accounts
from controlplane.services.sandboxes import Sandboxes
from storage.uploads import UploadStore

from .support import ROOT

PROMPT = 2.0  # "at once", loosely: a ring that works takes milliseconds


@pytest.fixture
def bells():
    """A directory for waiter sockets with a short path (a Unix socket path has at most 107 bytes;
    pytest's tmp_path can be longer)."""
    top = Path(tempfile.mkdtemp(prefix="bell-", dir="/tmp"))
    yield top / "waiters"
    shutil.rmtree(top, ignore_errors=True)


def sockets(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX)) if directory.exists() else []


# ---- the doorbell alone ----------------------------------------------------------------------------

def test_ring_without_listeners_is_a_no_op(bells):
    ring = ringer(bells)
    ring("0123456789abcdef")  # no directory at all
    assert not bells.exists()
    bells.mkdir()
    (bells / "not-a-socket.txt").write_text("x")
    ring("0123456789abcdef")  # an empty directory (and a stray file it must not touch)
    assert os.listdir(bells) == ["not-a-socket.txt"]


def test_listener_gets_its_id(bells):
    waiters = Waiters(bells)
    mine, other = waiters.register("aaaa"), waiters.register("bbbb")
    assert len(sockets(bells)) == 1
    assert oct(bells.stat().st_mode & 0o777) == oct(0o700)
    ringer(bells)("aaaa")
    assert mine.wait(PROMPT)
    time.sleep(0.1)
    assert not other.is_set()
    waiters.unregister("aaaa", mine)
    waiters.unregister("bbbb", other)
    assert waiters._events == {}


def test_every_waiter_of_one_id_is_woken_and_unregistered_ones_are_not(bells):
    waiters = Waiters(bells)
    first, second, gone = (waiters.register("cafe") for _ in range(3))
    waiters.unregister("cafe", gone)
    ringer(bells)("cafe")
    assert first.wait(PROMPT) and second.wait(PROMPT)
    time.sleep(0.1)
    assert not gone.is_set()


def test_stale_socket_is_removed_and_live_one_still_rung(bells):
    bells.mkdir(mode=0o700)
    stale = bells / f"999999-dead{SUFFIX}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dead:
        dead.bind(str(stale))  # bound, then closed: what a killed API process leaves
    assert stale.exists()
    waiters = Waiters(bells)
    event = waiters.register("beef")
    ringer(bells)("beef")
    assert not stale.exists()
    assert event.wait(PROMPT)
    assert len(sockets(bells)) == 1


def test_many_ids_rung_concurrently(bells):
    waiters = Waiters(bells)
    ids = [f"{i:016x}" for i in range(400)]
    events = {i: waiters.register(i) for i in ids}
    ring = ringer(bells)
    threads = [threading.Thread(target=lambda part: [ring(i) for i in part], args=(ids[k::8],))
               for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + PROMPT
    missed = [i for i, e in events.items() if not e.wait(max(0.0, deadline - time.monotonic()))]
    assert missed == []


def _child(directory: Path, waiters: Waiters, ready, result) -> None:
    event = waiters.register("f00d")  # the parent's socket is not this process's: it makes its own
    ready.set()
    result.put((os.getpid(), event.wait(PROMPT * 5)))


def test_forked_child_gets_its_own_socket(bells):
    waiters = Waiters(bells)
    parent_event = waiters.register("f00d")
    context = multiprocessing.get_context("fork")
    ready, result = context.Event(), context.Queue()
    child = context.Process(target=_child, args=(bells, waiters, ready, result))
    child.start()
    try:
        assert ready.wait(10)
        names = sockets(bells)
        assert len(names) == 2 and any(n.startswith(f"{child.pid}-") for n in names), names
        ringer(bells)("f00d")
        assert result.get(timeout=15) == (child.pid, True)
        assert parent_event.wait(PROMPT)
    finally:
        child.join(10)
    # multiprocessing's children leave with os._exit (no atexit): the next ring clears the socket.
    ringer(bells)("0000")
    assert len(sockets(bells)) == 1


def test_socket_removed_when_the_process_exits(bells):
    script = ("import sys; from pathlib import Path; from controlplane.doorbell import Waiters; "
              "Waiters(Path(sys.argv[1])).register('abcd'); print('bound')")
    out = subprocess.run([sys.executable, "-c", script, str(bells)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "bound", out.stderr
    assert bells.is_dir() and sockets(bells) == []


def test_unusable_directory_means_polling_not_an_error(bells):
    bells.parent.joinpath("file").write_text("x")
    waiters = Waiters(bells.parent / "file" / "waiters")  # cannot be made
    event = waiters.register("abcd")
    assert not event.is_set()
    waiters.unregister("abcd", event)
    ringer(bells.parent / "file" / "waiters")("abcd")


# ---- Sandboxes.wait on a real database --------------------------------------------------------------

@pytest.fixture
def site(tmp_path):
    settings = Settings(state_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/openhosting.db")
    upgrade(settings)
    db = Database(settings)
    user, _ = Accounts(db).create("waiter")
    yield settings, db, user
    db.dispose()


def new_sandbox(db: Database, user: str) -> str:
    sandbox_id = os.urandom(8).hex()
    with db.session() as s:
        s.add(Sandbox(id=sandbox_id, owner=user, image="base", cmd='["true"]', timeout=10, status="running"))
    return sandbox_id


def later(seconds: float, action) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), action()), daemon=True)
    thread.start()
    return thread


def test_wait_falls_back_to_polling_without_any_ring(site):
    settings, db, user = site
    sandboxes = Sandboxes(db, settings, UploadStore(settings.state_dir / "uploads"))
    sandbox_id = new_sandbox(db, user)

    def behind_its_back():
        with db.session() as s:
            s.execute(update(Sandbox).where(Sandbox.id == sandbox_id).values(status="terminated", return_code=3))

    later(0.3, behind_its_back)
    start = time.monotonic()
    box = sandboxes.wait(user, sandbox_id, start + 60)
    assert box["status"] == "terminated" and box["return_code"] == 3
    assert time.monotonic() - start < 0.3 + PROMPT
    assert sandboxes.waiters._events == {}


def test_wait_is_woken_by_the_agents_ring(site, bells):
    settings, db, user = site
    uploads = UploadStore(settings.state_dir / "uploads")
    # The fallback is a minute: only the ring can end this wait in time.
    api = Sandboxes(db, settings, uploads, waiters=Waiters(bells), poll=60)
    agent = Sandboxes(Database(settings), settings, uploads, finished=ringer(bells))
    sandbox_id = new_sandbox(db, user)
    later(0.3, lambda: agent.finish(sandbox_id, return_code=0, output=b"hi\n", timed_out=False,
                                    truncated=False, killed=False))
    start = time.monotonic()
    box = api.wait(user, sandbox_id, start + 60)
    assert box["status"] == "terminated" and box["logs"] == "hi\n"
    assert time.monotonic() - start < 0.3 + PROMPT
    assert api.waiters._events == {}
    agent.db.dispose()


def test_wait_returns_the_running_sandbox_at_the_deadline(site, bells):
    settings, db, user = site
    sandboxes = Sandboxes(db, settings, UploadStore(settings.state_dir / "uploads"), waiters=Waiters(bells))
    sandbox_id = new_sandbox(db, user)
    start = time.monotonic()
    assert sandboxes.wait(user, sandbox_id, start + 0.3)["status"] == "running"
    assert 0.3 <= time.monotonic() - start < 0.3 + PROMPT
    with pytest.raises(NotFound):
        sandboxes.wait("someone-else", sandbox_id, time.monotonic() + 5)
    assert sandboxes.waiters._events == {}


def test_bell_wakes_every_waiter_once_per_ring():
    """The agent's workers and the submission dispatcher share one Bell: one ring wakes all of
    them (a shared Event cleared by the first hid it from the rest), a ring before `wait` is not
    lost, and without a ring `wait` ends False after its timeout."""
    from controlplane.doorbell import Bell

    bell = Bell()
    seen = bell.seen()
    assert bell.wait(seen, 0.05) is False
    woken = []
    ready = threading.Barrier(6)

    def waiter(i):
        mark = bell.seen()
        ready.wait()
        woken.append((i, bell.wait(mark, 30)))

    threads = [threading.Thread(target=waiter, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    ready.wait()
    bell.ring()
    for t in threads:
        t.join(30)
    assert sorted(woken) == [(i, True) for i in range(5)]
    seen = bell.seen()
    bell.set()                           # rung between looking for work and waiting: not missed
    assert bell.wait(seen, 30) is True
