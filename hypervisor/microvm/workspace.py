"""Long-lived workspace VMs: cloned from an image's template (the warm path), with a disk and memory
of their own; stopped to a file on disk (no QEMU process left) and resumed from it.

Layout, one directory per workspace under ``work_root/ws/<id>`` (0711, QEMU traverses it):

    base.qcow2   a private copy of the template's small frozen overlay (→ the image's raw base), so the
                 disk outlives template rebuilds
    disk.qcow2   the workspace's own overlay on base.qcow2
    vm.json      the VM's identity (domain name, uuid, memory, RAM backend, template) and, once
                 stopped, its migratable XML
    state        the whole saved VM (RAM and devices) while stopped; removed once resumed

Templates live in ``work_root/templates/<slug>-<memory>/`` (one per image and memory size, since a
clone's RAM size is its template's; `template.Templates` reuses them across restarts).

States (`state`): ``running`` (a libvirt domain exists, paused or not), ``stopped`` (no domain, a
saved state on disk), ``missing`` (neither: never created, removed, or lost with its QEMU, e.g. across
a host reboot; `remove` clears what is left). Everything is libvirt domains and files: a new
`WorkspaceVMs` (after an agent or API restart) can stop, resume and remove what an earlier one made.

Ownership: a workspace's domain has owner kind ``workspace`` and the workspace id as the owner's
object. It is named ``oh-<installation>-ws-<id>``, or is a spare it took (`spares`: started ahead,
``oh-<installation>-wss-<uuid>``); ``vm.json`` names it (``domain``). The sandbox pool's purge and
reaper (kind ``sandbox``) and the server reconciler (kind ``server``) never touch them; `purge`
removes them all (installation cleanup).

Guest side: every template starts the registered guest programs (`programs.PROGRAMS`); `exec` uses
oh-run on ``org.openhosting.run`` (the agent path when the port cannot be reached); `guest_port`
gives the host end of ``org.openhosting.guest`` (oh-guest) once that program is registered. Resume
gives the VM a new generation id (the guest kernel reseeds its CRNG) and runs an empty command through
oh-run, which sets the guest clock from the host's and mixes in fresh host randomness.

Threads: calls for one workspace are serialized (a thread lock and a file lock, so two processes do
not collide either); calls for different workspaces run in parallel.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
import uuid as uuidlib
from dataclasses import replace
from pathlib import Path

import libvirt

from storage import overlay

from ..domain import domain_name
from ..errors import DomainNotFound, HypervisorError, InvalidConfig, InvalidState
from ..guest import Guest
from ..host import Host
from . import clone, qemu, run, runport, spares, vmxml, ws_exec
from .image import WORKSPACE_KIND, SandboxImage
from .purge import kind_of, purge_workspaces as purge  # noqa: F401 (installation cleanup)
from .run import MAX_OUTPUT_CAP, RunResult
from .template import Template, Templates

log = logging.getLogger("openhosting.hypervisor.microvm")

KIND = WORKSPACE_KIND
#: The port oh-guest serves a workspace on (the guestd branch registers the program itself).
GUEST_CHANNEL = "org.openhosting.guest"
_ID_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")

class WorkspaceVMs:
    """Workspace VMs of one installation under ``work_root`` (see the module docstring)."""

    def __init__(self, host: Host, work_root: Path, *, vcpus: int = 1, boot_timeout: float = 300,
                 template_setup: str = "", spare_vms: int = 0):
        """``template_setup``: shell run as root in each template after the image's warm-up (what
        every workspace needs made once, e.g. its user), so that clones start with it done.
        ``spare_vms``: spares kept per template and purpose (`spares`; only for the process that
        owns the workspaces, which also removes the spares an earlier one left)."""
        self.host = host
        self.spares = spares.Spares(host, spare_vms) if spare_vms > 0 else None
        if self.spares is not None:
            spares.discard_leftovers(host)
        self.template_setup = template_setup
        self.work_root = Path(work_root).absolute()
        self.vcpus = vcpus
        self.boot_timeout = boot_timeout
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._templates: dict[tuple[str, int], Templates] = {}
        self._ports = ws_exec.RunPorts()

    # --- public ---------------------------------------------------------------------------------
    def prepare(self, image: SandboxImage, memory_mib: int) -> Template:
        """Make (or find) the template workspaces of ``image`` with ``memory_mib`` are cloned from;
        `create` does it too, this lets the agent do it ahead of the first request."""
        return self._templates_of(image, memory_mib).ensure()

    def create(self, ws_id: str, image: SandboxImage, memory_mib: int) -> None:
        """A running workspace VM: a clone of the image's template (waiting for the template when it
        is being made), with its own disk and memory. InvalidState when ``ws_id`` exists already;
        on failure nothing of it is left."""
        directory = self._dir(ws_id)
        with self._serialized(ws_id):
            if self._find(ws_id) is not None or directory.exists():
                raise InvalidState(domain=self._name(ws_id), reason="the workspace exists already")
            try:
                self._create(ws_id, directory, image, memory_mib)
            except BaseException:
                self._remove(ws_id)
                raise

    def stop(self, ws_id: str) -> None:
        """Save the whole VM (RAM and devices) to ``state`` and end its QEMU: no process, no host
        memory held. Idempotent for a stopped workspace; DomainNotFound for a missing one. After a
        process died in the middle of a stop, the save it began is finished and used."""
        with self._serialized(ws_id):
            guest = self._find(ws_id)
            directory = self._dir(ws_id)
            if guest is None:
                if (directory / "state").exists():
                    return
                raise DomainNotFound(domain=self._name(ws_id))
            self._ports.close(ws_id)
            dom = self._dom(guest)
            if guest.libvirt_state()[0] != libvirt.VIR_DOMAIN_PAUSED:
                guest.suspend()
            try:
                saved = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE)
            except libvirt.libvirtError as exc:
                raise DomainNotFound(domain=guest.name, reason=str(exc)) from exc
            meta = self._meta(ws_id)
            meta["xml"] = saved
            self._write_meta(ws_id, meta)
            if qemu.save_whole(dom, directory / "state", timeout=600):
                log.info("workspace %s: the save an earlier process began is whole; used it", ws_id)
            guest.remove()
            qemu.remove_log(self.host, guest.name)

    def resume(self, ws_id: str) -> None:
        """Start the VM again from its saved state, then correct its clock and reseed its RNG.
        Idempotent for a running workspace; DomainNotFound when there is no saved state."""
        with self._serialized(ws_id):
            directory = self._dir(ws_id)
            state = directory / "state"
            guest = self._find(ws_id)
            if guest is not None:
                paused = guest.libvirt_state()[0] == libvirt.VIR_DOMAIN_PAUSED
                if not (paused and state.exists()):
                    if paused:
                        guest.resume()
                    state.unlink(missing_ok=True)   # it ran after that state was taken: stale
                    return
                # Paused with its state still on disk: a restore that a killed process began and never
                # ran (the guest runs only after the load completes). The state is still the truth.
                self._ports.close(ws_id)
                guest.remove()
                qemu.remove_log(self.host, guest.name)
            if not state.exists():
                raise DomainNotFound(domain=self._name(ws_id), reason="no saved state")
            meta = self._meta(ws_id)
            meta["domain"] = self._name(ws_id)     # unless a spare takes over
            vm = self._from_spare(ws_id, meta, spares.RESUME, directory / "disk.qcow2", state, ignore_shared=False)
            if vm is None:
                ram = qemu.ram_args(None, meta["memory_mib"], shared=False) if meta["ram_backend"] else []
                self._write_meta(ws_id, meta)
                vm = clone.start(self.host, meta["xml"], state, directory / "disk.qcow2", meta["memory_mib"], ram=ram,
                                 ignore_shared=False, **self._identity(ws_id, meta["uuid"]), timeout=600)
            self._started(ws_id, vm)
            state.unlink()          # the guest moves on: that state is stale from now on
            if self.spares is not None:
                self.spares.refill()

    def remove(self, ws_id: str) -> None:
        """Destroy the VM, its disk and its saved state. Idempotent."""
        with self._serialized(ws_id):
            self._remove(ws_id)
        with self._lock:
            self._locks.pop(ws_id, None)

    def state(self, ws_id: str) -> str:
        """``running``, ``stopped`` or ``missing`` (see the module docstring)."""
        if self._find(ws_id) is not None:
            return "running"
        return "stopped" if (self._dir(ws_id) / "state").exists() else "missing"

    def known(self) -> list[str]:
        """Every workspace id this installation has on the host: directories and domains."""
        ids = set()
        top = self.work_root / "ws"
        if top.is_dir():
            ids.update(p.name for p in top.iterdir() if p.is_dir() and _ID_RE.match(p.name))
        for guest in self.host.guests():
            if kind_of(guest) == KIND:
                try:
                    owner = guest.config().owner
                except DomainNotFound:      # removed meanwhile
                    continue
                if owner is not None and owner.server and not owner.server.startswith(spares.OWNER_PREFIX):
                    ids.add(owner.server)
        return sorted(ids)

    def attach(self, ws_id: str) -> None:
        """Connect the host end of a running VM's run port, as `create` and `resume` do: for the
        process that owns the workspaces (the agent) after a restart. oh-run waits for requests in
        poll() while the host is connected, and looks again every 5 ms while it is not."""
        with self._serialized(ws_id):
            self._ports.get(ws_id, self._running(ws_id))

    def guest_port(self, ws_id: str, channel: str = GUEST_CHANNEL) -> Path:
        """The host end (unix socket) of the running VM's port ``channel`` (oh-guest's by default).
        DomainNotFound when not running; InvalidConfig when the VM has no such port."""
        guest = self._running(ws_id)
        path = runport.port_path(guest, channel)
        if not path:
            raise InvalidConfig(reason=f"workspace {ws_id} has no {channel} port")
        return Path(path)

    def exec(self, ws_id: str, script: str, *, timeout: float, output_cap: int = MAX_OUTPUT_CAP,
             files: dict[str, bytes] | None = None) -> RunResult:
        """Run ``script`` (``/bin/sh``, as root, in /sandbox with ``files``) in the running workspace
        through oh-run: output (stdout and stderr interleaved, capped) and status. The script runs
        in a session of its own, so a background process it starts (``cmd &`` or ``setsid … &``)
        outlives it; one that keeps the output pipe open costs the call one more second (redirect
        its output). Past ``timeout`` the script's processes are killed (137, ``timed_out``) and the
        VM lives on."""
        cap = max(0, min(int(output_cap), MAX_OUTPUT_CAP))
        files = {**(files or {}), ws_exec.SCRIPT: script.encode()}
        with self._serialized(ws_id):
            guest = self._running(ws_id)
            port = self._ports.get(ws_id, guest)
            started = time.monotonic()
            if port is not None:
                result = run.execute_served(guest, port, files, ws_exec.COMMAND, timeout=timeout, cap=cap, cancel=None,
                                            stop=lambda: ws_exec.kill_run(ws_id, guest))
                if result.exit_code is None or result.timed_out:
                    self._ports.resync(ws_id, port)
            else:
                result = run.execute(guest, None, files, ws_exec.COMMAND, timeout=timeout, cap=cap, cancel=None,
                                     helper=True, served=False, stop=lambda: ws_exec.kill_run(ws_id, guest))
            result.seconds = time.monotonic() - started
            result.vm = guest.name
            return result

    # --- inside ---------------------------------------------------------------------------------
    def _create(self, ws_id: str, directory: Path, image: SandboxImage, memory_mib: int) -> None:
        templates = self._templates_of(image, memory_mib)
        template = templates.ensure()
        directory.mkdir(parents=True)
        directory.chmod(0o711)
        vm_uuid = str(uuidlib.uuid4())
        with templates.lock():      # a rebuild must not pull the template away in the meantime
            if not template.directory.exists():
                template = None
            else:
                base = overlay.copy(template.overlay, directory / "base.qcow2")
                disk = overlay.create(directory / "disk.qcow2", base, backing_format="qcow2",
                                      size=overlay.virtual_size(image.base))
                meta = {"id": ws_id, "uuid": vm_uuid, "image": image.slug, "memory_mib": memory_mib,
                        "ram_backend": template.ram is not None, "created": time.time(),
                        "template": spares.template_id(template), "domain": self._name(ws_id)}
                self._write_meta(ws_id, meta)
                vm = self._from_spare(ws_id, meta, spares.CREATE, disk, template.state,
                                      ignore_shared=template.ram is not None)
                if vm is None:
                    vm = clone.from_template(self.host, template, disk, **self._identity(ws_id, vm_uuid))
        if template is None:    # rebuilt between ensure() and the lock: once more, from the new one
            shutil.rmtree(directory)
            return self._create(ws_id, directory, image, memory_mib)
        self._started(ws_id, vm)
        if self.spares is not None:
            for purpose in (spares.CREATE, spares.RESUME):
                self.spares.want(purpose, template, family=f"{image.slug}-{memory_mib}")

    def _from_spare(self, ws_id: str, meta: dict, purpose: str, disk: Path, state: Path, *,
                    ignore_shared: bool) -> clone.Vm | None:
        """The workspace's VM made of a spare of its template with ``state`` loaded, or None: no
        spare ready, or it failed to take over (``meta`` is written back; the caller then starts
        one the ordinary way)."""
        spare = self.spares.take(purpose, meta.get("template")) if self.spares is not None else None
        if spare is None:
            return None
        self._write_meta(ws_id, {**meta, "domain": spare.name})   # findable before it is the workspace's
        try:
            return spares.take_over(self.host, spare, ws_id, f"workspace {ws_id}", disk, state,
                                    ignore_shared=ignore_shared, timeout=600)
        except HypervisorError as exc:
            log.warning("workspace %s: a spare VM failed to take over (%s); starting one", ws_id, exc)
            self._write_meta(ws_id, meta)
            return None

    def _started(self, ws_id: str, vm: clone.Vm) -> None:
        """A VM just loaded (paused): run it, keep its run port, set its clock and entropy."""
        if vm.port is not None:
            self._ports.keep(ws_id, vm.port)
        vm.guest.resume()
        if vm.port is not None:
            # The only VM of this workspace: a restored guest on a host at load 50 took over the
            # pool's 15 s to acknowledge its first run (a resume failed with state 5 for that).
            # an empty command: oh-run sets the clock and seeds, and answers without running anything
            result = run.execute_served(vm.guest, vm.port, {}, "", timeout=60, cap=0, cancel=None,
                                        stop=lambda: None, ack_timeout=120)
        else:
            run.wait_agent(vm.guest, 60)
            result = run.execute(vm.guest, None, {}, "true", timeout=60, cap=0, cancel=None, helper=True,
                                 served=False, stop=lambda: None)
        if result.exit_code != 0:
            raise InvalidState(domain=vm.name, reason=f"the guest did not answer after its start: {result}")

    def _identity(self, ws_id: str, vm_uuid: str) -> dict:
        return {"vm_uuid": vm_uuid, "name": self._name(ws_id), "owner_id": ws_id, "kind": KIND,
                "title": f"workspace {ws_id}", "disk_cache": None, "cpu_shares": vmxml.RUN_CPU_SHARES}

    def _remove(self, ws_id: str) -> None:
        self._ports.close(ws_id)
        guest = self._find(ws_id)
        if guest is not None:
            guest.remove()
            qemu.remove_log(self.host, guest.name)
        directory = self._dir(ws_id)
        for name in ("disk.qcow2", "base.qcow2"):
            overlay.remove(directory / name)
        shutil.rmtree(directory, ignore_errors=True)

    # --- names and files ------------------------------------------------------------------------
    def _templates_of(self, image: SandboxImage, memory_mib: int) -> Templates:
        with self._lock:
            key = (image.slug, memory_mib)
            if key not in self._templates or self._templates[key].image.base != image.base:
                work = self.work_root / "templates" / f"{image.slug}-{memory_mib}"
                for path in (self.work_root, self.work_root / "templates", work):
                    path.mkdir(exist_ok=True)
                    path.chmod(0o711)
                warmup = f"{image.warmup}\n{self.template_setup}" if self.template_setup else image.warmup
                self._templates[key] = Templates(self.host, replace(image, memory_mib=memory_mib, warmup=warmup), work,
                                                 self.vcpus, boot_timeout=self.boot_timeout)
            return self._templates[key]

    def _name(self, ws_id: str) -> str:
        if not _ID_RE.match(ws_id or ""):
            raise InvalidConfig(reason=f"bad workspace id {ws_id!r}: use 1-64 of [A-Za-z0-9_]")
        return domain_name(self.host.installation_id, f"ws-{ws_id}")

    def _dir(self, ws_id: str) -> Path:
        self._name(ws_id)
        return self.work_root / "ws" / ws_id

    def _meta(self, ws_id: str) -> dict:
        try:
            return json.loads((self._dir(ws_id) / "vm.json").read_text())
        except (OSError, ValueError) as exc:
            raise DomainNotFound(domain=self._name(ws_id), reason=f"vm.json: {exc}") from exc

    def _write_meta(self, ws_id: str, meta: dict) -> None:
        path = self._dir(ws_id) / "vm.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta))
        tmp.rename(path)

    def _find(self, ws_id: str) -> Guest | None:
        """The workspace's domain: named for the workspace, or a spare it took (``domain`` in vm.json)."""
        name = self._name(ws_id)
        try:
            name = json.loads((self._dir(ws_id) / "vm.json").read_text()).get("domain") or name
        except (OSError, ValueError):
            pass
        try:
            return self.host.find(name)
        except DomainNotFound:
            return None

    def _running(self, ws_id: str) -> Guest:
        guest = self._find(ws_id)
        if guest is None:
            raise DomainNotFound(domain=self._name(ws_id), reason="the workspace is not running")
        return guest

    def _dom(self, guest: Guest) -> libvirt.virDomain:
        try:
            return self.host.connection.get().lookupByName(guest.name)
        except libvirt.libvirtError as exc:
            raise DomainNotFound(domain=guest.name, reason=str(exc)) from exc

    def _serialized(self, ws_id: str):
        self._name(ws_id)
        with self._lock:
            lock = self._locks.setdefault(ws_id, threading.Lock())
        return qemu.BothLocks(lock, self.work_root / "locks" / f"{ws_id}.lock")

