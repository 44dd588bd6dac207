"""Isolated libvirt networks with DHCP: configuration (declared once, like domains) and verbs.

An isolated network has no ``<forward>`` element: libvirt gives it a bridge, a gateway address on
the host and a dnsmasq for DHCP, and routes nothing anywhere. Guests reach each other and the host's
address on that bridge, nothing else. Tests only ever use these. A production operator may pass
``forward_mode="nat"`` (or ``route``) to `isolated_network`'s sibling `network_config`; nothing in
the tests exercises it.

Pinned addresses (the API's ``nic:N:dhcp <ip>``) are dnsmasq static host entries (mac -> ip), set in
the definition and, for a running network, live (`Network.set_host`).
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

import libvirt

from .domain import Owner, domain_name, owned_by
from .errors import ConnectionLost, HypervisorError, InvalidConfig, NetworkNotFound, Timeout, is_connection_error, translate
from .xmlbuilder import INT, ONOFF, YESNO, XMLObject, child, children, prop


@dataclass
class DhcpRange(XMLObject):
    TAG = "range"
    start: str | None = prop("./@start")
    end: str | None = prop("./@end")


@dataclass
class DhcpHost(XMLObject):
    TAG = "host"
    mac: str | None = prop("./@mac")
    ip: str | None = prop("./@ip")
    name: str | None = prop("./@name")


@dataclass
class NetworkConfig(XMLObject):
    TAG = "network"
    name: str | None = prop("./name")
    uuid: str | None = prop("./uuid")
    owner: Owner | None = child("./metadata/openhosting:owner", Owner)
    forward_mode: str | None = prop("./forward/@mode")   # absent: isolated
    bridge: str | None = prop("./bridge/@name")           # absent: libvirt picks virbrN
    # Off for ours: one bridge, no loops to break. Libvirt's default (on, delay 0) gets the kernel's
    # 2 s floor, so a new port forwards nothing for 4 s and a guest's first ARP goes unanswered.
    stp: bool | None = prop("./bridge/@stp", ONOFF)
    mac: str | None = prop("./mac/@address")
    dns_enable: bool | None = prop("./dns/@enable", YESNO)
    address: str | None = prop("./ip/@address")
    prefix: int | None = prop("./ip/@prefix", INT)
    netmask: str | None = prop("./ip/@netmask")            # libvirt may write this instead of prefix
    dhcp_ranges: list[DhcpRange] = children("./ip/dhcp/range", DhcpRange)
    dhcp_hosts: list[DhcpHost] = children("./ip/dhcp/host", DhcpHost)

    @property
    def isolated(self) -> bool:
        return self.forward_mode is None

    def subnet(self) -> ipaddress.IPv4Network:
        if self.prefix is not None:
            return ipaddress.ip_network(f"{self.address}/{self.prefix}", strict=False)
        return ipaddress.ip_network(f"{self.address}/{self.netmask}", strict=False)


def network_config(installation_id: str, key: str, subnet: str, *, hosts: dict[str, str] | None = None,
                   dhcp_start: str | None = None, dhcp_end: str | None = None,
                   forward_mode: str | None = None) -> NetworkConfig:
    """A network named ``oh-<installation>-<key>`` on ``subnet`` (``10.99.0.0/24``).

    The host takes the first address as gateway; DHCP hands out the upper half of the subnet unless
    told otherwise; ``hosts`` pins mac -> ip (pinned addresses may lie anywhere in the subnet).
    """
    net = ipaddress.ip_network(subnet)
    if net.version != 4 or net.num_addresses < 8:
        raise InvalidConfig(reason=f"need an IPv4 subnet of at least /29, got {subnet}")
    usable = list(net.hosts())
    gateway = usable[0]
    start = ipaddress.ip_address(dhcp_start) if dhcp_start else usable[len(usable) // 2]
    end = ipaddress.ip_address(dhcp_end) if dhcp_end else usable[-1]
    for name, address in (("start", start), ("end", end)):
        if address not in net or address == gateway:
            raise InvalidConfig(reason=f"DHCP {name} {address} is not a usable address of {subnet}")
    config = NetworkConfig(
        name=domain_name(installation_id, key), owner=Owner(installation=installation_id, kind="network"),
        forward_mode=forward_mode, stp=False, address=str(gateway), prefix=net.prefixlen,
        dhcp_ranges=[DhcpRange(start=str(start), end=str(end))])
    for mac, ip in (hosts or {}).items():
        add_host(config, mac, ip)
    return config


def isolated_network(installation_id: str, key: str, subnet: str, **kw) -> NetworkConfig:
    """`network_config` with no forwarding at all: what tests and VLANs use."""
    if kw.get("forward_mode"):
        raise InvalidConfig(reason="an isolated network has no forward mode")
    return network_config(installation_id, key, subnet, **kw)


def add_host(config: NetworkConfig, mac: str, ip: str) -> DhcpHost:
    """Pin ``ip`` to ``mac`` in ``config`` (replacing an earlier pin of either)."""
    address = ipaddress.ip_address(ip)
    if config.address and address not in config.subnet():
        raise InvalidConfig(reason=f"{ip} is outside {config.subnet()}")
    if config.address and address == ipaddress.ip_address(config.address):
        raise InvalidConfig(reason=f"{ip} is the network's own gateway address")
    mac = mac.lower()
    config.dhcp_hosts = [h for h in config.dhcp_hosts if h.mac != mac and h.ip != ip]
    host = DhcpHost(mac=mac, ip=ip)
    config.dhcp_hosts.append(host)
    return host


_IDEMPOTENT = frozenset({"isActive", "isPersistent", "bridgeName", "XMLDesc", "DHCPLeases"})


@dataclass(frozen=True)
class Lease:
    mac: str
    ip: str
    prefix: int
    hostname: str | None
    expires: int


class Network:
    """Verbs on one libvirt network (get it from `Host`, which checks ownership)."""

    def __init__(self, network: libvirt.virNetwork, *, connection=None):
        self._net = network
        self._connection = connection
        self.name = network.name()

    def __repr__(self) -> str:
        return f"Network({self.name!r})"

    def _call(self, operation: str, method: str, *args):
        """``virNetwork.<method>(*args)``; after a lost connection, reads retry once (see `Guest._call`)."""
        for attempt in (1, 2):
            try:
                return getattr(self._net, method)(*args)
            except libvirt.libvirtError as exc:
                if attempt == 1 and is_connection_error(exc) and self._reconnect() and method in _IDEMPOTENT:
                    continue
                raise translate(exc, network=self.name, operation=operation) from exc

    def _reconnect(self) -> bool:
        if self._connection is None:
            return False
        self._connection.invalidate()
        try:
            self._net = self._connection.get().networkLookupByName(self.name)
        except (libvirt.libvirtError, HypervisorError):
            return False
        return True

    def start(self) -> None:
        self._call("start network", "create")

    def destroy(self) -> None:
        self._call("stop network", "destroy")

    def undefine(self) -> None:
        self._call("undefine network", "undefine")

    def remove(self) -> None:
        """Stop it if running and forget it; absent afterwards. Retried once across a reconnect."""
        for attempt in (1, 2):
            try:
                if self.is_active():
                    self.destroy()
                if self._call("remove network", "isPersistent"):
                    self.undefine()
                return
            except NetworkNotFound:
                return
            except ConnectionLost:
                if attempt == 2:
                    raise

    def is_active(self) -> bool:
        return bool(self._call("read network state", "isActive"))

    def bridge(self) -> str:
        return self._call("read network bridge", "bridgeName")

    def config(self) -> NetworkConfig:
        return NetworkConfig.from_xml(self._call("read network XML", "XMLDesc", 0))

    def set_host(self, mac: str, ip: str) -> None:
        """Pin ``ip`` to ``mac``: in the definition, and live when the network runs."""
        self.remove_host(mac)
        entry = DhcpHost(mac=mac.lower(), ip=ip)
        add_host(self.config(), entry.mac, ip)   # validates against the subnet
        self._update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, entry)

    def remove_host(self, mac: str) -> None:
        for host in self.config().dhcp_hosts:
            if host.mac == mac.lower():
                self._update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, host)

    def _update(self, command: int, host: DhcpHost) -> None:
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        if self.is_active():
            flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
        xml = host.to_xml().strip()
        self._call("update DHCP hosts", "update", command,
                   libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, xml, flags)

    def dhcp_leases(self, mac: str | None = None) -> list[Lease]:
        """Current DHCP leases (of one MAC, if given), as dnsmasq reports them to libvirt."""
        leases = self._call("read DHCP leases", "DHCPLeases", mac.lower() if mac else None, 0)
        return [Lease(mac=lease["mac"], ip=lease["ipaddr"], prefix=lease["prefix"],
                      hostname=lease.get("hostname"), expires=lease["expirytime"]) for lease in leases]

    def wait_for_lease(self, mac: str, timeout: float = 60, interval: float = 0.2) -> Lease:
        """Poll until ``mac`` holds a lease; raises Timeout past ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            leases = self.dhcp_leases(mac)
            if leases:
                return leases[0]
            if time.monotonic() > deadline:
                raise Timeout(what=f"a DHCP lease for {mac} on {self.name}", timeout=timeout)
            time.sleep(interval)


__all__ = ["NetworkConfig", "DhcpRange", "DhcpHost", "Lease", "Network", "network_config",
           "isolated_network", "add_host", "owned_by"]
