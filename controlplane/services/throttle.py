"""Backoff after failed authentication, per client address and per user id.

Every failed attempt (credentials given and wrong) counts against the address it came from and, when
the user id is a UUID, against that user id. A key's first ``free`` failures cost nothing; each one
after that opens a penalty window of ``base`` seconds, doubling, at most ``address_cap`` for an
address and ``user_cap`` (short: 2 s by default) for a user id. A key's count is forgotten ``forget``
seconds after its last failure; a correct key clears the user id's count (not the address's).

The answer to an attempt made inside a window is a delay, not a refusal: the request waits until the
window ends, then its credentials are checked as usual, so a correct key always gets in, at most
``address_cap`` (or ``user_cap``) late. Waiting requests hold a server thread, so at most
``max_waiting`` of them wait at once per API process; beyond that, a request inside a window gets
the normal 401 at once, without its credentials being checked (``max_waiting=0`` makes that the
rule). An attacker therefore gets one guess per window per waiting slot, and can delay a real user
by at most ``user_cap`` per attempt, refuse it only while keeping every slot busy, never longer.

State: a small SQLite file in the run directory, so that every gunicorn worker (a process of its
own) sees the same counts without a schema change to the main database; it is host-local and
disposable (deleting it forgets the counts), and bounded to ``max_entries`` rows (the oldest go).
The client address is the TCP peer: behind a reverse proxy, that is the proxy (no forwarded-for
header is trusted). Failures are logged with the address, the user id (UUIDs only) and the wait,
never with the secret.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import Unauthorized
from .accounts import is_uuid

log = logging.getLogger("openhosting.auth")

_SCHEMA = """CREATE TABLE IF NOT EXISTS failures (
    key TEXT PRIMARY KEY, count INTEGER NOT NULL, last REAL NOT NULL, until REAL NOT NULL)"""


@dataclass(frozen=True)
class Policy:
    free: int = 5
    base: float = 0.5
    address_cap: float = 30.0
    user_cap: float = 2.0
    forget: float = 900.0
    max_entries: int = 10000
    max_waiting: int = 4

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Policy":
        env = os.environ if env is None else env

        def get(name: str, default, kind):
            value = env.get(f"OPENHOSTING_AUTH_{name}")
            return kind(value) if value not in (None, "") else default

        return cls(free=get("FREE_FAILURES", cls.free, int), base=get("BACKOFF_BASE", cls.base, float),
                   address_cap=get("BACKOFF_MAX", cls.address_cap, float),
                   user_cap=get("USER_BACKOFF_MAX", cls.user_cap, float),
                   forget=get("BACKOFF_FORGET", cls.forget, float),
                   max_entries=get("BACKOFF_ENTRIES", cls.max_entries, int),
                   max_waiting=get("BACKOFF_WAITING", cls.max_waiting, int))

    def penalty(self, count: int, cap: float) -> float:
        if count <= self.free:
            return 0.0
        return min(cap, self.base * 2 ** min(count - self.free - 1, 32))


class AuthThrottle:
    def __init__(self, path: Path, policy: Policy | None = None, *, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.policy = policy or Policy()
        self.clock = clock
        self._local = threading.local()
        self._slots = threading.BoundedSemaphore(max(self.policy.max_waiting, 1))

    @classmethod
    def for_settings(cls, settings) -> "AuthThrottle":
        return cls(settings.run_dir / "auth-failures.sqlite", Policy.from_env())

    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")     # losing the last counts in a crash is harmless
            conn.execute(_SCHEMA)
            self._local.conn = conn
        return conn

    @staticmethod
    def _keys(address: str, user_id: str) -> list[str]:
        keys = [f"addr:{address}"]
        if is_uuid(user_id):
            keys.append(f"user:{user_id.lower()}")
        return keys

    def wait(self, address: str, user_id: str) -> tuple[float, bool]:
        """Seconds until both windows end, and whether the user id has failures on record."""
        keys = self._keys(address, user_id)
        rows = self._db().execute(f"SELECT key, until FROM failures WHERE key IN ({','.join('?' * len(keys))})",
                                  keys).fetchall()
        now = self.clock()
        wait = max((until - now for _, until in rows), default=0.0)
        return max(wait, 0.0), any(key.startswith("user:") for key, _ in rows)

    def failed(self, address: str, user_id: str) -> float:
        """Count one failure against the address (and user id); returns the new wait."""
        now = self.clock()
        db = self._db()
        waits = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for key in self._keys(address, user_id):
                row = db.execute("SELECT count, last FROM failures WHERE key = ?", (key,)).fetchone()
                count = 1 if row is None or now - row[1] > self.policy.forget else row[0] + 1
                cap = self.policy.user_cap if key.startswith("user:") else self.policy.address_cap
                penalty = self.policy.penalty(count, cap)
                db.execute("INSERT INTO failures (key, count, last, until) VALUES (?, ?, ?, ?) "
                           "ON CONFLICT(key) DO UPDATE SET count = excluded.count, last = excluded.last, "
                           "until = excluded.until", (key, count, now, now + penalty))
                waits.append((key, count, penalty))
            self._prune(db, now)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        (_, count, penalty) = waits[0]
        user = user_id.lower() if is_uuid(user_id) else "(not a user id)"
        wait = max(p for _, _, p in waits)
        log.warning("authentication failed from %s for user %s: failure %d from this address; "
                    "next attempts wait %.1f s", address, user, count, wait)
        return wait

    def _prune(self, db: sqlite3.Connection, now: float) -> None:
        db.execute("DELETE FROM failures WHERE last < ?", (now - self.policy.forget,))
        excess = db.execute("SELECT count(*) FROM failures").fetchone()[0] - self.policy.max_entries
        if excess > 0:
            db.execute("DELETE FROM failures WHERE key IN (SELECT key FROM failures ORDER BY last LIMIT ?)",
                       (excess,))

    def succeeded(self, user_id: str) -> None:
        self._db().execute("DELETE FROM failures WHERE key = ?", (f"user:{user_id.lower()}",))

    def authenticate(self, address: str, user_id: str, secret: str, verify: Callable[[str, str], str]) -> str:
        """``verify(user_id, secret)`` behind the backoff: the one call the authentication middleware
        makes. Returns what ``verify`` returns; raises Unauthorized like it."""
        address = address or "unknown"
        wait, user_on_record = self.wait(address, user_id)
        if wait > 0:
            if self.policy.max_waiting <= 0 or not self._slots.acquire(blocking=False):
                log.warning("authentication from %s refused unchecked: inside a backoff window (%.1f s left)",
                            address, wait)
                raise Unauthorized("too many failed authentication attempts; try again in {seconds} s",
                                   seconds=max(1, round(wait)))
            try:
                time.sleep(wait)
            finally:
                self._slots.release()
        try:
            user = verify(user_id, secret)
        except Unauthorized:
            self.failed(address, user_id)
            raise
        if user_on_record:
            self.succeeded(user)
        return user
