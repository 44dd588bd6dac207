"""The connection owner, the event loop, accelerator detection, and the error translation table."""

from __future__ import annotations

import os
import queue
import threading
import uuid

import libvirt
import pytest

import hypervisor as hv
from hypervisor import errors
from hypervisor.connection import Connection, ConnectionEvent, LifecycleEvent, detect_accelerator

INSTALLATION = f"cn{os.getpid()}"


# --- errors: a faulty backend proves every libvirt error leaves as one of ours --------------------

def libvirt_error(code: int, message: str, origin: int = libvirt.VIR_FROM_QEMU) -> libvirt.libvirtError:
    exc = libvirt.libvirtError(message)
    exc.err = (code, origin, message, libvirt.VIR_ERR_ERROR, None, None, None, 0, 0)
    return exc


@pytest.mark.parametrize("code,origin,message,expected", [
    (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_FROM_QEMU, "Domain not found", errors.DomainNotFound),
    (libvirt.VIR_ERR_NO_NETWORK, libvirt.VIR_FROM_NETWORK, "Network not found", errors.NetworkNotFound),
    (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_QEMU, "domain is not running", errors.InvalidState),
    (libvirt.VIR_ERR_OPERATION_TIMEOUT, libvirt.VIR_FROM_QEMU, "cannot acquire state change lock",
     errors.DomainBusy),
    (libvirt.VIR_ERR_DOM_EXIST, libvirt.VIR_FROM_QEMU, "domain already exists", errors.DomainExists),
    (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, libvirt.VIR_FROM_QEMU,
     "Guest agent is not responding: QEMU guest agent is not connected", errors.AgentUnavailable),
    (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, libvirt.VIR_FROM_QEMU,
     "Guest agent is not responding: Guest agent not available for now", errors.AgentTimeout),
    (libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED, libvirt.VIR_FROM_QEMU, "QEMU guest agent is not configured",
     errors.AgentUnavailable),
    (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_QEMU,
     "unable to execute QEMU agent command 'guest-exec': Failed to execute child process",
     errors.AgentCommandFailed),
    (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, "Cannot write data: Broken pipe", errors.ConnectionLost),
    (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_REMOTE, "client socket is closed", errors.ConnectionLost),
    (libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_FROM_NONE, "invalid connection pointer", errors.ConnectionLost),
    (libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_FROM_DOMAIN, "bad XML", errors.InvalidConfig),
    (libvirt.VIR_ERR_CONFIG_UNSUPPORTED, libvirt.VIR_FROM_QEMU, "unsupported configuration", errors.InvalidConfig),
    (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_FROM_QEMU, "unsupported flags (0x4)", errors.Unsupported),
    (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_FROM_TEST, "not supported", errors.Unsupported),
    (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_QEMU, "Permission denied", errors.OperationFailed),
    (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_QEMU, "qemu unexpectedly closed the monitor",
     errors.OperationFailed),
])
def test_translation(code, origin, message, expected):
    exc = errors.translate(libvirt_error(code, message, origin), domain="d", operation="op")
    assert type(exc) is expected
    assert isinstance(exc, errors.HypervisorError) and exc.context["reason"] == message
    assert exc.message and "{" not in exc.message


def test_translated_block_and_templates():
    with pytest.raises(errors.DomainNotFound, match="domain web not found") as info:
        with errors.translated(domain="web"):
            raise libvirt_error(libvirt.VIR_ERR_NO_DOMAIN, "no domain")
    assert isinstance(info.value.__cause__, libvirt.libvirtError)
    assert str(errors.GuestExecTimeout(domain="d", path="/bin/x", timeout=3, pid=7)) == \
        "command /bin/x in d did not finish within 3 s (guest pid 7)"


# --- accelerator ------------------------------------------------------------------------------

@pytest.mark.parametrize("flags,modules,dev,expected", [
    ("fpu vmx sse", "kvm_intel 1 0 - Live\nkvm 2 1 kvm_intel, Live", True, "kvm"),
    ("fpu svm sse", "kvm_amd 1 0 - Live\nkvm 2 1 kvm_amd, Live", True, "kvm"),
    ("fpu sse", "kvm_pvm 1 0 - Live\nkvm 2 1 kvm_pvm, Live", True, "tcg"),     # our machines
    ("fpu vmx sse", "kvm 2 0 - Live", True, "tcg"),                              # module not loaded
    ("fpu vmx sse", "kvm_intel 1 0 - Live", False, "tcg"),                       # no /dev/kvm
    ("fpu svm", "kvm_intel 1 0 - Live", True, "tcg"),                            # wrong vendor module
])
def test_accelerator_rule(tmp_path, flags, modules, dev, expected):
    (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    (tmp_path / "modules").write_text(modules + "\n")
    if dev:
        (tmp_path / "kvm").touch()
    accel = detect_accelerator(tmp_path / "cpuinfo", tmp_path / "modules", tmp_path / "kvm")
    assert accel == expected
    assert accel.domain_type == ("kvm" if expected == "kvm" else "qemu")


def test_accelerator_of_this_machine():
    flags = open("/proc/cpuinfo").read()
    if " vmx" not in flags and " svm" not in flags:
        assert detect_accelerator() == hv.Accelerator.TCG
    assert detect_accelerator("/nonexistent") == hv.Accelerator.TCG


# --- the connection owner ---------------------------------------------------------------------

def test_opens_lazily_and_reuses():
    opened = []

    def opener(uri):
        opened.append(uri)
        return libvirt.open(uri)

    conn = Connection("test:///default", opener=opener)
    assert opened == [] and not conn.alive
    first = conn.get()
    assert conn.get() is first and opened == ["test:///default"] and conn.alive
    conn.close()
    assert not conn.alive
    assert conn.get() is not first and len(opened) == 2
    conn.close()


def test_open_failure_is_connection_failed():
    conn = Connection("test:///no/such/file.xml")
    with pytest.raises(errors.ConnectionFailed, match="cannot connect to test:///no/such/file.xml"):
        conn.get()


def test_concurrent_first_use_opens_once():
    opened = []
    gate = threading.Barrier(8)

    def opener(uri):
        opened.append(uri)
        return libvirt.open(uri)

    conn = Connection("test:///default", opener=opener)
    results = []

    def use():
        gate.wait()
        results.append(conn.get())

    threads = [threading.Thread(target=use) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(opened) == 1 and len({id(r) for r in results}) == 1
    conn.close()


def test_shared_connection_is_one_per_uri():
    assert hv.shared_connection("test:///default") is hv.shared_connection("test:///default")


def test_host_info_on_the_test_driver():
    info = hv.host_info(Connection("test:///default"), hv.Accelerator.TCG)
    assert info.hypervisor == "TEST" and info.cpus > 0 and info.memory_mib > 0 and info.cpu_mhz > 0
    assert info.libvirt_version.count(".") == 2 and info.accelerator == "tcg"


def test_subscribe_needs_the_event_loop_first(monkeypatch):
    monkeypatch.setattr(hv.connection, "_event_thread", None)
    with pytest.raises(errors.HypervisorError, match="register_event_loop"):
        Connection("test:///default").subscribe(queue.Queue())


def test_lifecycle_events_and_reopen_notice():
    thread = hv.register_event_loop()
    assert hv.register_event_loop() is thread and thread.daemon and thread.name == "libvirt-events"
    conn = Connection("test:///default")
    events: queue.Queue = queue.Queue()
    conn.subscribe(events)
    host = hv.Host(INSTALLATION, conn, accelerator=hv.Accelerator.TCG)
    guest = host.define(hv.set_defaults(hv.new_domain(INSTALLATION, str(uuid.uuid4()), memory_mib=64)))
    try:
        guest.start()
        guest.destroy()
        seen = []
        while len(seen) < 3:
            item = events.get(timeout=10)
            if isinstance(item, LifecycleEvent) and item.name == guest.name:
                seen.append((item.event, item.detail))
        assert seen == [("defined", "added"), ("started", "booted"), ("stopped", "destroyed")]

        # libvirt calls the close callback on the event thread when libvirtd goes away; the next
        # get() opens a new connection, re-subscribes, and says so.
        conn._on_close(None, libvirt.VIR_CONNECT_CLOSE_REASON_EOF, None)
        assert not conn.alive
        closed = events.get(timeout=5)
        assert isinstance(closed, ConnectionEvent) and (closed.kind, closed.reason) == ("closed", "eof")
        conn.get()
        notice = events.get(timeout=5)
        assert isinstance(notice, ConnectionEvent) and notice.kind == "reopened"
    finally:
        guest.remove()
        conn.unsubscribe(events)
        conn.close()


class DeadDomain:
    """A virDomain handle whose connection died under it (libvirtd restarted)."""

    def __init__(self, name, uuid_):
        self._name, self._uuid = name, uuid_

    def name(self):
        return self._name

    def UUIDString(self):
        return self._uuid

    def __getattr__(self, method):
        def fail(*args):
            raise libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR, "client socket is closed", libvirt.VIR_FROM_RPC)
        return fail


def test_guest_finds_its_domain_again_after_libvirtd_restarts():
    keeper = libvirt.open("test:///default")       # keeps the test driver's state across reopening
    conn = Connection("test:///default")
    host = hv.Host(INSTALLATION, conn, accelerator=hv.Accelerator.TCG)
    real = host.define(hv.set_defaults(hv.new_domain(INSTALLATION, str(uuid.uuid4()), memory_mib=64)))
    try:
        first = conn.get()
        guest = hv.Guest(DeadDomain(real.name, real.uuid), connection=conn)
        assert guest.state() == hv.ApiState.STOPPED         # a read: reconnected and retried
        assert conn.get() is not first
        guest = hv.Guest(DeadDomain(real.name, real.uuid), connection=conn)
        with pytest.raises(errors.ConnectionLost):
            guest.start()                                   # a verb: not retried, may have happened
        guest.start()                                       # the handle is fresh now
        assert guest.state() == hv.ApiState.ACTIVE
        lonely = hv.Guest(DeadDomain(real.name, real.uuid))  # no connection to come back through
        with pytest.raises(errors.ConnectionLost):
            lonely.state()
    finally:
        real.remove()
        conn.close()
        keeper.close()
