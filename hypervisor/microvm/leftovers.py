"""VMs whose removal failed, removed again later.

When libvirtd is away (restarting, say) at the moment a pool removes a VM, the removal fails and the
VM would run on for good; an orphaned template VM also holds its console log, so that every later
template of the image fails with "busy". A pool therefore remembers such names and removes them
again before it makes the next template or clone, and when it closes.
"""

from __future__ import annotations

import logging
import threading

from ..errors import HypervisorError
from ..guest import Guest
from ..host import Host
from . import qemu

log = logging.getLogger("openhosting.sandbox")


class Leftovers:
    """Thread-safe; no libvirt call is made while holding its lock."""

    def __init__(self, host: Host):
        self.host = host
        self._names: set[str] = set()
        self._lock = threading.Lock()

    def remove(self, guest: Guest, what: str) -> None:
        """Remove ``guest`` now, or remember it for `retry` when libvirt refuses."""
        try:
            guest.remove()
        except HypervisorError as exc:
            log.warning("could not remove %s %s (tried again later): %s", what, guest.name, exc)
            with self._lock:
                self._names.add(guest.name)

    def retry(self) -> None:
        with self._lock:
            names = list(self._names)
        for name in names:
            try:
                guest = self.host.find(name)
                if guest is not None:
                    guest.remove()
            except HypervisorError as exc:
                log.warning("VM %s still cannot be removed: %s", name, exc)
                continue
            qemu.remove_log(self.host, name)
            with self._lock:
                self._names.discard(name)
