"""The one state table, and the verbs on libvirt's test driver (no QEMU needed)."""

from __future__ import annotations

import os
import uuid

import libvirt
import pytest

import hypervisor as hv
from hypervisor.connection import Connection
from hypervisor.errors import DomainNotFound, InvalidState, NotOwned, OperationFailed, Unsupported
from hypervisor.guest import LIBVIRT_STATE, ApiState, api_state

INSTALLATION = f"st{os.getpid()}"


def test_every_libvirt_state_has_an_api_state():
    states = [getattr(libvirt, n) for n in dir(libvirt)
              if n.startswith("VIR_DOMAIN_") and n[11:] in
              ("NOSTATE", "RUNNING", "BLOCKED", "PAUSED", "SHUTDOWN", "SHUTOFF", "CRASHED", "PMSUSPENDED")]
    assert len(states) == 8
    for state in states:
        assert (state, None) in LIBVIRT_STATE
    assert set(LIBVIRT_STATE.values()) == set(ApiState)


@pytest.mark.parametrize("state,reason,expected", [
    (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED, "active"),
    (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_RESTORED, "active"),
    (libvirt.VIR_DOMAIN_BLOCKED, 0, "active"),
    (libvirt.VIR_DOMAIN_SHUTDOWN, libvirt.VIR_DOMAIN_SHUTDOWN_USER, "active"),
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER, "paused"),
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_CRASHED, "dead"),
    (libvirt.VIR_DOMAIN_PMSUSPENDED, 0, "paused"),
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN, "stopped"),
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED, "stopped"),
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN, "stopped"),
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SAVED, "dumped"),
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED, "dead"),
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_FAILED, "dead"),
    (libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_CRASHED_PANICKED, "dead"),
    (99, 0, "dead"),
])
def test_state_table(state, reason, expected):
    assert api_state(state, reason) == expected


@pytest.fixture
def host():
    conn = Connection("test:///default")
    host = hv.Host(INSTALLATION, conn, accelerator=hv.Accelerator.TCG)
    yield host
    for guest in host.guests():
        guest.remove()
    conn.close()


def config(server: str | None = None) -> hv.DomainConfig:
    cfg = hv.new_domain(INSTALLATION, server or str(uuid.uuid4()), memory_mib=128)
    cfg.graphics = [hv.vnc("pw")]
    return hv.set_defaults(cfg, hv.DomainType.QEMU)


def test_lifecycle_on_the_test_driver(host, tmp_path):
    guest = host.define(config())
    assert guest.state() == ApiState.STOPPED and guest.is_persistent() and not guest.is_active()
    guest.start()
    assert guest.state() == ApiState.ACTIVE
    with pytest.raises(hv.HypervisorError):   # qemu says InvalidState, the test driver "internal error"
        guest.start()
    guest.suspend()
    assert guest.state() == ApiState.PAUSED
    guest.resume()
    guest.reset()
    with pytest.raises(Unsupported):
        guest.shutdown()   # no ACPI on the test driver; test_hypervisor_vm.py presses the real button
    guest.destroy()
    assert guest.state() == ApiState.STOPPED
    with pytest.raises(InvalidState):
        guest.destroy()
    guest.start()
    guest.save(str(tmp_path / "state"))
    assert guest.state() == ApiState.DUMPED
    restored = host.restore(str(tmp_path / "state"))
    assert restored.name == guest.name and restored.state() == ApiState.ACTIVE
    guest.remove()
    with pytest.raises(DomainNotFound):
        host.guest(guest.name)
    guest.remove()    # absent already: no error


def test_transient_domains_vanish_when_stopped(host):
    guest = host.create_transient(config())
    assert guest.state() == ApiState.ACTIVE and not guest.is_persistent()
    guest.destroy()
    assert host.find(guest.uuid) is None


def test_lookup_by_name_and_uuid_and_listing(host):
    server = str(uuid.uuid4())
    guest = host.define(config(server))
    assert host.guest(server).name == guest.name == host.guest(guest.name).name
    assert [g.name for g in host.guests()] == [guest.name]
    assert host.find(str(uuid.uuid4())) is None
    parsed = guest.config(inactive=True)
    assert parsed.owner.server == server and parsed.vnc().passwd == "pw"


def test_foreign_domains_are_invisible_and_untouchable(host):
    conn = host.connection.get()
    other = hv.Host("someoneelse", host.connection)
    theirs = other.define(hv.set_defaults(hv.new_domain("someoneelse", str(uuid.uuid4()), memory_mib=64)))
    handmade = conn.defineXML(f"<domain type='test'><name>oh-{INSTALLATION}-handmade</name>"
                              "<memory>65536</memory><os><type>hvm</type></os></domain>")
    try:
        assert [g.name for g in host.guests()] == []
        with pytest.raises(NotOwned):
            host.guest(theirs.name)
        with pytest.raises(NotOwned):
            host.guest(handmade.name())            # our prefix, but no metadata
        cfg = config(theirs.uuid)                  # same uuid as theirs: define must refuse
        with pytest.raises(NotOwned):
            host.define(cfg)
        with pytest.raises(hv.errors.InvalidConfig):
            host.define(hv.set_defaults(hv.new_domain("someoneelse", str(uuid.uuid4()), memory_mib=64)))
    finally:
        theirs.remove()
        handmade.undefine()


def test_live_settings_on_the_test_driver(host):
    guest = host.define(config())
    guest.start()
    guest.set_title("renamed")
    assert guest.config().title == "renamed"
    with pytest.raises(hv.errors.InvalidConfig):
        guest.set_vnc_password("123456789")
    # Changing the password itself needs updateDeviceFlags, which only QEMU has: test_hypervisor_vm.py


def test_errors_come_out_translated(host):
    with pytest.raises(DomainNotFound):
        host.guest(f"oh-{INSTALLATION}-missing")
    guest = host.define(config())
    with pytest.raises((Unsupported, OperationFailed, hv.errors.AgentError)):
        guest.agent_command({"execute": "guest-ping"})


def test_server_states_skip_sandboxes_and_their_events(host, tmp_path):
    from hypervisor.connection import ConnectionEvent, LifecycleEvent
    from hypervisor.servers import ServerSubstrate

    substrate = ServerSubstrate(host, tmp_path, "10.99.0.0/24")
    server = host.define(config())
    sandbox_cfg = hv.set_defaults(hv.new_domain(INSTALLATION, str(uuid.uuid4()), memory_mib=64, kind="sandbox"),
                                  hv.DomainType.QEMU)
    sandbox = host.create_transient(sandbox_cfg)

    def event(guest, installation=INSTALLATION):
        name = guest.name if installation == INSTALLATION else f"oh-{installation}-{guest.uuid}"
        return LifecycleEvent(name=name, uuid=guest.uuid, event="started", detail="booted", at=0.0)

    # before states() has seen a domain, every event of this installation may concern a server
    assert substrate.concerns(event(sandbox)) and substrate.concerns(event(server))
    assert substrate.states() == {server.uuid: ApiState.STOPPED}
    assert not substrate.concerns(event(sandbox))          # known now: a sandbox, no server's business
    assert substrate.concerns(event(server))
    assert not substrate.concerns(event(server, installation="someoneelse"))
    assert substrate.concerns(ConnectionEvent(kind="closed", reason="eof", at=0.0))
    sandbox.destroy()
    assert substrate.states() == {server.uuid: ApiState.STOPPED}
    assert substrate._kinds == {server.uuid: "server"}     # the gone sandbox is forgotten
