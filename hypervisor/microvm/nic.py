"""A network device for a leased sandbox VM whose tenant asked for network (a submission scenario with
`network: true`, when the operator allows `isolated`).

The network is one libvirt network per installation, ``oh-<installation>-subnet``: a bridge with an
address for the host, on a private /24 that nothing else on the host uses (picked like the public
network, `hypervisor.subnets`), with **no forward** (libvirt routes nothing beyond the bridge), no
DHCP and no DNS. A VM gets a virtio NIC hot-plugged into its free PCIe root port and a static
address set from inside the guest (`GUEST_SETUP`, python3 ioctls: the images have no iproute2 and no
DHCP client). What it reaches: the host's address on the bridge and the other VMs on it; every other
destination is unreachable (no route). The NIC goes with the VM.
"""

from __future__ import annotations

import threading
from pathlib import Path

import libvirt

from ..domain import Owner, domain_name
from ..errors import InvalidConfig, OperationFailed
from ..host import Host
from ..networks import NetworkConfig
from .. import subnets

KEY = "subnet"

#: Run as root in the guest: python3 GUEST_SETUP MAC ADDRESS PREFIX HOST. Waits for the hot-plugged
#: interface, brings up lo and it, sets the address (the kernel adds the subnet's route; nothing else),
#: then waits (at most 10 s) until the host's address resolves, so the tenant's command starts on a
#: network that answers (a bridge with STP on forwards nothing from a new port for its first 4 s).
GUEST_SETUP = r"""
import fcntl, os, socket, struct, sys, time
mac, address, prefix, host = sys.argv[1].lower(), sys.argv[2], int(sys.argv[3]), sys.argv[4]
def named():
    for name in os.listdir("/sys/class/net"):
        try:
            if open(f"/sys/class/net/{name}/address").read().strip().lower() == mac:
                return name
        except OSError:
            pass
for _ in range(300):
    name = named()
    if name:
        break
    time.sleep(0.1)
else:
    sys.exit(f"no interface with MAC {mac} appeared")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def req(n, ip):
    return struct.pack("16sH2s4s8s", n.encode(), socket.AF_INET, b"\0\0", socket.inet_aton(ip), b"\0" * 8)
def up(n):
    flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH22s", n.encode(), 0, b""))[:18])[1]
    fcntl.ioctl(s, 0x8914, struct.pack("16sH22s", n.encode(), flags | 1, b""))
up("lo")
fcntl.ioctl(s, 0x8916, req(name, address))
mask = socket.inet_ntoa(struct.pack("!I", (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF))
fcntl.ioctl(s, 0x891C, req(name, mask))
up(name)
def resolved():
    for line in open("/proc/net/arp").read().splitlines()[1:]:
        f = line.split()
        if f[0] == host and int(f[2], 16) & 2:
            return True
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(50):
    try:
        udp.sendto(b"", (host, 9))
    except OSError:
        pass
    time.sleep(0.2)
    if resolved():
        break
else:
    print(f"{name}: the host {host} did not answer", file=sys.stderr)
print(name)
"""

_lock = threading.Lock()
#: libvirt (9.0) writes the MACs of every NIC plugged into a network to ``<this>/<bridge>.macs``,
#: but makes the directory only when it starts a dnsmasq: on a host where no network with DHCP or
#: DNS ever started, every plug into this one (it has neither) fails with "Failed to create file
#: '/var/lib/libvirt/dnsmasq/virbr2.macs.new'". The path of a system connection's driver.
DNSMASQ_STATE = Path("/var/lib/libvirt/dnsmasq")


def isolated_network(host: Host) -> NetworkConfig:
    """The installation's isolated network for tenant VMs, defined (on a free private /24) and
    started when needed."""
    name = domain_name(host.installation_id, KEY)
    with _lock:
        net = host.find_network(name)
        if net is None:
            with subnets.host_lock():
                net = host.find_network(name)
                if net is None:
                    uses, bridges = subnets.libvirt_uses(host.connection.get(), ())
                    free = subnets.pick_free(uses + subnets.interface_uses(bridges))
                    if free is None:
                        raise InvalidConfig(reason="no free private /24 on this host for the tenants' network")
                    gateway = next(free.hosts())
                    net = host.define_network(NetworkConfig(
                        name=name, owner=Owner(installation=host.installation_id, kind="network"),
                        address=str(gateway), prefix=free.prefixlen, dns_enable=False, stp=False))
        if not net.is_active():
            net.start()
        if DNSMASQ_STATE.parent.is_dir():
            DNSMASQ_STATE.mkdir(mode=0o755, exist_ok=True)
        return net.config()


def address_for(config: NetworkConfig, index: int) -> str:
    """The index-th tenant address of the network (the host has the first; they go round)."""
    hosts = list(config.subnet().hosts())[1:]
    return str(hosts[index % len(hosts)])


def mac_for(index: int) -> str:
    n = index % (1 << 24)
    return f"52:54:00:{n >> 16 & 0xff:02x}:{n >> 8 & 0xff:02x}:{n & 0xff:02x}"


def attach(dom: libvirt.virDomain, network: str, mac: str) -> None:
    """Hot-plug a virtio NIC on ``network`` into the running VM ``dom`` (live only: it goes with it)."""
    xml = (f"<interface type='network'><mac address='{mac}'/><source network='{network}'/>"
           "<model type='virtio'/></interface>")
    try:
        dom.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError as exc:
        raise OperationFailed(operation="attach a network device", reason=str(exc)) from exc
