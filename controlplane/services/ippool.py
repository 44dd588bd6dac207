"""The public network's address range: OPENHOSTING_IP_POOL, or a free private /24 picked once.

`ensure` runs when the API (`serve`) and the agent start, before anything serves a request. With
OPENHOSTING_IP_POOL set, it checks that the range overlaps nothing on the host (interfaces, routes,
every libvirt network of every installation, active or not); without it, it picks a free private
/24 the first time and keeps it in ``<state>/ip-pool``, so it never changes afterwards. Either way
it then defines this installation's public network (inactive) if it is not defined yet: libvirt
holds that definition, so the next installation to pick sees the range as taken. The read and the
definition happen under a host-wide lock (`hypervisor.subnets.host_lock`), so two installations
starting at the same moment never pick the same range.

When the range overlaps something, `PoolConflict` says what, and which free range to use instead;
the service refuses to start with that message rather than answer requests with a 500 later.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path

from ..config import Settings
from .resources import PublicNetwork

log = logging.getLogger("openhosting.ippool")

POOL_FILE = "ip-pool"
VARIABLE = "OPENHOSTING_IP_POOL"


class PoolConflict(Exception):
    """The public network's range cannot be used; the message tells the operator what to do."""


def _pool_file(settings: Settings) -> Path:
    return settings.state_dir / POOL_FILE


def public_pool(settings: Settings) -> str:
    """The range in force: OPENHOSTING_IP_POOL, else the one kept in the state directory (picked
    now, under the host lock, if this installation never picked one)."""
    if settings.ip_pool:
        return settings.ip_pool
    try:
        return _pool_file(settings).read_text().strip()
    except FileNotFoundError:
        return ensure(settings)


def _substrate(settings: Settings, cidr: str = ""):
    from hypervisor.host import Host
    from hypervisor.servers import ServerSubstrate

    host = Host(settings.installation_id, uri=settings.libvirt_uri)
    return ServerSubstrate(host, settings.run_dir, cidr, settings.console_address, settings.public_forward)


def _write(path: Path, cidr: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(cidr + "\n")
    os.replace(tmp, path)


def _describe(uses) -> str:
    return "; ".join(u.what for u in uses[:3]) + (f" (and {len(uses) - 3} more)" if len(uses) > 3 else "")


def ensure(settings: Settings) -> str:
    """Check or pick the range and reserve it (see the module doc); returns it or raises PoolConflict."""
    from hypervisor import subnets
    from hypervisor.errors import HypervisorError, InvalidState

    if settings.ip_pool:
        try:
            PublicNetwork(settings.ip_pool)
        except ValueError as exc:
            raise PoolConflict(str(exc)) from None
    probe = _substrate(settings)      # to read this installation's public network, whatever its range
    host = probe.host
    try:
        with subnets.host_lock():
            own = [net.name for net in host.networks()]
            lv_uses, bridges = subnets.libvirt_uses(host.connection.get(), own)
            uses = lv_uses + subnets.interface_uses(bridges)
            cidr = _choose(settings, uses, probe.public_network_subnet())
            try:
                _substrate(settings, cidr).reserve_public_network()
            except InvalidState:
                raise PoolConflict(f"this installation's public network runs on {probe.public_network_subnet()}, "
                                   f"not on {cidr}: stop its servers (or run `openhosting-admin host purge`) "
                                   f"before changing {VARIABLE}") from None
            return cidr
    except HypervisorError as exc:
        raise PoolConflict(f"cannot check {VARIABLE} against libvirt's networks at {settings.libvirt_uri}: "
                           f"{exc.message}") from None
    except RuntimeError as exc:       # `ip` missing or failing
        raise PoolConflict(str(exc)) from None


def _choose(settings: Settings, uses, own_subnet: ipaddress.IPv4Network | None) -> str:
    from hypervisor.subnets import overlapping, pick_free

    path = _pool_file(settings)
    if settings.ip_pool:
        cidr, source = settings.ip_pool, f"{VARIABLE}={settings.ip_pool}"
    else:
        try:
            cidr = path.read_text().strip()
            source = f"the IP pool {cidr} this installation picked (kept in {path})"
        except FileNotFoundError:
            cidr = None
    if cidr is None:
        # An installation from before the pick kept its public network: adopt its range.
        if own_subnet is not None and not overlapping(own_subnet, uses):
            chosen = own_subnet
        else:
            chosen = pick_free(uses)
            if chosen is None:
                raise PoolConflict(f"no free private /24 is left on this host; set {VARIABLE} to a free range")
        _write(path, str(chosen))
        log.info("picked %s for the public network (kept in %s)", chosen, path)
        return str(chosen)
    net = ipaddress.IPv4Network(cidr)
    clashes = overlapping(net, uses)
    if clashes:
        free = pick_free(uses)
        hint = f"set {VARIABLE} to a free range such as {free}" if free else f"free a range and set {VARIABLE}"
        if settings.ip_pool:
            hint += ", or unset it to have a free one picked and kept"
        raise PoolConflict(f"{source} overlaps {_describe(clashes)}: {hint}")
    return cidr
