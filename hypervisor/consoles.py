"""Where a server's console listens right now, for the console proxy: asked of libvirt at every
connection (a restarted server gets a new VNC port), never taken from a stored value."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import DomainNotFound
from .host import Host

_ANY = {"0.0.0.0", "::", ""}


@dataclass(frozen=True)
class VncEndpoint:
    listen: str
    port: int
    password: str | None   # what QEMU checks now (the live definition's, read with the secure flag)


def live_vnc(host: Host, server_id: str) -> VncEndpoint | None:
    """The running server's VNC endpoint (a wildcard listen address becomes loopback), or None when
    the domain is not ours, not running, or has no VNC server with a port."""
    try:
        guest = host.find(server_id)
        if guest is None or not guest.is_active():
            return None
        graphics = guest.config().vnc()
    except DomainNotFound:
        return None
    if graphics is None or graphics.port is None or graphics.port < 0:
        return None
    listen = "127.0.0.1" if (graphics.listen or "") in _ANY else graphics.listen
    return VncEndpoint(listen=listen, port=graphics.port, password=graphics.passwd)


def is_running(host: Host, server_id: str) -> bool:
    """Whether the server's domain exists and runs (False for one that is gone)."""
    try:
        guest = host.find(server_id)
        return guest is not None and guest.is_active()
    except DomainNotFound:
        return False
