"""Spare workspace VMs: QEMUs started ahead of need, with a template's devices but no disk, waiting
for a state (``-incoming defer``). A create or a resume takes one, plugs the workspace's own disk in
at the address the state expects, and streams the state in.

Why: libvirt's start of a QEMU takes about 0.4 s under TCG, three quarters of it reading the guest
CPU's ~800 feature properties one QMP ``qom-get`` at a time (libvirt 9's qemuProcessUpdateAndVerifyCPU),
while QEMU itself is up in 0.05 s. A spare pays that before the request; taking one costs the disk's
hot-plug (about 25 ms) and the state's load.

Two purposes per template, because a state only loads into RAM of the shape it was saved from:

- ``create``: the template's RAM file mapped copy-on-write (as `clone.from_template`), for the
  template's state, which holds no RAM when the template has that file;
- ``resume``: anonymous RAM under the same backend name, for a stopped workspace's whole state.

A template is identified by a hash of its saved XML (`template_id`), recorded in the workspace's
``vm.json``; a workspace resumes from a spare only when its template is the one spares are made of.

Spares are domains of kind ``workspace`` whose owner object is ``spare-<uuid>``; taking one makes the
workspace its owner (live metadata). Only the process that owns the workspaces (the agent) keeps
spares; at its start `discard_leftovers` removes those an earlier process left. Spares are an
optimisation only: none ready, or one that fails to take over, and the caller starts a VM the
ordinary way.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import libvirt

from ..domain import domain_name
from ..errors import HypervisorError, translate
from ..guest import Guest
from ..host import Host
from ..xmlbuilder import OPENHOSTING_NS
from . import clone, qemu, runport, vmxml
from .image import WORKSPACE_KIND
from .purge import remove_where
from .template import Template

log = logging.getLogger("openhosting.hypervisor.microvm")

#: Owner object of a spare not yet taken.
OWNER_PREFIX = "spare-"
CREATE = "create"
RESUME = "resume"
#: After a spare failed to start, the filler waits this long before trying again.
RETRY_SECONDS = 10.0


def template_id(template: Template) -> str:
    """The template's identity: its saved XML (new name and uuid on every build) hashed."""
    return hashlib.sha256(template.xml.encode()).hexdigest()[:16]


def ram_for(template: Template, purpose: str) -> list[str]:
    """QEMU's RAM arguments of a spare for ``purpose`` (see the module docstring)."""
    if template.ram is None:
        return []       # QEMU's default RAM: every state carries its RAM
    if purpose == CREATE:
        return qemu.ram_args(template.ram, template.memory_mib, shared=False)
    return qemu.ram_args(None, template.memory_mib, shared=False)


@dataclass
class Spare:
    name: str
    uuid: str
    guest: Guest
    dom: libvirt.virDomain
    disk_xml: str       # the template's disk element; its source is set when the spare is taken


def start(host: Host, template: Template, purpose: str) -> Spare:
    """A spare of ``template`` for ``purpose``: started paused, waiting for a state, without a disk."""
    vm_uuid = str(uuidlib.uuid4())
    name = domain_name(host.installation_id, f"wss-{vm_uuid}")
    xml = vmxml.clone_xml(template.xml, host, name=name, vm_uuid=vm_uuid, owner_id=OWNER_PREFIX + vm_uuid,
                          disk=Path("/nonexistent"), args=[*ram_for(template, purpose), "-incoming", "defer"],
                          kind=WORKSPACE_KIND, title="spare workspace VM", disk_cache=None)
    root = ET.fromstring(xml)
    devices = root.find("devices")
    disk = devices.find("disk")
    devices.remove(disk)
    guest, dom = vmxml.create(host, ET.tostring(root, encoding="unicode"), template.memory_mib, paused=True)
    return Spare(name=name, uuid=vm_uuid, guest=guest, dom=dom, disk_xml=ET.tostring(disk, encoding="unicode"))


def take_over(host: Host, spare: Spare, owner_id: str, title: str, disk: Path, state: Path, *,
              ignore_shared: bool, timeout: float) -> clone.Vm:
    """Make ``spare`` the VM of ``owner_id``: owner and title (live metadata), ``disk`` plugged in,
    ``state`` loaded, CPU weight of a running VM, run port connected; paused, as `clone.start`
    leaves a VM. On failure the spare is destroyed and the error raised."""
    try:
        owner = ET.Element("owner")     # unqualified: libvirt puts it in the namespace given
        for tag, text in (("installation", host.installation_id), ("server", owner_id), ("kind", WORKSPACE_KIND)):
            ET.SubElement(owner, tag).text = text
        live = libvirt.VIR_DOMAIN_AFFECT_LIVE
        spare.dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, ET.tostring(owner, encoding="unicode"),
                              "openhosting", OPENHOSTING_NS, live)
        spare.dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_TITLE, title, None, None, live)
        element = ET.fromstring(spare.disk_xml)
        element.find("source").set("file", str(disk))
        spare.dom.attachDeviceFlags(ET.tostring(element, encoding="unicode"), live)
        vmxml.set_cpu_shares(spare.dom, vmxml.RUN_CPU_SHARES)
        qemu.load_state(spare.dom, state, ignore_shared=ignore_shared, timeout=timeout)
        port = runport.connect(spare.guest)
    except BaseException as exc:
        discard(host, spare)
        if isinstance(exc, libvirt.libvirtError):
            raise translate(exc, domain=spare.name, operation="take over a spare VM") from exc
        raise
    return clone.Vm(name=spare.name, uuid=spare.uuid, guest=spare.guest, dom=spare.dom, overlay=disk, port=port)


def discard(host: Host, spare: Spare) -> None:
    try:
        spare.guest.remove()
    except HypervisorError:
        pass
    qemu.remove_log(host, spare.name)


def discard_leftovers(host: Host) -> int:
    """Remove the spares of this installation that nobody took (an earlier process's)."""
    return remove_where(host, lambda owner: owner.kind == WORKSPACE_KIND
                        and (owner.server or "").startswith(OWNER_PREFIX))


class Spares:
    """Up to ``count`` ready spares per (purpose, template id) that has been asked for (`want`),
    refilled by one background thread as they are taken."""

    def __init__(self, host: Host, count: int):
        self.host = host
        self.count = count
        self._lock = threading.Lock()
        self._ready: dict[tuple[str, str], collections.deque[Spare]] = {}
        self._makers: dict[tuple[str, str], tuple[str, Callable[[], Spare]]] = {}
        self._kick = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def want(self, purpose: str, template: Template, family: str) -> None:
        """Keep spares of ``template`` for ``purpose`` from now on; those of an older template of the
        same ``family`` (image and memory size) go."""
        key = (purpose, template_id(template))
        stale: list[Spare] = []
        with self._lock:
            if key in self._makers or self._closed:
                self._kick.set()
                return
            for other, (fam, _) in list(self._makers.items()):
                if fam == family and other[0] == purpose:
                    del self._makers[other]
                    stale.extend(self._ready.pop(other, ()))
            self._makers[key] = (family, lambda: start(self.host, template, purpose))
            self._ready.setdefault(key, collections.deque())
            if self._thread is None:
                self._thread = threading.Thread(target=self._fill, name="workspace-spares", daemon=True)
                self._thread.start()
        for spare in stale:
            discard(self.host, spare)
        self._kick.set()

    def take(self, purpose: str, tid: str | None) -> Spare | None:
        """A ready spare for ``purpose`` of the template ``tid``, or None. Its replacement starts at
        the next `want` or `refill`: after the VM it became runs, not during its start."""
        with self._lock:
            ready = self._ready.get((purpose, tid or ""))
            return ready.popleft() if ready else None

    def refill(self) -> None:
        self._kick.set()

    def ready(self) -> list[str]:
        """The names of the spares ready now."""
        with self._lock:
            return [spare.name for ready in self._ready.values() for spare in ready]

    def close(self) -> None:
        """Stop refilling and remove every spare not taken."""
        with self._lock:
            self._closed = True
            spares = [s for ready in self._ready.values() for s in ready]
            self._ready.clear()
            self._makers.clear()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        for spare in spares:
            discard(self.host, spare)

    def _next(self) -> tuple[tuple[str, str], Callable[[], Spare]] | None:
        with self._lock:
            for key, (_, make) in self._makers.items():
                if len(self._ready[key]) < self.count:
                    return key, make
        return None

    def _fill(self) -> None:
        while not self._closed:
            self._kick.wait()
            self._kick.clear()
            while not self._closed and (job := self._next()) is not None:
                key, make = job
                try:
                    spare = make()
                except Exception as exc:    # the template went (a rebuild), libvirtd restarted, …
                    log.warning("could not start a spare workspace VM (%s): %s", key[0], exc)
                    time.sleep(RETRY_SECONDS)
                    continue
                with self._lock:
                    keep = key in self._makers and not self._closed
                    if keep:
                        self._ready[key].append(spare)
                if not keep:
                    discard(self.host, spare)
