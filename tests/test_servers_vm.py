"""Servers as real QEMU VMs (TCG here): lifecycle, console, DHCP, persistence, claims, VNC, restarts.

The guests are the tiny busybox guests of tests/guestkit.py, uploaded through the drives API.
"""

from __future__ import annotations

import gzip
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .guestkit import GUEST_UP, IP_PREFIX, POWEROFF, build_test_disk, build_test_iso
from .vnc import handshake

pytestmark = pytest.mark.vm

CPU = "4000"  # enough MHz for a whole host core: a fractional cap slows TCG boots in proportion


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from .conftest import new_installation

    inst, drop = new_installation(tmp_path_factory.mktemp("vm"), "sqlite")
    inst.start()
    yield inst
    inst.stop()
    inst.purge_libvirt()
    drop()


@pytest.fixture(scope="module")
def user(site):
    return site.create_user("vm")


@pytest.fixture
def api(site, user):
    return site.client(user)


def wait_for(predicate, timeout: float = 90, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def upload(api, path: Path, name: str | None = None, **extra) -> str:
    data = path.read_bytes()
    drive = api.create_drive(len(data), name=name or path.name, **extra)
    chunk = 4 << 20
    for offset in range(0, len(data), chunk):
        r = api.post(f"/drives/{drive}/write/{offset}", gzip.compress(data[offset:offset + chunk], 1),
                     headers={"Content-Encoding": "gzip"})
        assert r.status == 204, r.text
    return drive


def console(site, sid: str) -> str:
    path = site.state_dir / "run" / f"console-{sid}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def create(api, **fields) -> dict:
    body = {"name": "vm", "cpu": CPU, "mem": "256", "smp": "1", **fields}
    r = api.post_kv("/servers/create", body)
    assert r.status == 200, r.text
    return r.kv()


def status(api, sid: str) -> str | None:
    r = api.get(f"/servers/{sid}/info")
    return r.kv()["status"] if r.status == 200 else None


@pytest.fixture(scope="module")
def iso_drive(site, user):
    api = site.client(user)
    return upload(api, build_test_iso(), name="guest.iso", **{"claim:type": "shared"})


def test_lifecycle_from_cdrom_with_dhcp(site, api, iso_drive):
    info = create(api, **{"ide:0:0": iso_drive, "ide:0:0:media": "cdrom", "boot": "ide:0:0",
                          "nic:0:model": "e1000", "nic:0:dhcp": "auto", "persistent": "true"})
    sid = info["server"]
    assert info["status"] == "active" and "started" in info
    wait_for(lambda: GUEST_UP in console(site, sid), what="the guest's boot marker")
    # the address the guest got equals the one the API reports
    guest_ip = wait_for(lambda: re.search(IP_PREFIX + r"(\S+)", console(site, sid)), what="a DHCP lease")[1]
    reported = wait_for(lambda: api.get(f"/servers/{sid}/info").kv().get("nic:0:dhcp:ip"), what="the lease")
    assert reported == guest_ip
    live = api.get(f"/servers/{sid}/info").kv()
    assert live["nic:0:dhcp"] == guest_ip
    assert int(live["rx:packets"]) > 0 and int(live["tx:packets"]) > 0
    assert int(live["ide:0:0:read:bytes"]) > 0 and int(live["ide:0:0:read:requests"]) > 0
    assert f"{sid}:ide:0:0" in api.get(f"/drives/{iso_drive}/info").kv()["claimed"]
    # a drive in use cannot be written or destroyed
    assert api.post(f"/drives/{iso_drive}/write/0", b"x").status == 409
    assert api.post(f"/drives/{iso_drive}/destroy").status == 409
    # while active only some keys change
    r = api.post_kv(f"/servers/{sid}/set", {"mem": "512"})
    assert (r.status, r.error) == (409, "busy")
    assert api.post_kv(f"/servers/{sid}/set", {"name": "renamed"}).kv()["name"] == "renamed"
    # reset: the guest boots again
    assert api.post(f"/servers/{sid}/reset").status == 204
    wait_for(lambda: console(site, sid).count(GUEST_UP) >= 2, what="a second boot after reset")
    # ACPI shutdown: the guest powers itself off; persistent, so it is kept, stopped
    assert api.post(f"/servers/{sid}/shutdown").status == 204
    wait_for(lambda: status(api, sid) == "stopped", what="the server to stop after shutdown")
    assert POWEROFF + " acpi" in console(site, sid)
    assert "claimed" not in api.get(f"/drives/{iso_drive}/info").kv()
    assert "rx" not in api.get(f"/servers/{sid}/info").kv()
    # start again, then cut the power
    assert api.post(f"/servers/{sid}/start").status == 204
    assert status(api, sid) == "active"
    assert api.post(f"/servers/{sid}/start").status == 409
    assert api.post(f"/servers/{sid}/stop").status == 204
    assert status(api, sid) == "stopped"
    assert api.post(f"/servers/{sid}/destroy").status == 204
    assert status(api, sid) is None
    assert sid not in subprocess.run(["virsh", "list", "--all", "--uuid"], capture_output=True, text=True).stdout


def test_non_persistent_server_vanishes_after_guest_poweroff(site, api):
    disk = upload(api, build_test_disk(poweroff_after=3), name="disk.img")
    sid = create(api, **{"block:0": disk, "boot": "block:0"})["server"]
    wait_for(lambda: GUEST_UP in console(site, sid), what="boot from the raw disk")
    wait_for(lambda: status(api, sid) is None, what="the agent to destroy the powered-off server")
    assert "claimed" not in api.get(f"/drives/{disk}/info").kv()
    assert api.post(f"/drives/{disk}/destroy").status == 204


def test_persistent_server_stops_after_guest_poweroff(site, api):
    disk = upload(api, build_test_disk(poweroff_after=3), name="disk.img")
    sid = create(api, **{"block:0": disk, "persistent": "true"})["server"]
    wait_for(lambda: status(api, sid) == "stopped", what="stopped after the guest's own poweroff")
    assert POWEROFF + " timer" in console(site, sid)
    api.post(f"/servers/{sid}/destroy")


def test_exclusive_and_shared_claims(site, api, iso_drive):
    disk = upload(api, build_test_disk(), name="disk.img")
    a = create(api, **{"block:0": disk})["server"]
    r = api.post_kv("/servers/create", {"name": "b", "cpu": CPU, "mem": "128", "block:0": disk})
    assert (r.status, r.error) == (409, "busy")
    assert len(api.get("/servers/list").text.split()) == 1
    b = api.post_kv("/servers/create/stopped", {"name": "b", "cpu": CPU, "mem": "128", "block:0": disk}).kv()["server"]
    assert api.post(f"/servers/{b}/start").status == 409
    # a shared drive is attached read-only to several servers at once
    c = create(api, **{"ide:0:0": iso_drive, "ide:0:0:media": "cdrom"})["server"]
    d = create(api, **{"ide:0:0": iso_drive, "ide:0:0:media": "cdrom"})["server"]
    claimed = api.get(f"/drives/{iso_drive}/info").kv()["claimed"].split()
    assert {f"{c}:ide:0:0", f"{d}:ide:0:0"} <= set(claimed)
    for sid in (a, b, c, d):
        assert api.post(f"/servers/{sid}/destroy").status == 204
    assert api.post(f"/servers/{b}/info").status == 404
    api.post(f"/drives/{disk}/destroy")


def test_vnc_console_handshake(site, api, iso_drive):
    info = create(api, **{"ide:0:0": iso_drive, "ide:0:0:media": "cdrom", "vnc:ip": "auto",
                          "vnc:password": "s3cret"})
    sid = info["server"]
    assert info["vnc:ip"] == "127.0.0.1" and int(info["vnc:port"]) >= 5900
    result = handshake(info["vnc:ip"], int(info["vnc:port"]), "s3cret")
    assert result["width"] > 0 and result["height"] > 0 and result["rectangles"] >= 1
    with pytest.raises(PermissionError):
        handshake(info["vnc:ip"], int(info["vnc:port"]), "wrong")
    api.post(f"/servers/{sid}/destroy")


def test_pinned_address(site, api, iso_drive):
    ip = api.post("/resources/ip/create").kv()["resource"]
    sid = create(api, **{"ide:0:0": iso_drive, "ide:0:0:media": "cdrom", "nic:0:model": "virtio",
                         "nic:0:dhcp": ip})["server"]
    got = wait_for(lambda: re.search(IP_PREFIX + r"(\S+)", console(site, sid)), what="a lease")[1]
    assert got == ip
    assert wait_for(lambda: api.get(f"/servers/{sid}/info").kv().get("nic:0:dhcp:ip")) == ip
    assert api.post(f"/resources/ip/{ip}/destroy").status == 409
    api.post(f"/servers/{sid}/destroy")
    assert api.post(f"/resources/ip/{ip}/destroy").status == 204


def qemu_pid(sid: str) -> int:
    out = subprocess.run(["pgrep", "-f", f"guest=oh-.*{sid}"], capture_output=True, text=True).stdout.split()
    assert out, "no QEMU process for the server"
    return int(out[0])


def test_restarts_and_a_killed_qemu(site, api, iso_drive):
    keep = create(api, **{"ide:0:0": iso_drive, "ide:0:0:media": "cdrom", "persistent": "true"})["server"]
    gone = create(api, **{"ide:0:0": iso_drive, "ide:0:0:media": "cdrom"})["server"]
    wait_for(lambda: GUEST_UP in console(site, keep), what="boot")
    # the API and the agent restart: nothing is lost
    site.stop_agent(signal.SIGKILL)
    site.stop_api(signal.SIGKILL)
    site.start_api()
    site.start_agent()
    assert status(api, keep) == "active" and status(api, gone) == "active"
    # libvirtd restarts under the running VMs
    subprocess.run(["pkill", "-x", "libvirtd"], check=False)
    wait_for(lambda: subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True).returncode != 0,
             timeout=30, what="libvirtd to exit")
    subprocess.run(["bash", "-c", "setsid tini -s -- libvirtd >>/var/log/openhosting/libvirtd.log 2>&1 "
                    "</dev/null &"], check=True)
    wait_for(lambda: subprocess.run(["virsh", "version"], capture_output=True).returncode == 0,
             timeout=30, what="libvirtd to answer")
    time.sleep(3)  # a reconciliation pass or two
    assert status(api, keep) == "active" and status(api, gone) == "active"
    assert "rx" in api.get(f"/servers/{keep}/info").kv()
    # QEMU killed behind everyone's back: the agent notices
    os.kill(qemu_pid(keep), signal.SIGKILL)
    os.kill(qemu_pid(gone), signal.SIGKILL)
    wait_for(lambda: status(api, keep) == "stopped", what="the persistent server to be stopped")
    wait_for(lambda: status(api, gone) is None, what="the non-persistent server to be destroyed")
    assert api.post(f"/servers/{keep}/start").status == 204
    wait_for(lambda: console(site, keep).count(GUEST_UP) >= 1, what="boot after restart")
    api.post(f"/servers/{keep}/destroy")


def test_foreign_domains_are_left_alone(site, api, tmp_path):
    """A domain this installation did not create survives every reconciliation."""
    from hypervisor import defaults
    from hypervisor.connection import Connection
    from hypervisor.host import Host

    # a connection of its own: this process's shared one may predate the libvirtd restart above
    other = Host("othertest" + os.urandom(3).hex(), Connection("qemu:///system"))
    dom = defaults.new_domain(other.installation_id, str(__import__("uuid").uuid4()), memory_mib=64)
    guest = other.create_transient(defaults.set_defaults(dom))
    try:
        time.sleep(3)  # several reconciliation passes of the site's agent
        assert guest.is_active()
    finally:
        guest.remove()
