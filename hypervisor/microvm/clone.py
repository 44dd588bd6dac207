"""A clone: a new VM started from a saved state (a template's, or a stopped workspace's).

libvirt's own restore (`virDomainRestoreFlags`) refuses a changed name or uuid in the replacement XML
("Target domain uuid … does not match source"), so one saved state could only ever run once at a
time. A clone is therefore started by libvirt from the saved migratable XML with a new name, uuid, VM
generation id and disk, plus ``<qemu:commandline>`` ``-incoming defer``; the state then streams in
through the monitor (`qemu.load_state`: ``getfd`` + ``migrate-incoming fd:``). libvirt keeps managing
the VM (cgroups, DAC labels, the agent channel, destroy); it marks the domain tainted (custom-argv,
custom-monitor), which only shows in its log.

Every clone gets its own VM generation id, so the guest kernel reseeds its CRNG the moment it first
runs ("crng reseeded due to virtual machine fork").
"""

from __future__ import annotations

import socket
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import libvirt

from ..domain import domain_name
from ..guest import Guest
from ..host import Host
from . import qemu, runport, vmxml
from .image import KIND
from .template import Template


@dataclass
class Vm:
    name: str
    uuid: str
    guest: Guest
    dom: libvirt.virDomain     # for the monitor commands Guest has no verb for
    overlay: Path
    prepare_seconds: float = 0.0
    ready_at: float = 0.0
    gone: bool = False
    warm: bool = False         # resumed once since its restore (agent connected, code translated)
    port: socket.socket | None = None   # the host end of RUN_CHANNEL, when connected


def start(host: Host, saved_xml: str, state: Path, disk: Path, memory_mib: int, *, ram: list[str],
          ignore_shared: bool, vm_uuid: str | None = None, name: str | None = None, owner_id: str | None = None,
          kind: str = KIND, title: str | None = None, disk_cache: str | None = "unsafe",
          cpu_shares: int = vmxml.PREPARE_CPU_SHARES, on_created: Callable[[Vm], None] | None = None,
          timeout: float = 120) -> Vm:
    """A VM from ``saved_xml`` on ``disk`` with ``state`` loaded into it, paused, its RUN_CHANNEL
    connected. ``ram``: the QEMU arguments of its RAM (`qemu.ram_args`, or none: QEMU's default);
    ``ignore_shared``: the state holds no RAM (it is the shared file ``ram`` maps). Name, uuid and
    owner default to a sandbox's (``oh-<installation>-<uuid>``). ``on_created`` sees the VM as soon
    as its domain exists (to be destroyed by its owner if what follows fails); on failure the domain
    is destroyed here (the disk is the caller's)."""
    vm_uuid = vm_uuid or str(uuidlib.uuid4())
    name = name or domain_name(host.installation_id, vm_uuid)
    xml = vmxml.clone_xml(saved_xml, host, name=name, vm_uuid=vm_uuid, owner_id=owner_id or vm_uuid, disk=disk,
                          args=[*ram, "-incoming", "defer"], kind=kind, title=title, disk_cache=disk_cache,
                          cpu_shares=cpu_shares)
    guest, dom = vmxml.create(host, xml, memory_mib, paused=True)
    vm = Vm(name=name, uuid=vm_uuid, guest=guest, dom=dom, overlay=disk)
    try:
        if on_created is not None:
            on_created(vm)
        qemu.load_state(dom, state, ignore_shared=ignore_shared, timeout=timeout)
        vm.port = runport.connect(guest)
    except BaseException:
        if on_created is None:
            if vm.port is not None:
                vm.port.close()
            try:
                guest.remove()
            except Exception:
                pass
            qemu.remove_log(host, name)
        raise
    return vm


def from_template(host: Host, template: Template, disk: Path, **kw) -> Vm:
    """A clone of ``template`` on ``disk`` (an overlay on the template's), mapping the template's RAM
    file copy-on-write when it has one (else copying the RAM from the state)."""
    ram = [] if template.ram is None else qemu.ram_args(template.ram, template.memory_mib, shared=False)
    return start(host, template.xml, template.state, disk, template.memory_mib, ram=ram,
                 ignore_shared=template.ram is not None, **kw)
