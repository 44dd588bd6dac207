"""Where a server's console listens right now, for the console proxy: asked of libvirt at every
connection (a restarted server gets a new VNC port), never taken from a stored value."""

from __future__ import annotations

from .errors import DomainNotFound
from .guest import VncAddress
from .host import Host

_ANY = {"0.0.0.0", "::", ""}


def live_vnc(host: Host, server_id: str) -> VncAddress | None:
    """The running server's VNC address (a wildcard listen address becomes loopback), or None when the
    domain is not ours, not running, or has no VNC server."""
    try:
        guest = host.find(server_id)
        if guest is None or not guest.is_active():
            return None
        address = guest.vnc_address()
    except DomainNotFound:
        return None
    if address is None:
        return None
    listen = "127.0.0.1" if address.listen in _ANY else address.listen
    return VncAddress(listen=listen, port=address.port)


def is_running(host: Host, server_id: str) -> bool:
    """Whether the server's domain exists and runs (False for one that is gone)."""
    try:
        guest = host.find(server_id)
        return guest is not None and guest.is_active()
    except DomainNotFound:
        return False
