"""Cleanup after a process that died: every sandbox-kind domain of this installation and the clone
overlays it left. Workspace VMs (kind ``workspace``) are never touched here (`workspace.purge`)."""

from __future__ import annotations

from pathlib import Path

from storage import overlay

from ..domain import domain_name, has_prefix
from ..errors import DomainNotFound
from ..guest import Guest
from ..host import Host
from . import qemu
from .image import KIND


def kind_of(guest: Guest) -> str | None:
    """The owner kind in the domain's metadata (None: not ours to judge, or gone)."""
    try:
        owner = guest.config().owner
    except DomainNotFound:
        return None
    return None if owner is None else owner.kind


def purge(host: Host, work_root: Path | None = None) -> int:
    """Remove every sandbox-kind domain of this installation, and the clone overlays it left under
    ``work_root`` (files named after this installation's domains; templates are kept). Returns the
    number of domains removed. Call it before starting pools (the agent does at start), so a restart
    leaves no orphan VM; never while a pool of this installation runs."""
    removed = 0
    for guest in host.guests():
        if kind_of(guest) != KIND:
            continue
        try:
            guest.remove()
            removed += 1
        except DomainNotFound:
            pass
        qemu.remove_log(host, guest.name)
    if work_root is not None and Path(work_root).exists():
        prefix = domain_name(host.installation_id, "")
        for path in Path(work_root).rglob(f"{prefix}*.qcow2"):
            if has_prefix(path.stem, host.installation_id):
                overlay.remove(path)
    return removed
