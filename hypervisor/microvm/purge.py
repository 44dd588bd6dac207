"""Cleanup: `purge` after an agent that died (every sandbox-kind domain of this installation and the
clone overlays it left; workspace VMs are never touched), `purge_workspaces` when the installation's
workspaces go too."""

from __future__ import annotations

import shutil
from pathlib import Path

from storage import overlay

from ..domain import domain_name, has_prefix
from ..errors import DomainNotFound
from ..guest import Guest
from ..host import Host
from . import qemu
from .image import KIND, WORKSPACE_KIND


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


def purge_workspaces(host: Host, work_root: Path | None = None) -> int:
    """Remove every workspace VM of this installation and, with ``work_root`` (`WorkspaceVMs`'), their
    disks and saved states (installation cleanup; never while the agent runs). Returns the number of
    domains removed."""
    removed = 0
    for guest in host.guests():
        if kind_of(guest) == WORKSPACE_KIND:
            try:
                guest.remove()
                removed += 1
            except DomainNotFound:
                pass
            qemu.remove_log(host, guest.name)
    top = Path(work_root) / "ws" if work_root is not None else None
    if top is not None and top.is_dir():
        for directory in top.iterdir():
            for name in ("disk.qcow2", "base.qcow2"):
                overlay.remove(directory / name)
            shutil.rmtree(directory, ignore_errors=True)
    return removed
