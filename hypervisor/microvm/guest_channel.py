"""The host end of oh-guest's port: `GuestChannel` (protocol in `guestd`).

One `GuestChannel` owns one connected stream socket (the Unix socket libvirt made for the VM's
``org.openhosting.guest`` port, or a socketpair in tests). It is thread-safe: any number of threads
may run operations at once, each on its own channel. One reader thread demultiplexes the guest's
frames into per-channel queues; it never blocks on a consumer, because the guest only sends what a
channel's credit allows, and a consumer returns credit as it takes data. Writes to the socket are
serialised by a lock, one whole frame at a time.
"""

from __future__ import annotations

import collections
import os
import secrets
import select
import socket
import threading
import time

from . import guestd
from .guestd import (CLOSE, CREDIT, DATA, END, ERROR, HEAD, HELLO, MAGIC, MAX_PAYLOAD, NOP, OK, OPEN,
                     STDERR, WINDOW, GuestError, GuestGone, GuestProtocolError, GuestTimeout, error_from,
                     frame, parse_records, records)
from .guest_ops import GuestOps


class _Chan:
    """One channel's queue of guest frames and its send credit; all under ``cond``."""

    def __init__(self, owner: GuestChannel, cid: int):
        self.owner, self.id = owner, cid
        self.cond = threading.Condition()
        self.events: collections.deque = collections.deque()
        self.credit = WINDOW            # what we may still send
        self.consumed = 0               # taken from the queue, not yet returned as credit
        self.ended = False              # END or ERROR arrived (or the connection died)

    def push(self, kind: int, payload: bytes) -> None:
        with self.cond:
            if kind == CREDIT:
                self.credit += int.from_bytes(payload[:4], "big")
            else:
                self.events.append((kind, payload))
                if kind in (END, ERROR):
                    self.ended = True
            self.cond.notify_all()

    def next(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """The next frame (kind, payload), None at ``timeout``; returns credit for data taken."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while not self.events:
                if self.owner.dead is not None:
                    raise GuestGone(reason=self.owner.dead)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self.cond.wait(left)
            kind, payload = self.events.popleft()
            if kind in (DATA, STDERR):
                self.consumed += len(payload)
                give, self.consumed = (self.consumed, 0) if self.consumed >= WINDOW // 4 else (0, self.consumed)
            else:
                give = 0
        if give and not self.ended:
            self.owner.send(CREDIT, self.id, give.to_bytes(4, "big"))
        if kind in (END, ERROR):
            self.owner.forget(self)
        return kind, payload

    def expect_start(self, timeout: float | None) -> dict[str, str]:
        """Wait for OK (its records) or END; ERROR raises."""
        got = self.next(timeout)
        if got is None:
            self.cancel()
            raise GuestTimeout(timeout=timeout, what="the start of an operation")
        kind, payload = got
        if kind == ERROR:
            raise error_from(payload)
        if kind not in (OK, END):
            raise GuestProtocolError(reason=f"frame {kind} before the operation started")
        return parse_records(payload)

    def finish(self, timeout: float | None = None) -> dict[str, str]:
        """Skip to END (its records); ERROR raises."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            got = self.next(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if got is None:
                raise GuestTimeout(timeout=timeout, what="the end of an operation")
            kind, payload = got
            if kind == END:
                return parse_records(payload)
            if kind == ERROR:
                raise error_from(payload)

    def write(self, data: bytes, timeout: float | None = None) -> None:
        """Send ``data`` as DATA frames against the guest's credit (blocks while it has none).
        Stops silently when the channel ended (the caller then reads the END or ERROR)."""
        view = memoryview(data)
        deadline = None if timeout is None else time.monotonic() + timeout
        while view:
            with self.cond:
                while self.credit <= 0 and not self.ended and self.owner.dead is None:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise GuestTimeout(timeout=timeout, what="credit to send input")
                    self.cond.wait(left)
                if self.owner.dead is not None:
                    raise GuestGone(reason=self.owner.dead)
                if self.ended:
                    return
                n = min(len(view), self.credit, MAX_PAYLOAD)
                self.credit -= n
            self.owner.send(DATA, self.id, bytes(view[:n]))
            view = view[n:]

    def cancel(self) -> None:
        if not self.ended and self.owner.dead is None:
            try:
                self.owner.send(CLOSE, self.id)
            except GuestGone:
                pass


class GuestChannel(GuestOps):
    """A connection to oh-guest. ``connect(path)`` for a VM's port socket, or wrap a connected
    socket. Operations are in `GuestOps`; errors are `guestd.GuestError` subclasses."""

    def __init__(self, sock: socket.socket, *, hello_timeout: float = 10.0):
        self.sock = sock
        self.sock.setblocking(True)
        self.dead: str | None = None
        self._wlock = threading.Lock()
        self._lock = threading.Lock()
        self._chans: dict[int, _Chan] = {}
        self._next_id = 1
        rest = self._hello(hello_timeout)
        self._reader = threading.Thread(target=self._read_loop, args=(rest,), name="guest-channel", daemon=True)
        self._reader.start()

    @classmethod
    def connect(cls, path: str, *, hello_timeout: float = 10.0) -> GuestChannel:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(path)
            return cls(sock, hello_timeout=hello_timeout)
        except BaseException:
            sock.close()
            raise

    def close(self) -> None:
        if self.dead is None:
            self._die("closed by the host")
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self._reader is not threading.current_thread():
            self._reader.join(timeout=5)

    def __enter__(self) -> GuestChannel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- plumbing ------------------------------------------------------------------------------

    def send(self, kind: int, cid: int, payload: bytes = b"") -> None:
        data = frame(kind, cid, payload)
        with self._wlock:
            if self.dead is not None:
                raise GuestGone(reason=self.dead)
            try:
                self.sock.sendall(data)
            except OSError as exc:
                raise GuestGone(reason=str(exc)) from exc

    def open(self, op: str, pairs) -> _Chan:
        payload = records([("op", op), *pairs])
        if len(payload) > MAX_PAYLOAD:
            raise guestd.GuestBadRequest(reason=f"the request is {len(payload)} bytes, more than {MAX_PAYLOAD}")
        with self._lock:
            if self.dead is not None:
                raise GuestGone(reason=self.dead)
            cid = self._next_id
            self._next_id = self._next_id % 0xFFFFFFF0 + 1
            chan = self._chans[cid] = _Chan(self, cid)
        try:
            self.send(OPEN, cid, payload)
        except GuestGone:
            self.forget(chan)
            raise
        return chan

    def forget(self, chan: _Chan) -> None:
        with self._lock:
            self._chans.pop(chan.id, None)

    def _hello(self, timeout: float) -> bytes:
        """NOPs + HELLO until the guest echoes the latest one; the bytes that followed the echo."""
        deadline = time.monotonic() + timeout
        seen = b""
        while True:
            nonce = secrets.token_bytes(8)
            ack = frame(HELLO, 0, MAGIC + nonce)
            self.sock.sendall(bytes([NOP]) * (MAX_PAYLOAD + HEAD.size) + ack)
            resend = min(deadline, time.monotonic() + 1.0)
            while time.monotonic() < resend:
                ready, _, _ = select.select([self.sock], [], [], max(0.0, resend - time.monotonic()))
                if not ready:
                    continue
                data = self.sock.recv(65536)
                if not data:
                    raise GuestGone(reason="the port closed before oh-guest answered")
                seen = (seen + data)[-(1 << 20):]
                at = seen.find(ack)
                if at >= 0:
                    return seen[at + len(ack):]
            if time.monotonic() >= deadline:
                raise GuestTimeout(timeout=timeout, what="HELLO")

    def _read_loop(self, buf: bytes) -> None:
        """The reader thread: frames to channels; on the end of the stream every waiter wakes up."""
        buf = bytearray(buf)
        reason = "the port closed"
        try:
            while True:
                while len(buf) >= HEAD.size:
                    kind, cid, n = HEAD.unpack_from(buf)
                    if n > MAX_PAYLOAD or kind > ERROR:
                        raise GuestProtocolError(reason=f"frame type {kind}, length {n}")
                    if len(buf) < HEAD.size + n:
                        break
                    payload = bytes(buf[HEAD.size:HEAD.size + n])
                    del buf[:HEAD.size + n]
                    with self._lock:
                        chan = self._chans.get(cid)
                    if chan is not None and kind != HELLO:
                        chan.push(kind, payload)
                data = self.sock.recv(256 * 1024)
                if not data:
                    break
                buf += data
        except (OSError, GuestError) as exc:
            reason = str(exc)
        self._die(reason)

    def _die(self, reason: str) -> None:
        with self._lock:
            if self.dead is None:
                self.dead = reason
            chans = list(self._chans.values())
            self._chans.clear()
        for chan in chans:
            with chan.cond:
                chan.cond.notify_all()


def socketpair() -> tuple[socket.socket, socket.socket]:
    """A connected pair standing in for a VM's port (tests run oh-guest on the host with one end)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    os.set_inheritable(b.fileno(), True)
    return a, b
