"""Two installations on one host with default settings, a pool that overlaps, and `host purge`.

These installations run WITHOUT OPENHOSTING_IP_POOL (conftest sets a random one by default): each
picks its own free /24 and keeps it. Real gunicorn, agent, libvirt and QEMU (TCG) throughout.
"""

from __future__ import annotations

import ipaddress
import re
import signal
import subprocess
import threading
import uuid

import pytest

from .guestkit import IP_PREFIX, build_test_iso
from .test_servers_vm import console, create, upload, wait_for

pytestmark = pytest.mark.vm


def domains(state: str = "") -> set[str]:
    args = ["virsh", "-c", "qemu:///system", "list", "--name"] + (["--all"] if state == "all" else [])
    return {line for line in subprocess.run(args, capture_output=True, text=True, check=True).stdout.split() if line}


def networks(active_only: bool = False) -> set[str]:
    args = ["virsh", "-c", "qemu:///system", "net-list", "--name"] + ([] if active_only else ["--all"])
    return {line for line in subprocess.run(args, capture_output=True, text=True, check=True).stdout.split() if line}


def on_a_terminal(inst, args: list[str], answer: str) -> tuple[int, str, str]:
    """Run an admin command with a pseudo-terminal as stdin, typing ``answer``."""
    import os
    import pty

    from .support import ADMIN

    master, slave = pty.openpty()
    proc = subprocess.Popen([ADMIN, *args], env=inst.env, stdin=slave, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    os.close(slave)
    try:
        os.write(master, answer.encode())
        out, err = proc.communicate(timeout=300)
    finally:
        os.close(master)
    return proc.returncode, out, err


def leave_sandbox_leftovers(inst) -> None:
    """What an agent killed with a warm pool leaves behind (hypervisor/microvm's layout): a
    template (disk, saved state) and a clone VM (kind sandbox, paused: no CPU spent) on an overlay."""
    from hypervisor import defaults
    from hypervisor.connection import Connection
    from hypervisor.host import Host
    from hypervisor.microvm.image import KIND
    from storage import overlay

    root = inst.state_dir / "sandbox-vms" / "base"
    template, vms = root / "template-base-0123456789abcdef", root / "vms"
    for directory in (inst.state_dir / "sandbox-vms", root, template, vms):
        directory.mkdir(mode=0o711, exist_ok=True)
        directory.chmod(0o711)
    base = template / "base.raw"
    base.write_bytes(b"\0" * (1 << 20))
    overlay.create(template / "template.qcow2", base)
    (template / "template.state").write_bytes(b"saved state")
    host = Host(installation_id(inst), Connection("qemu:///system"))
    vm = str(uuid.uuid4())
    disk = overlay.create(vms / f"oh-{host.installation_id}-{vm}.qcow2", template / "template.qcow2",
                          backing_format="qcow2")
    dom = defaults.new_domain(host.installation_id, vm, memory_mib=64, kind=KIND)
    dom.disks.append(defaults.drive("block:0", str(disk), format="qcow2"))
    host.create_transient(defaults.set_defaults(dom), paused=True)


def installation_id(inst) -> str:
    return (inst.state_dir / "installation-id").read_text().strip()


def owned(names: set[str], inst) -> set[str]:
    return {n for n in names if n.startswith(f"oh-{installation_id(inst)}-")}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two installations with default settings, started at the same moment."""
    from .conftest import new_installation

    made = [new_installation(tmp_path_factory.mktemp("pair"), "sqlite", OPENHOSTING_IP_POOL=None)
            for _ in range(2)]
    errors = []

    def start(inst):
        try:
            inst.start()
        except Exception as exc:    # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(inst,)) for inst, _ in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        yield [inst for inst, _ in made]
    finally:
        for inst, drop in made:
            inst.stop()
            inst.purge_libvirt()
            drop()


@pytest.fixture(scope="module")
def servers(pair):
    """One server with a DHCP NIC in each installation, booted; (api, server id) per installation."""
    out = []
    for inst in pair:
        api = inst.client(inst.create_user("ops"))
        iso = upload(api, build_test_iso(), name="guest.iso")
        info = create(api, **{"ide:0:0": iso, "ide:0:0:media": "cdrom", "boot": "ide:0:0",
                              "nic:0:model": "e1000", "nic:0:dhcp": "auto", "persistent": "true"})
        assert info["status"] == "active", info
        out.append((api, info["server"]))
    return out


def test_two_default_installations_pick_distinct_kept_pools(pair, servers):
    pools = [ipaddress.IPv4Network((inst.state_dir / "ip-pool").read_text().strip()) for inst in pair]
    assert pools[0].prefixlen == pools[1].prefixlen == 24 and pools[0].is_private
    assert not pools[0].overlaps(pools[1])
    # each installation's guest leases an address from its own pool, and the API reports it (a
    # bound, not a sleep: two TCG guests boot through ISOLINUX at once on a shared 2-core host)
    for inst, pool, (api, sid) in zip(pair, pools, servers):
        ip = wait_for(lambda: re.search(IP_PREFIX + r"(\S+)", console(inst, sid)), timeout=600,
                      what="a DHCP lease")[1]
        assert ipaddress.IPv4Address(ip) in pool
        assert wait_for(lambda: api.get(f"/servers/{sid}/info").kv().get("nic:0:dhcp:ip"), timeout=120) == ip
    # the range is kept: a restart keeps it, whatever else the host has meanwhile
    first = pair[0]
    first.stop()
    first.start()
    assert (first.state_dir / "ip-pool").read_text().strip() == str(pools[0])
    assert first.admin("host", "pool").stdout.split() == ["ip-pool", str(pools[0])]


def test_an_overlapping_pool_is_refused_at_start_with_a_message(pair, tmp_path):
    from .conftest import new_installation

    taken = (pair[0].state_dir / "ip-pool").read_text().strip()
    inside = next(ipaddress.IPv4Network(taken).subnets(new_prefix=25))
    inst, drop = new_installation(tmp_path, "sqlite", OPENHOSTING_IP_POOL=str(inside))
    try:
        inst.admin("db", "upgrade")
        for command in (["serve", "--bind", "127.0.0.1:1"], ["agent"], ["host", "pool"]):
            r = inst.admin(*command, check=False)
            assert r.returncode != 0, r
            message = r.stderr
            assert "OPENHOSTING_IP_POOL" in message and f"oh-{installation_id(pair[0])}-pub" in message, message
            free = ipaddress.IPv4Network(re.search(r"free range such as ([\d./]+)", message)[1])
            assert not free.overlaps(ipaddress.IPv4Network(taken))
        # nothing of it was made on the host
        assert not owned(networks(), inst)
        # an interface's range is named as such (loopback is on every host)
        lo, drop_lo = new_installation(tmp_path, "sqlite", OPENHOSTING_IP_POOL="127.0.0.0/24")
        r = lo.admin("host", "pool", check=False)
        drop_lo()
        assert r.returncode != 0 and "interface lo" in r.stderr and "OPENHOSTING_IP_POOL" in r.stderr, r.stderr
        # the refused range works once given a free one, the message's suggestion
        inst.env_extra["OPENHOSTING_IP_POOL"] = str(free)
        assert inst.admin("host", "pool").stdout.split() == ["ip-pool", str(free)]
    finally:
        inst.purge_libvirt()
        drop()


def test_host_purge_removes_one_installations_objects_only(pair, servers):
    gone, kept = pair
    sandbox_vms = gone.state_dir / "sandbox-vms"
    kept_domains, kept_nets = owned(domains(), kept), owned(networks(active_only=True), kept)
    # refused while the agent runs, and without --yes when nobody can be asked
    r = gone.admin("host", "purge", "--yes", check=False)
    assert r.returncode != 0 and "agent" in r.stderr
    # the agent dies without cleaning up, leaving a sandbox clone running on its overlay
    gone.stop_agent(signal.SIGKILL)
    gone.stop_api()
    leave_sandbox_leftovers(gone)
    gone_domains, gone_nets = owned(domains("all"), gone), owned(networks(), gone)
    assert len(owned(domains(), gone)) >= 2      # the server and the sandbox clone, running
    assert gone_nets and kept_domains and kept_nets
    r = gone.admin("host", "purge", check=False)
    assert r.returncode != 0 and "--yes" in r.stderr
    # on a terminal it lists what it would remove and asks; "n" removes nothing
    code, out, err = on_a_terminal(gone, ["host", "purge"], "n\n")
    assert code != 0 and "nothing removed" in err, (out, err)
    assert all(name in out for name in gone_domains | gone_nets) and "[y/N]" in out
    assert owned(domains("all"), gone) == gone_domains
    r = gone.admin("host", "purge", "--yes")
    counts = dict(line.split() for line in r.stdout.splitlines())
    assert int(counts["domains"]) == len(gone_domains) and int(counts["networks"]) == len(gone_nets)
    assert not owned(domains("all"), gone) and not owned(networks(), gone)
    assert not list((gone.state_dir / "run").glob("console-*.log"))
    assert list(sandbox_vms.iterdir()) == []        # templates, clones' overlays, saved states, locks
    # the other installation's server and network still run, and its API still answers for them
    assert owned(domains(), kept) == kept_domains
    assert owned(networks(active_only=True), kept) == kept_nets
    api, sid = servers[1]
    assert api.get(f"/servers/{sid}/info").kv()["status"] == "active"
    # the purged installation starts again on its kept range, and its server shows stopped
    gone.start()
    api, sid = servers[0]
    assert wait_for(lambda: api.get(f"/servers/{sid}/info").kv()["status"] == "stopped", what="stopped")
    assert owned(networks(), gone)     # the range is reserved again at start


def test_pool_picking_skips_libvirt_networks_and_addresses(pair):
    """Read back what the picker saw: every libvirt network's range, inactive ones included."""
    out = subprocess.run(["virsh", "-c", "qemu:///system", "net-list", "--all", "--name"], capture_output=True,
                         text=True, check=True).stdout.split()
    ranges = []
    for name in out:
        xml = subprocess.run(["virsh", "-c", "qemu:///system", "net-dumpxml", name], capture_output=True,
                             text=True).stdout
        for address, prefix in re.findall(r"<ip [^>]*address='([\d.]+)'[^>]*prefix='(\d+)'", xml):
            ranges.append((name, ipaddress.IPv4Network(f"{address}/{prefix}", strict=False)))
        for address, mask in re.findall(r"<ip [^>]*address='([\d.]+)'[^>]*netmask='([\d.]+)'", xml):
            ranges.append((name, ipaddress.IPv4Network(f"{address}/{mask}", strict=False)))
    for inst in pair:
        pool = ipaddress.IPv4Network((inst.state_dir / "ip-pool").read_text().strip())
        mine = f"oh-{installation_id(inst)}-pub"
        assert [n for n, r in ranges if r.overlaps(pool) and n != mine] == []


def test_a_range_taken_after_start_answers_503_not_500(fresh_installation):
    """Something outside libvirt takes the range after the start-up check (a bridge with an address
    in it): creating a server with a NIC answers 503 with a fixed message and logs what happened;
    once the range is free again the same request works."""
    from .conftest import random_pool

    pool = ipaddress.IPv4Network(random_pool())
    site = fresh_installation(OPENHOSTING_IP_POOL=str(pool))
    api = site.client(site.create_user("ops"))
    bridge = f"ohtst{installation_id(site)[:6]}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{pool[1]}/24", "dev", bridge], check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        body = {"name": "vm", "cpu": "1000", "mem": "64", "nic:0:model": "e1000", "nic:0:dhcp": "auto"}
        r = api.post_kv("/servers/create", body)
        assert (r.status, r.error) == (503, "system"), r.text
        assert "network is not available" in r.text and bridge not in r.text
        assert f"already in use by interface {bridge}" in (site.state_dir / "api.log").read_text()
        assert api.get("/servers/list").text.strip() == ""      # nothing half-made
    finally:
        subprocess.run(["ip", "link", "del", bridge], check=True)
    r = api.post_kv("/servers/create", body)
    assert r.status == 200 and r.kv()["status"] == "active", r.text
    assert api.post(f"/servers/{r.kv()['server']}/destroy").status == 204
