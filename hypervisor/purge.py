"""Remove everything one installation made on this host, and nothing of anyone else's.

What goes: every domain this installation owns (name prefix AND metadata owner, see `Host`), running
or defined, with its managed-save image and libvirt's log of it; every network it owns; the sandbox
work directory's clone overlays, templates (disk, saved state, RAM file) and lock files. What stays:
other installations' objects and anything made by hand (ownership is checked object by object),
and the installation's own data (database, drives), which `openhosting-admin host purge` never
touches. Sockets of the channels libvirt made for a domain go with the domain.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .microvm.purge import purge as purge_sandboxes
from .microvm import qemu
from .errors import DomainNotFound, NetworkNotFound
from .host import Host


@dataclass
class Purged:
    sandboxes: int = 0
    domains: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def owned_objects(host: Host) -> tuple[list[str], list[str]]:
    """The names of this installation's domains and networks (what `purge` would remove)."""
    return [g.name for g in host.guests()], [n.name for n in host.networks()]


def purge(host: Host, sandbox_root: Path | None = None) -> Purged:
    done = Purged()
    # Sandbox VMs first, with their overlays (microvm.purge knows their files), then the rest.
    done.sandboxes = purge_sandboxes(host, sandbox_root)
    for guest in host.guests():
        try:
            guest.remove()
        except DomainNotFound:
            continue
        qemu.remove_log(host, guest.name)
        done.domains.append(guest.name)
    for net in host.networks():
        try:
            net.remove()
        except NetworkNotFound:
            continue
        done.networks.append(net.name)
    if sandbox_root is not None and Path(sandbox_root).is_dir():
        root = Path(sandbox_root)
        for path in sorted(root.iterdir()):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            done.files.append(str(path))
    return done


__all__ = ["Purged", "purge", "owned_objects"]
