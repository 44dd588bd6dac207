"""The host side of ``oh-run``'s protocol (guest/oh-run.c) on the VM's virtio-serial port RUN_CHANNEL.

A served run's request is a series of records ``<T><name length> <data length>\\n<name><data>``:
``H`` (``SECONDS NANOSECONDS SEED_HEX LIMIT``), ``F`` files, one ``C`` (the command) and ``E`` (the
end). oh-run answers ``A\\n`` once it has the request, ``O<length>\\n<bytes>`` output frames and
``X<status>\\n``. In one-shot mode (started through the guest agent) the same ``F`` and ``C`` records
travel on its stdin and it only rings the port (``done N``) when the run ends.

Also here: `build`, the guest-program registry entry of oh-run (`programs.PROGRAMS`), and the
socket helpers every guest port uses (`connect`, `readable`, `send_all`, `drain`).
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from pathlib import Path

from ..errors import HypervisorError
from ..guest import Guest
from . import build as builder
from .image import GUEST_COMMAND, GUEST_CONTROL, GUEST_OUTPUT, GUEST_WORKDIR

log = logging.getLogger("openhosting.hypervisor.microvm")

#: The virtio-serial port oh-run serves runs on; in one-shot mode it only rings the host there
#: when a run ends.
RUN_CHANNEL = "org.openhosting.run"
#: Where the template puts oh-run in the guest.
GUEST_HELPER = f"{GUEST_CONTROL}/oh-run"
SOURCE = builder.SOURCES / "oh-run.c"


def build(cache_dir: Path) -> tuple[Path, list[str]] | None:
    """oh-run for the template: the host-built binary and the argv that serves runs on RUN_CHANNEL
    (argv[0]: where the binary goes in the guest); None without a C compiler."""
    binary = builder.compile_static(SOURCE, cache_dir)
    if binary is None:
        return None
    return binary, [GUEST_HELPER, "--serve", RUN_CHANNEL, GUEST_WORKDIR, GUEST_COMMAND, GUEST_OUTPUT]


def record(kind: bytes, name: str, data: bytes) -> bytes:
    """One record of oh-run's input: kind, name length, data length, name, data."""
    raw = name.encode()
    return kind + f"{len(raw)} {len(data)}\n".encode() + raw + bytes(data)


class Garbled(Exception):
    """oh-run's reply on the port does not follow its framing."""


class Reply:
    """oh-run's reply to a served run, parsed as it arrives: ``A``, ``O<n>`` frames, ``X<status>``.
    Keeps at most cap + 1 bytes of output (one more than the cap tells that it was exceeded)."""

    def __init__(self, cap: int):
        self.keep = cap + 1
        self.buffer = bytearray()
        self.output = bytearray()
        self.acked = False
        self.status: int | None = None
        self.closed = False

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while self.buffer and self.status is None:
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > 32:
                    raise Garbled(f"no frame header in {bytes(self.buffer[:32])!r}")
                return
            kind, value = self.buffer[:1], self.buffer[1:end]
            if kind == b"A" and not value:
                self.acked = True
                del self.buffer[:end + 1]
            elif kind == b"O" and value.isdigit():
                size = int(value)
                if len(self.buffer) < end + 1 + size:
                    return
                room = max(0, self.keep - len(self.output))
                self.output += self.buffer[end + 1:end + 1 + min(size, room)]
                del self.buffer[:end + 1 + size]
            elif kind == b"X" and value.lstrip(b"-").isdigit():
                self.status = int(value)
                del self.buffer[:end + 1]
            else:
                raise Garbled(f"unknown frame {bytes(self.buffer[:end][:32])!r}")


def receive(port: socket.socket, reply: Reply, until: float, cancel: threading.Event | None) -> bool:
    """Feed what arrives on ``port`` to ``reply``; False at ``until``, on ``cancel`` or at the end of
    the stream (``reply.closed``)."""
    while readable(port, until, cancel):
        try:
            data = port.recv(256 * 1024)
        except BlockingIOError:
            continue
        if not data:
            reply.closed = True
            return False
        reply.feed(data)
        return True
    return False


def readable(sock: socket.socket, until: float, cancel: threading.Event | None) -> bool:
    """True once ``sock`` has something to read (or its end); False at ``until`` or on ``cancel``
    (looked at every 50 ms)."""
    while True:
        left = until - time.monotonic()
        if left <= 0 or (cancel is not None and cancel.is_set()):
            return False
        ready, _, _ = select.select([sock], [], [], min(left, 0.05) if cancel is not None else left)
        if ready:
            return True


def send_all(port: socket.socket, data: bytes, until: float, cancel: threading.Event | None) -> None:
    """Write all of ``data`` to the non-blocking ``port`` by ``until`` (else TimeoutError)."""
    view = memoryview(data)
    while view:
        left = until - time.monotonic()
        if left <= 0 or (cancel is not None and cancel.is_set()):
            raise TimeoutError("the request did not go through in time")
        _, ready, _ = select.select([], [port], [], min(left, 0.05))
        if not ready:
            continue
        try:
            view = view[port.send(view):]
        except BlockingIOError:
            continue


def drain(bell: socket.socket) -> bool | None:
    """Read what is waiting on the port: True when something was, False when nothing, None at EOF."""
    got = False
    while True:
        try:
            data = bell.recv(4096)
        except BlockingIOError:
            return got
        except OSError:
            return None
        if not data:
            return None
        got = True


def wait_bell(bell: socket.socket, until: float, cancel: threading.Event | None) -> bool | None:
    """True once the bell rang (what it said is drained), False at ``until`` or on ``cancel``,
    None when the port closed (the VM is going away)."""
    while readable(bell, until, cancel):
        rang = drain(bell)
        if rang is not False:
            return rang
    return False


def port_path(guest: Guest, channel: str) -> str | None:
    """The host end (unix socket; libvirt picked its path) of the VM's port ``channel``, or None."""
    try:
        return next((c.source_path for c in guest.config().channels if c.target_name == channel), None)
    except HypervisorError:
        return None


def connect(guest: Guest, channel: str = RUN_CHANNEL) -> socket.socket | None:
    """The host end of the VM's port ``channel``, connected and non-blocking; None when there is none
    or it cannot be reached (runs then go through the guest agent)."""
    path = port_path(guest, channel)
    if not path:
        return None
    port = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        port.connect(path)
    except OSError as exc:
        log.warning("%s: cannot connect to its %s port (%s); runs go through the guest agent",
                    guest.name, channel, exc)
        port.close()
        return None
    port.setblocking(False)
    return port
