"""IPv4 ranges in use on this host, and a free private /24 among them.

What counts as used: every address and route of the host's interfaces (``ip -json``; default routes
excepted, they cover everything) and every libvirt network, active or not, of any installation or
made by hand. An installation's own public network (and the bridge it brings up) is not in the way
of itself: the caller passes the names to leave out.

Picking is a read-then-define: two installations that start at the same moment must not both see a
range as free. `host_lock` is a host-wide lock file held around the read and the definition of the
network that reserves the range (libvirt keeps it, even inactive, so the next picker sees it).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import libvirt

from .errors import translate

#: Where the host-wide lock lives; /run is per boot, which is what a lock needs.
LOCK_DIR = Path("/run/openhosting")

#: The ranges picked from, in order: 10.77.0.0/24 first (the old fixed default), then the rest of
#: 10/8 upwards and around, then 172.16/12 and 192.168/16.
_PRIVATE = [ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
_FIRST = ipaddress.IPv4Network("10.77.0.0/24")


@dataclass(frozen=True)
class Use:
    """One range in use, and what uses it (``interface eth0``, ``libvirt network default``)."""
    net: ipaddress.IPv4Network
    what: str


@contextlib.contextmanager
def host_lock(name: str = "ip-pool") -> Iterator[None]:
    """An exclusive lock shared by every installation on this host (flock on a file)."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_DIR / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _ip_json(*args: str) -> list[dict]:
    try:
        out = subprocess.run(["ip", "-json", "-4", *args], capture_output=True, text=True, check=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"cannot read the host's addresses with `ip -json -4 {' '.join(args)}`: {exc}") from exc
    return json.loads(out or "[]")


def interface_uses(skip_interfaces: Iterable[str] = ()) -> list[Use]:
    """Addresses (with their prefix) and unicast routes of the host's interfaces, default routes
    excepted (local and broadcast routes repeat the addresses)."""
    skip = set(skip_interfaces)
    uses: list[Use] = []
    for link in _ip_json("addr", "show"):
        if link.get("ifname") in skip:
            continue
        for info in link.get("addr_info", []):
            if info.get("family") == "inet" and info.get("local"):
                net = ipaddress.IPv4Network(f"{info['local']}/{info.get('prefixlen', 32)}", strict=False)
                uses.append(Use(net, f"interface {link.get('ifname')} ({info['local']}/{net.prefixlen})"))
    for route in _ip_json("route", "show", "table", "all"):
        dst = route.get("dst", "")
        if dst in ("", "default") or route.get("dev") in skip or route.get("type", "unicast") != "unicast":
            continue
        try:
            net = ipaddress.IPv4Network(dst, strict=False)
        except ValueError:
            continue
        if net.prefixlen == 0:
            continue
        uses.append(Use(net, f"route {dst} dev {route.get('dev', '?')}"))
    return uses


def _network_ranges(xml_text: str) -> tuple[str | None, list[ipaddress.IPv4Network]]:
    root = ET.fromstring(xml_text)
    bridge = root.find("bridge")
    nets = []
    for ip in root.findall("ip"):
        if ip.get("family", "ipv4") != "ipv4" or not ip.get("address"):
            continue
        mask = ip.get("prefix") or ip.get("netmask") or "32"
        nets.append(ipaddress.IPv4Network(f"{ip.get('address')}/{mask}", strict=False))
    return (bridge.get("name") if bridge is not None else None), nets


def libvirt_uses(conn: libvirt.virConnect, skip_networks: Iterable[str] = ()) -> tuple[list[Use], list[str]]:
    """Every libvirt network's IPv4 ranges, active or not, except ``skip_networks``; and the bridges
    of the skipped ones (their addresses are not in the way either)."""
    skip = set(skip_networks)
    uses: list[Use] = []
    bridges: list[str] = []
    try:
        networks = conn.listAllNetworks(0)
    except libvirt.libvirtError as exc:
        raise translate(exc, operation="list networks") from exc
    for net in networks:
        try:
            name, xml = net.name(), net.XMLDesc(0)
        except libvirt.libvirtError:
            continue        # undefined while we listed
        bridge, ranges = _network_ranges(xml)
        if name in skip:
            if bridge:
                bridges.append(bridge)
            continue
        state = "active" if net.isActive() else "inactive"
        uses.extend(Use(r, f"libvirt network {name} ({r}, {state})") for r in ranges)
    return uses, bridges


def overlapping(net: ipaddress.IPv4Network, uses: Iterable[Use]) -> list[Use]:
    return [u for u in uses if u.net.overlaps(net)]


def _candidates() -> Iterator[ipaddress.IPv4Network]:
    yield _FIRST
    ten = list(_PRIVATE[0].subnets(new_prefix=24))
    start = ten.index(_FIRST)
    yield from ten[start + 1:]
    yield from ten[:start]
    for block in _PRIVATE[1:]:
        yield from block.subnets(new_prefix=24)


def pick_free(uses: Iterable[Use]) -> ipaddress.IPv4Network | None:
    """The first private /24 (in `_candidates` order) that overlaps nothing in ``uses``."""
    taken = sorted({u.net for u in uses if any(u.net.overlaps(p) for p in _PRIVATE)},
                   key=lambda n: (int(n.network_address), n.prefixlen))
    for candidate in _candidates():
        if not any(t.overlaps(candidate) for t in taken):
            return candidate
    return None


__all__ = ["Use", "host_lock", "interface_uses", "libvirt_uses", "overlapping", "pick_free", "LOCK_DIR"]
