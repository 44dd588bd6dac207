"""Real VMs on qemu:///system (TCG on our machines): boot, console, counters, VNC, power, save/restore,
guest agent. Every domain and network carries this run's installation id and is removed at the end;
nothing else on the shared libvirtd is looked at or touched.

Timings print as "TIMING name seconds" (run with -s to see them).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import libvirt
import pytest

import hypervisor as hv
from hypervisor import errors
from hypervisor.connection import Connection, LifecycleEvent

from . import guestkit
from .vnc import handshake

pytestmark = pytest.mark.vm

INSTALLATION = f"vm{os.getpid()}"
TIMINGS: dict[str, list[float]] = {}


def timing(name: str, seconds: float) -> float:
    TIMINGS.setdefault(name, []).append(seconds)
    print(f"TIMING {name} {seconds:.3f}")
    return seconds


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(interval)


def console_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def wait_console(path: Path, pattern: str, timeout: float = 90) -> re.Match:
    return wait_until(lambda: re.search(pattern, console_text(path)), timeout,
                      f"{pattern!r} on the console ({path})")


# --- fixtures (image -> defined -> running) ---------------------------------------------------

@pytest.fixture(scope="module")
def system():
    try:
        libvirt.open("qemu:///system").close()
    except libvirt.libvirtError as exc:
        pytest.skip(f"no libvirtd: {exc}")
    hv.register_event_loop()            # before this module's connection is opened
    host = hv.Host(INSTALLATION, Connection("qemu:///system"))
    yield host
    for guest in host.guests():
        guest.remove()
    for net in host.networks():
        net.remove()
    host.connection.close()
    if TIMINGS:
        print("\nTIMINGS (seconds): " + ", ".join(
            f"{k}={sorted(v)[len(v) // 2]:.2f}" + (f" (n={len(v)})" if len(v) > 1 else "")
            for k, v in TIMINGS.items()))


@pytest.fixture(scope="module")
def workdir():
    """Files QEMU reads: the QEMU user (libvirt-qemu) must be able to traverse to them, which
    pytest's 0700 tmp_path does not allow."""
    path = Path(tempfile.mkdtemp(prefix="oh-hvtest-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def test_guest():
    """The busybox test guest for direct kernel boot (storage's guestkit), built once and cached."""
    return {"kernel": str(guestkit.guest_kernel()), "initrd": str(guestkit.build_test_initramfs()),
            "cmdline": guestkit.guest_cmdline()}


@pytest.fixture(scope="module")
def network(system):
    subnet = _free_subnet(system)
    net = system.define_network(hv.isolated_network(INSTALLATION, "net", subnet))
    net.start()
    yield net
    net.remove()


def _free_subnet(host) -> str:
    import ipaddress
    import random
    used = [hv.NetworkConfig.from_xml(n.XMLDesc(0)) for n in host.connection.get().listAllNetworks(0)]
    used = [c.subnet() for c in used if c.address]
    rng = random.Random(os.getpid() + 1)
    while True:
        candidate = ipaddress.ip_network(f"10.{rng.randint(200, 249)}.{rng.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return str(candidate)


def new_config(workdir: Path, memory_mib: int = 256) -> tuple[hv.DomainConfig, Path]:
    server = str(uuid.uuid4())
    cfg = hv.new_domain(INSTALLATION, server, memory_mib=memory_mib, title="vm test")
    log = workdir / f"console-{server}.log"
    cfg.serials = [hv.console(str(log))]
    return cfg, log


def sparse_file(path: Path, size: int) -> str:
    with open(path, "wb") as f:
        f.truncate(size)
    path.chmod(0o644)
    return str(path)


# --- the tests --------------------------------------------------------------------------------

def test_direct_kernel_boot_full_lifecycle(system, workdir, test_guest, network):
    events: queue.Queue = queue.Queue()
    system.connection.subscribe(events)
    cfg, log = new_config(workdir)
    cfg.os = hv.direct_kernel(test_guest["kernel"], test_guest["initrd"], test_guest["cmdline"])
    cfg.disks = [hv.drive("block:0", sparse_file(workdir / "data.raw", 64 * 1024**2))]
    cfg.interfaces = [hv.nic(0, model="e1000", network=network.name)]
    cfg.graphics = [hv.vnc("pass1")]
    hv.set_defaults(cfg, system.accelerator.domain_type)

    t0 = time.monotonic()
    guest = system.define(cfg)
    timing("define", time.monotonic() - t0)
    assert guest.state() == hv.ApiState.STOPPED
    t0 = time.monotonic()
    guest.start()
    timing("start", time.monotonic() - t0)
    wait_console(log, guestkit.GUEST_UP)
    timing("boot_to_marker", time.monotonic() - t0)
    assert guest.state() == hv.ApiState.ACTIVE

    # the domain type follows the accelerator rule
    assert guest.config().type == system.accelerator.domain_type

    # DHCP: the address the guest got is the one libvirt's dnsmasq reports
    mac = cfg.interfaces[0].mac
    ip = wait_console(log, r"OPENHOSTING-IP (\S+)", 60).group(1)
    lease = network.wait_for_lease(mac, timeout=10)
    assert lease.ip == ip and lease.mac == mac

    # counters
    nic = guest.interface_stats()[0]
    assert nic.rx > 0 and nic.tx > 0 and nic.rx_packets > 0 and nic.tx_packets > 0
    totals = guest.interface_totals()        # counters move on (the guest keeps talking)
    assert all(t >= n for t, n in zip(totals, nic))
    blocks = guest.block_stats()
    assert set(blocks) == {"block:0"} and blocks["block:0"].read_requests > 0 and blocks["block:0"].read_bytes > 0

    # VNC: on loopback, with the password; the password changes live
    vnc = guest.vnc_address()
    assert vnc.listen == "127.0.0.1" and vnc.port >= 5900
    handshake(vnc.listen, vnc.port, "pass1")
    guest.set_vnc_password("pass2")
    handshake(vnc.listen, vnc.port, "pass2")
    with pytest.raises(Exception):
        handshake(vnc.listen, vnc.port, "pass1", timeout=5)

    # the busybox guest has no agent: a clean "unavailable", fast
    t0 = time.monotonic()
    assert not guest.agent_ping()
    with pytest.raises(errors.AgentUnavailable):
        guest.agent_exec("/bin/true")
    assert time.monotonic() - t0 < 5

    # verbs in the wrong state are InvalidState
    with pytest.raises(errors.InvalidState):
        guest.start()
    with pytest.raises(errors.InvalidState):
        guest.resume()

    t0 = time.monotonic()
    guest.suspend()
    timing("suspend", time.monotonic() - t0)
    assert guest.state() == hv.ApiState.PAUSED
    t0 = time.monotonic()
    guest.resume()
    timing("resume", time.monotonic() - t0)
    assert guest.state() == hv.ApiState.ACTIVE

    guest.set_title("renamed")
    assert guest.config().title == "renamed" and guest.config(inactive=True).title == "renamed"

    # ACPI power button: the guest powers itself off; the persistent definition stays
    t0 = time.monotonic()
    guest.shutdown()
    wait_until(lambda: guest.state() == hv.ApiState.STOPPED, 60, "ACPI shutdown")
    timing("acpi_shutdown_to_stopped", time.monotonic() - t0)
    assert "OPENHOSTING-POWEROFF acpi" in console_text(log)
    assert guest.libvirt_state() == (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN)

    # start again, power cut
    guest.start()
    wait_until(lambda: console_text(log).count(guestkit.GUEST_UP) >= 1, 60, "second boot")
    t0 = time.monotonic()
    guest.destroy()
    timing("destroy", time.monotonic() - t0)
    assert guest.state() == hv.ApiState.STOPPED
    with pytest.raises(errors.InvalidState):
        guest.destroy()

    seen = []
    while True:
        try:
            item = events.get(timeout=2)
        except queue.Empty:
            break
        if isinstance(item, LifecycleEvent) and item.name == guest.name:
            seen.append((item.event, item.detail))
    system.connection.unsubscribe(events)
    assert ("started", "booted") in seen and ("stopped", "shutdown") in seen and ("stopped", "destroyed") in seen
    assert ("suspended", "paused") in seen and ("resumed", "unpaused") in seen

    guest.remove()
    assert system.find(guest.uuid) is None


@pytest.mark.parametrize("slot,media,machine", [
    ("ide:0:0", "cdrom", "q35"),     # the API's IDE becomes SATA on q35
    ("ide:1:1", "cdrom", "pc"),      # real IDE on the pc machine
    ("ata:0:2", "disk", "q35"),
    ("scsi:0:3", "disk", "q35"),
    ("block:1", "disk", "q35"),
])
def test_firmware_boots_from_every_bus(system, workdir, slot, media, machine):
    """SeaBIOS boots the test guest's ISO or disk from each kind of API slot (boot order 1)."""
    cfg, log = new_config(workdir)
    cfg.os = hv.domain.OS(machine=machine)
    name = f"{slot.replace(':', '-')}-{machine}"
    if media == "cdrom":
        image = guestkit.build_test_iso(workdir / f"{name}.iso")
    else:
        image = guestkit.build_test_disk(workdir / f"{name}.img")
    image.chmod(0o644)
    cfg.disks = [hv.drive(slot, str(image), media=media)]
    hv.apply_boot_order(hv.set_defaults(cfg, system.accelerator.domain_type), [slot])
    t0 = time.monotonic()
    guest = system.launch(cfg)
    try:
        wait_console(log, guestkit.GUEST_UP, 120)
        timing(f"firmware_boot_{media}", time.monotonic() - t0)
        assert str(hv.DeviceSlot.from_alias(guest.config().disks[0].alias)) == slot
        assert guest.block_stats()[slot].read_bytes > 1024**2     # the kernel came from this disk
    finally:
        guest.remove()


def test_save_restore_and_crash(system, workdir, test_guest):
    cfg, log = new_config(workdir)
    cfg.os = hv.direct_kernel(test_guest["kernel"], test_guest["initrd"], test_guest["cmdline"])
    hv.set_defaults(cfg, system.accelerator.domain_type)
    guest = system.launch(cfg)
    wait_console(log, guestkit.GUEST_UP)
    state_file = workdir / f"{guest.uuid}.state"
    t0 = time.monotonic()
    guest.save(str(state_file))
    timing("save", time.monotonic() - t0)
    assert guest.state() == hv.ApiState.DUMPED and state_file.stat().st_size > 0
    timing("save_file_mib", state_file.stat().st_size / 1024**2)
    t0 = time.monotonic()
    restored = system.restore(str(state_file), paused=True)
    timing("restore_paused", time.monotonic() - t0)
    assert restored.state() == hv.ApiState.PAUSED
    t0 = time.monotonic()
    restored.resume()
    timing("resume_restored", time.monotonic() - t0)
    assert restored.state() == hv.ApiState.ACTIVE

    # QEMU killed behind libvirt's back: libvirt says shut off (crashed), the API says dead
    pid = int(Path(f"/run/libvirt/qemu/{guest.name}.pid").read_text())
    os.kill(pid, 9)
    wait_until(lambda: restored.state() == hv.ApiState.DEAD, 30, "crash noticed")
    assert restored.libvirt_state() == (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED)
    restored.remove()


def test_transient_domain(system, workdir, test_guest):
    cfg, log = new_config(workdir)
    cfg.os = hv.direct_kernel(test_guest["kernel"], test_guest["initrd"], test_guest["cmdline"])
    hv.set_defaults(cfg, system.accelerator.domain_type)
    t0 = time.monotonic()
    guest = system.create_transient(cfg)
    timing("create_transient", time.monotonic() - t0)
    wait_console(log, guestkit.GUEST_UP)
    assert not guest.is_persistent()
    guest.shutdown()
    wait_until(lambda: system.find(guest.uuid) is None, 60, "transient domain gone after ACPI shutdown")


def test_only_own_objects_are_listed(system):
    for guest in system.guests():
        assert guest.name.startswith(f"oh-{INSTALLATION}-")
    for net in system.networks():
        assert net.name.startswith(f"oh-{INSTALLATION}-")


# --- the guest agent, with the Debian image that runs qemu-ga ------------------------------------

@pytest.fixture(scope="module")
def agent_image():
    from storage.guest import build_image
    from storage.guest.cache import cache_dir
    try:
        return build_image("base", cache_dir() / "test-images")
    except Exception as exc:   # no debootstrap mirror, no root: the agent tests cannot run
        pytest.skip(f"no guest image with qemu-ga: {exc}")


def test_guest_agent(system, workdir, agent_image):
    overlay = workdir / "agent.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(agent_image["rootfs"]),
                    str(overlay)], check=True)
    overlay.chmod(0o644)
    cfg, log = new_config(workdir, memory_mib=agent_image["memory"])
    cfg.os = hv.direct_kernel(str(agent_image["kernel"]), str(agent_image["initramfs"]), agent_image["cmdline"])
    cfg.disks = [hv.drive("block:0", str(overlay), format="qcow2")]
    hv.set_defaults(cfg, system.accelerator.domain_type)
    t0 = time.monotonic()
    guest = system.launch(cfg)
    try:
        guest.wait_for_agent(timeout=120)
        timing("boot_to_agent", time.monotonic() - t0)
        assert guest.config().channels[0].state == "connected"

        code, out, err, *_ = guest.agent_exec("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"])
        assert (code, out, err) == (3, b"out\n", b"err\n")
        assert guest.agent_exec("/bin/cat", input_data=b"stdin bytes").stdout == b"stdin bytes"
        assert guest.agent_exec("/usr/bin/env", env={"OH_TEST": "yes"}).stdout.count(b"OH_TEST=yes") == 1
        for _ in range(3):
            t0 = time.monotonic()
            assert guest.agent_exec("/usr/bin/python3", ["-c", "print(1+1)"]).stdout == b"2\n"
            timing("exec_python", time.monotonic() - t0)

        payload = os.urandom(300_000)
        t0 = time.monotonic()
        guest.agent_file_write("/tmp/payload", payload)
        timing("file_write_300k", time.monotonic() - t0)
        assert guest.agent_file_read("/tmp/payload") == payload
        digest = guest.agent_exec("/usr/bin/sha256sum", ["/tmp/payload"]).stdout.split()[0].decode()
        import hashlib
        assert digest == hashlib.sha256(payload).hexdigest()

        guest.agent_set_time(time.time() + 3600)
        guest_now = int(guest.agent_exec("/bin/date", ["+%s"]).stdout)
        assert abs(guest_now - (time.time() + 3600)) < 30
        guest.agent_set_time()
        assert abs(int(guest.agent_exec("/bin/date", ["+%s"]).stdout) - time.time()) < 30

        with pytest.raises(errors.AgentCommandFailed):
            guest.agent_exec("/no/such/program")
        with pytest.raises(errors.AgentCommandFailed):
            guest.agent_file_read("/no/such/file")
        t0 = time.monotonic()
        with pytest.raises(errors.GuestExecTimeout):
            guest.agent_exec("/bin/sleep", ["30"], timeout=1)
        assert time.monotonic() - t0 < 5

        t0 = time.monotonic()
        guest.agent_shutdown()
        wait_until(lambda: guest.state() == hv.ApiState.STOPPED, 60, "guest-shutdown")
        timing("agent_shutdown_to_stopped", time.monotonic() - t0)
    finally:
        guest.remove()
