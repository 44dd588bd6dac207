"""Cleanup: `purge` after an agent that died (every sandbox-kind domain of this installation and the
clone overlays it left; workspace VMs are never touched), `purge_workspaces` when the installation's
workspaces go too."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from storage import overlay

from ..domain import Owner, domain_name, has_prefix
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


def remove_where(host: Host, wanted: Callable[[Owner], bool]) -> int:
    """Remove this installation's domains whose owner ``wanted`` accepts, and their libvirt logs;
    the number removed."""
    removed = 0
    for guest in host.guests():
        try:
            owner = guest.config().owner
        except DomainNotFound:      # gone meanwhile
            continue
        if owner is None or not wanted(owner):
            continue
        try:
            guest.remove()
            removed += 1
        except DomainNotFound:
            pass
        qemu.remove_log(host, guest.name)
    return removed


def purge(host: Host, work_root: Path | None = None) -> int:
    """Remove every sandbox-kind domain of this installation, and the clone overlays it left under
    ``work_root`` (files named after this installation's domains; templates are kept). Returns the
    number of domains removed. Call it before starting pools (the agent does at start), so a restart
    leaves no orphan VM; never while a pool of this installation runs."""
    removed = remove_where(host, lambda owner: owner.kind == KIND)
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
    removed = remove_where(host, lambda owner: owner.kind == WORKSPACE_KIND)
    top = Path(work_root) / "ws" if work_root is not None else None
    if top is not None and top.is_dir():
        for directory in top.iterdir():
            for name in ("disk.qcow2", "base.qcow2"):
                overlay.remove(directory / name)
            shutil.rmtree(directory, ignore_errors=True)
    return removed
