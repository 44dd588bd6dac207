"""Doorbells between the API processes and the agent, over Unix datagram sockets; best effort both ways.

- API → agent, "a job is waiting": `notifier(path)` rings, the agent `listen`s on `path`. The agent also
  polls the job table, so a lost nudge costs one poll interval, never a job.
- agent → API, "sandbox X finished": every API process that waits for a sandbox binds one socket in a
  shared directory (`Waiters`); the agent's `ringer(directory)` sends the id to each of them. A waiter
  re-reads the database anyway every few hundred milliseconds, so a lost ring (or an agent on another
  host sharing a PostgreSQL database) costs at most that, never a wrong answer.

Nothing here raises into its caller: a doorbell that cannot be rung or built is logged and ignored.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import socket
import struct
import threading
from pathlib import Path
from typing import Callable

log = logging.getLogger("openhosting.doorbell")

SUFFIX = ".sock"
# A receiver's queue holds only net.unix.max_dgram_qlen datagrams (10 by default). When it is full a
# ring waits at most this long (in the kernel, woken as soon as the receiving thread reads), then
# drops the ring for that receiver.
FULL_WAIT = struct.pack("ll", 0, 20_000)  # struct timeval: 20 ms


# ---- API → agent: "a job is waiting" --------------------------------------------------------------

def notifier(path: Path) -> Callable[[], None]:
    """A function that nudges the agent listening on `path`; never raises."""

    def notify() -> None:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(b"!", str(path))
        except OSError:
            pass

    return notify


class Bell:
    """Wakes every thread waiting on it, each exactly once per ring. (A shared `threading.Event` that
    each waker clears hides a ring from the threads that wake after the first one.) `set` rings, so
    `listen` takes a Bell or an Event."""

    def __init__(self):
        self._cond = threading.Condition()
        self._rings = 0

    def set(self) -> None:
        with self._cond:
            self._rings += 1
            self._cond.notify_all()

    ring = set

    def seen(self) -> int:
        """Pass this to `wait`, taken before looking for work, so a ring meanwhile is not missed."""
        return self._rings

    def wait(self, seen: int, timeout: float) -> bool:
        """True when it rang since `seen`, False after `timeout` seconds without a ring."""
        with self._cond:
            return self._cond.wait_for(lambda: self._rings != seen, timeout)


def listen(path: Path, wake) -> threading.Thread:
    """Receive nudges on `path` and `set` `wake` (a Bell or an Event) for each; runs on a daemon thread."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)

    def loop() -> None:
        while True:
            try:
                sock.recv(64)
            except OSError:
                return
            wake.set()

    thread = threading.Thread(target=loop, name="agent-wakeup", daemon=True)
    thread.start()
    return thread


# ---- agent → API: "sandbox X finished" ------------------------------------------------------------

class Waiters:
    """This process's registry of threads waiting for a sandbox, and the socket that wakes them.

    `register(id)` returns a fresh `threading.Event` that is set when a ring for `id` arrives; pass it
    back to `unregister`. The socket (`<directory>/<pid>-<random>.sock`) and its receiving thread are
    made on the first `register` in each process, so a gunicorn worker makes its own after the fork.
    With `directory` None, or when the socket cannot be made, events are never set: callers must poll.
    """

    def __init__(self, directory: Path | None):
        self.directory = directory
        self._lock = threading.Lock()
        self._events: dict[str, set[threading.Event]] = {}
        self._pid: int | None = None  # the process the socket below belongs to

    def register(self, sandbox_id: str) -> threading.Event:
        event = threading.Event()
        self._ensure_listener()
        with self._lock:
            self._events.setdefault(sandbox_id, set()).add(event)
        return event

    def unregister(self, sandbox_id: str, event: threading.Event) -> None:
        with self._lock:
            events = self._events.get(sandbox_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._events[sandbox_id]

    def wake(self, sandbox_id: str) -> None:
        """Set every event registered for `sandbox_id` in this process (what a received ring does)."""
        with self._lock:
            for event in self._events.get(sandbox_id, ()):
                event.set()

    def _ensure_listener(self) -> None:
        pid = os.getpid()
        if self._pid == pid or self.directory is None:
            return
        with self._lock:
            if self._pid == pid:
                return
            if self._pid is not None:
                # A forked child: the parent's registrations and socket are not ours.
                self._events = {}
            self._pid = pid
            try:
                path = self._bind(pid)
            except OSError as exc:
                log.warning("cannot make the sandbox doorbell in %s (%s); waits fall back to polling",
                            self.directory, exc)
                return
            atexit.register(_remove, path, pid)

    def _bind(self, pid: int) -> Path:
        """Bind this process's socket and start its receiving thread. The socket is bound under a
        temporary name and renamed into place: between bind's mknod and the bind itself a ringer would
        be refused and take the file for a dead process's."""
        directory = self.directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        name = f"{pid}-{secrets.token_hex(4)}"
        temporary, path = directory / f"{name}.new", directory / f"{name}{SUFFIX}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(str(temporary))
            os.chmod(temporary, 0o600)
            os.rename(temporary, path)
        except OSError:
            sock.close()
            _unlink(temporary)
            raise

        def loop() -> None:
            while True:
                try:
                    data = sock.recv(256)
                except OSError:
                    log.exception("the sandbox doorbell stopped; waits fall back to polling")
                    return
                self.wake(data.decode("ascii", errors="replace"))

        threading.Thread(target=loop, name="sandbox-doorbell", daemon=True).start()
        return path


def ringer(directory: Path) -> Callable[[str], None]:
    """A function that tells every API process waiting in `directory` that a sandbox finished.

    It never raises and never blocks for long: a receiver whose queue stays full for 20 ms (a hung API
    process) loses the ring. Sockets nobody is bound to any more (a dead API process) are removed. With
    nobody waiting it costs one directory listing."""

    def ring(sandbox_id: str) -> None:
        try:
            names = [n for n in os.listdir(directory) if n.endswith(SUFFIX)]
        except OSError:
            return
        if not names:
            return
        data = sandbox_id.encode("ascii", errors="replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, FULL_WAIT)
                for name in names:
                    _send(sock, data, os.path.join(directory, name))
        except OSError as exc:
            log.warning("ringing sandbox waiters in %s failed: %s", directory, exc)

    return ring


def _send(sock: socket.socket, data: bytes, path: str) -> None:
    try:
        sock.sendto(data, path)
    except (ConnectionRefusedError, FileNotFoundError):
        _unlink(path)  # nobody is bound to it: its API process is gone
    except OSError:
        pass  # full for too long (EAGAIN), or not ours to write (EACCES): the waiter's poll covers it


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _remove(path: Path, pid: int) -> None:
    # atexit handlers are inherited across fork(); only the process that bound the socket removes it.
    if os.getpid() == pid:
        _unlink(path)
