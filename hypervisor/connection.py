"""The process's libvirt connection owner, the event loop, accelerator detection and host facts.

Threads (nova `host.py` and libvirt-python `examples/event-test.py` show the same shape):
- `register_event_loop()` installs libvirt's default event implementation and runs it forever on one
  daemon thread, "libvirt-events". Call it once, before any connection is opened (the agent does);
  without it there are no lifecycle events, no close callback and no keepalive, and everything else
  still works (API workers do not need it).
- Every callback registered here (lifecycle events, the close callback) runs on that thread. They only
  build a small value and `put_nowait` it on the caller's queue: they never call libvirt, take a lock
  another thread may hold across a libvirt call, or block.
- `Connection.get()` may be called from any thread; opening and reopening happen under one lock, and a
  health check (`isAlive`) runs on every call (it is local, no RPC).
"""

from __future__ import annotations

import enum
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import libvirt

from .domain import DomainType
from .errors import ConnectionFailed, HypervisorError, translated

log = logging.getLogger("openhosting.hypervisor")


def _ignore_libvirt_error(_ctx, _err) -> None:
    """libvirt's default handler prints every error to stderr, even those we catch and expect."""


libvirt.registerErrorHandler(_ignore_libvirt_error, None)


# --- event loop ----------------------------------------------------------------------------------

_event_lock = threading.Lock()
_event_thread: threading.Thread | None = None


def register_event_loop() -> threading.Thread:
    """Install libvirt's default event loop and run it on a daemon thread; idempotent.

    Must run before the first `Connection.get()` of the process, or that connection gets no events.
    """
    global _event_thread
    with _event_lock:
        if _event_thread is None:
            libvirt.virEventRegisterDefaultImpl()
            _event_thread = threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True)
            _event_thread.start()
        return _event_thread


def event_loop_running() -> bool:
    return _event_thread is not None


def _run_event_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:   # one bad callback must not end event delivery for the process
            log.exception("libvirt event loop iteration failed")


# --- events ------------------------------------------------------------------------------------

_EVENTS = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: ("defined", ["added", "updated", "renamed", "from_snapshot"]),
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: ("undefined", ["removed", "renamed"]),
    libvirt.VIR_DOMAIN_EVENT_STARTED: ("started", ["booted", "migrated", "restored", "from_snapshot", "wakeup"]),
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: ("suspended", ["paused", "migrated", "ioerror", "watchdog",
                                                       "restored", "from_snapshot", "api_error",
                                                       "postcopy", "postcopy_failed"]),
    libvirt.VIR_DOMAIN_EVENT_RESUMED: ("resumed", ["unpaused", "migrated", "from_snapshot", "postcopy"]),
    libvirt.VIR_DOMAIN_EVENT_STOPPED: ("stopped", ["shutdown", "destroyed", "crashed", "migrated",
                                                   "saved", "failed", "from_snapshot"]),
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: ("shutdown", ["finished", "guest", "host"]),
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: ("pmsuspended", ["memory", "disk"]),
    libvirt.VIR_DOMAIN_EVENT_CRASHED: ("crashed", ["panicked", "crashloaded"]),
}


@dataclass(frozen=True)
class LifecycleEvent:
    """A domain changed state. A hint: reconcile by reading the state, events can be lost."""
    name: str
    uuid: str
    event: str     # "started", "stopped", "suspended", "resumed", "shutdown", "defined", …
    detail: str    # for "stopped": "shutdown" (guest powered off), "destroyed", "crashed", "failed", "saved"
    at: float


@dataclass(frozen=True)
class ConnectionEvent:
    """The connection closed (``closed``, with libvirt's reason) or was opened again (``reopened``).

    After ``reopened`` every subscription is active again, but events in between are lost: reconcile.
    """
    kind: str
    reason: str
    at: float


def _lifecycle_event(name: str, uuid: str, event: int, detail: int) -> LifecycleEvent:
    label, details = _EVENTS.get(event, (f"event-{event}", []))
    detail_label = details[detail] if 0 <= detail < len(details) else f"detail-{detail}"
    return LifecycleEvent(name=name, uuid=uuid, event=label, detail=detail_label, at=time.time())


_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "eof",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "client",
}


# --- the connection owner ----------------------------------------------------------------------

class Connection:
    """One libvirt connection per process and URI: opened lazily, checked, reopened after loss.

    Libvirt connections are thread-safe; this object only serializes opening. A `virDomain` obtained
    from one connection dies with it: look domains up again after a `ConnectionLost`.
    """

    KEEPALIVE_INTERVAL = 5   # seconds; with 3 missed answers the connection counts as dead
    KEEPALIVE_COUNT = 3

    def __init__(self, uri: str = "qemu:///system", *, opener: Callable[[str], libvirt.virConnect] = libvirt.open):
        self.uri = uri
        self._opener = opener
        self._lock = threading.Lock()
        self._conn: libvirt.virConnect | None = None
        self._pid: int | None = None
        self._dead = False
        self._opened = 0
        self._subscribers: list[queue.Queue] = []
        self._callback_ids: list[int] = []

    # Opening and health.
    def get(self) -> libvirt.virConnect:
        """The live connection, opened or reopened as needed; raises ConnectionFailed."""
        conn = self._conn
        if conn is not None and self._healthy(conn):
            return conn
        with self._lock:
            conn = self._conn
            if conn is not None and self._healthy(conn):
                return conn
            self._drop()
            self._conn = self._open()
            return self._conn

    def _healthy(self, conn: libvirt.virConnect) -> bool:
        if self._dead or self._pid != os.getpid():
            return False
        try:
            return conn.isAlive() == 1
        except libvirt.libvirtError:
            return False

    def _open(self) -> libvirt.virConnect:
        try:
            conn = self._opener(self.uri)
        except libvirt.libvirtError as exc:
            raise ConnectionFailed(uri=self.uri, reason=exc.get_error_message() or str(exc)) from exc
        if conn is None:
            raise ConnectionFailed(uri=self.uri, reason="libvirt returned no connection")
        self._pid, self._dead = os.getpid(), False
        self._opened += 1
        if event_loop_running():
            try:
                conn.registerCloseCallback(self._on_close, None)
                conn.setKeepAlive(self.KEEPALIVE_INTERVAL, self.KEEPALIVE_COUNT)
            except libvirt.libvirtError as exc:   # the test driver has neither
                log.debug("no close callback / keepalive on %s: %s", self.uri, exc)
            self._callback_ids = [
                conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None)
            ] if self._subscribers else []
        if self._opened > 1:
            log.warning("libvirt connection to %s reopened", self.uri)
            self._publish(ConnectionEvent("reopened", "connection reopened", time.time()))
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._pid == os.getpid():   # a connection inherited over fork() belongs to the parent
            for cid in self._callback_ids:
                try:
                    conn.domainEventDeregisterAny(cid)
                except libvirt.libvirtError:
                    pass
            try:
                conn.unregisterCloseCallback()
            except libvirt.libvirtError:
                pass
            try:
                conn.close()
            except libvirt.libvirtError:
                pass
        self._callback_ids = []

    def close(self) -> None:
        with self._lock:
            self._drop()

    def invalidate(self) -> None:
        """Mark the connection dead (a call failed with a connection error); the next `get` reopens.

        Without the event loop libvirt only learns that libvirtd went away when a call fails, and
        `isAlive` may still say yes; callers that see ConnectionLost call this.
        """
        self._dead = True

    @property
    def alive(self) -> bool:
        conn = self._conn
        return conn is not None and self._healthy(conn)

    # Callbacks: run on the "libvirt-events" thread; they only enqueue.
    def _on_close(self, _conn, reason, _opaque) -> None:
        self._dead = True
        self._publish(ConnectionEvent("closed", _CLOSE_REASONS.get(reason, str(reason)), time.time()))

    def _on_lifecycle(self, _conn, dom, event, detail, _opaque) -> None:
        # name() and UUIDString() read the virDomain handle itself: no RPC from this thread.
        self._publish(_lifecycle_event(dom.name(), dom.UUIDString(), event, detail))

    def _publish(self, item) -> None:
        for sink in list(self._subscribers):
            try:
                sink.put_nowait(item)
            except queue.Full:
                log.warning("event queue full, dropped %s", item)

    def subscribe(self, sink: queue.Queue) -> None:
        """Deliver `LifecycleEvent`s of every domain and `ConnectionEvent`s to ``sink``.

        Needs `register_event_loop()` first. Items arrive from the "libvirt-events" thread; filter
        them by name (`hypervisor.domain.has_prefix`) before acting, other installations share libvirtd.
        """
        if not event_loop_running():
            raise HypervisorError(reason="call register_event_loop() before subscribing to events")
        with self._lock:
            self._subscribers.append(sink)
            if self._conn is not None and self._healthy(self._conn) and not self._callback_ids:
                with translated(operation="subscribe to domain events"):
                    self._callback_ids = [self._conn.domainEventRegisterAny(
                        None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None)]

    def unsubscribe(self, sink: queue.Queue) -> None:
        with self._lock:
            if sink in self._subscribers:
                self._subscribers.remove(sink)
            if not self._subscribers and self._conn is not None:
                for cid in self._callback_ids:
                    try:
                        self._conn.domainEventDeregisterAny(cid)
                    except libvirt.libvirtError:
                        pass
                self._callback_ids = []


_shared_lock = threading.Lock()
_shared: dict[str, Connection] = {}


def shared_connection(uri: str = "qemu:///system") -> Connection:
    """The one `Connection` of this process for ``uri``."""
    with _shared_lock:
        if uri not in _shared:
            _shared[uri] = Connection(uri)
        return _shared[uri]


# --- accelerator -----------------------------------------------------------------------------

class Accelerator(enum.StrEnum):
    KVM = "kvm"
    TCG = "tcg"

    @property
    def domain_type(self) -> DomainType:
        return DomainType.KVM if self is Accelerator.KVM else DomainType.QEMU


def detect_accelerator(cpuinfo: str | Path = "/proc/cpuinfo", modules: str | Path = "/proc/modules",
                       kvm_device: str | Path = "/dev/kvm") -> Accelerator:
    """KVM only when the CPU has VT-x or AMD-V (vmx/svm), kvm_intel or kvm_amd is loaded, and
    /dev/kvm exists. /dev/kvm alone proves nothing: a software KVM (PVM) module provides it on our
    machines and cannot run a stock guest kernel.
    """
    try:
        flags: set[str] = set()
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.partition(":")[2].split())
        loaded = {line.split()[0] for line in Path(modules).read_text().splitlines() if line.strip()}
    except OSError:
        return Accelerator.TCG
    hardware = ("vmx" in flags and "kvm_intel" in loaded) or ("svm" in flags and "kvm_amd" in loaded)
    return Accelerator.KVM if hardware and Path(kvm_device).exists() else Accelerator.TCG


# --- host facts ----------------------------------------------------------------------------------

def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


@dataclass(frozen=True)
class HostInfo:
    uri: str
    hostname: str
    libvirt_version: str
    hypervisor: str          # libvirt's driver name, "QEMU" (or "TEST")
    qemu_version: str
    accelerator: Accelerator
    cpus: int
    cpu_mhz: int
    memory_mib: int
    free_memory_mib: int


def _cpuinfo_mhz(cpuinfo: str | Path = "/proc/cpuinfo") -> int:
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("cpu MHz"):
                return int(float(line.partition(":")[2]))
    except (OSError, ValueError):
        pass
    return 0


def host_info(connection: Connection, accelerator: Accelerator | None = None) -> HostInfo:
    """Versions, accelerator, CPUs and memory of the host behind ``connection``."""
    conn = connection.get()
    with translated(operation="read host information"):
        model, memory_mib, cpus, mhz, *_ = conn.getInfo()
        free = conn.getFreeMemory() // 1024**2
        return HostInfo(
            uri=connection.uri, hostname=conn.getHostname(), libvirt_version=_version(conn.getLibVersion()),
            hypervisor=conn.getType(), qemu_version=_version(conn.getVersion()),
            accelerator=accelerator or detect_accelerator(), cpus=cpus,
            cpu_mhz=mhz or _cpuinfo_mhz() or 2000, memory_mib=memory_mib, free_memory_mib=free)
