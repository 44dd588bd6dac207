"""Sandbox runs: a command in a fresh clone from the warm pool, destroyed after it.

    run(): take an idle clone ─ resume ─ one request on the run port (clock, seed, files, command)
        ─ output frames and the exit status back ─ destroy; refill in background

Randomness and time: every clone gets its own VM generation id (`clone`), and each run also writes
64 bytes of host randomness into the guest's pool, forces a reseed, and sets the guest clock from the
host's, since a paused clone's clock stopped when it was paused. Both happen in oh-run, which serves
the runs on the VM's port RUN_CHANNEL (`run`, `runport`); the guest agent is only the fallback path
(and the template's and the cold path's way in).

Threads: `run`, `floor_run`, `cold_run`, `stats` and `close` may be called from any thread.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid as uuidlib

from storage import overlay

from ..domain import domain_name
from ..errors import AgentError, DomainNotFound, HypervisorError, InvalidState
from . import programs, qemu, run as runs, vmxml
from .clone import Vm
from .errors import SandboxError, VmUnusable
from .image import GUEST_CONTROL, GUEST_WORKDIR
from .pool import ClonePool
from .run import MAX_OUTPUT_CAP, RunResult

log = logging.getLogger("openhosting.hypervisor.microvm")

_NAME_MAX = 255


def check_name(name: str) -> str:
    if (not name or name in (".", "..") or "/" in name or "\0" in name
            or len(name.encode()) > _NAME_MAX):
        raise ValueError(f"bad sandbox file name {name!r}: use a plain file name")
    return name


class WarmPool(ClonePool):
    """Paused clones of one image's template, handed out one per run and destroyed after it.

    ``work_dir`` holds the template (reused across restarts while the image, QEMU and libvirt are
    unchanged) and the clones' overlays; QEMU must be able to traverse to it (0711).
    ``fillers``: how many clones are prepared at once (default: two per host CPU, at most ``size``).
    ``warm_clones`` (default: under TCG) runs the
    image's warm-up in each clone before it joins the pool, so that the first run does not pay for
    QEMU translating the guest's code again. ``helper`` False: runs use the shell wrapper through
    the guest agent; ``serve`` False: oh-run is started through the guest agent for each run
    instead of serving runs on RUN_CHANNEL (both slower; kept for hosts without a C compiler and
    for tests of those paths). ``shared_ram`` (default) keeps the template's RAM in a file that
    every clone maps copy-on-write; False, or where QEMU cannot open that file, the RAM travels in
    the saved state and every clone copies all of it.
    """

    #: Seconds between guest-exec-status polls during a run's first second (`run.POLL`).
    POLL = runs.POLL

    def run(self, files: dict[str, bytes], command: str, *, timeout: float, output_cap: int,
            cancel: threading.Event | None = None, acquire_timeout: float | None = None) -> RunResult:
        """Run ``command`` (``/bin/sh``) in a fresh VM, in a working directory holding ``files``.

        Waits for an idle VM in arrival order (``acquire_timeout`` None: as long as it takes; then
        PoolTimeout). ``timeout`` bounds the command itself, from its start; past it the VM is
        destroyed. ``cancel`` set at any time ends the run the same way (``killed``). The output is
        capped at ``output_cap`` bytes (at most MAX_OUTPUT_CAP). Raises ValueError for a bad file
        name, PoolClosed, PoolTimeout; a VM lost mid-run is reported in ``RunResult.error``.
        """
        for name in files:
            check_name(name)
        cap = max(0, min(int(output_cap), MAX_OUTPUT_CAP))
        started = time.monotonic()
        for attempt in range(3):
            vm = self._acquire(acquire_timeout, cancel, started)
            if vm is None:   # cancelled while waiting
                seconds = time.monotonic() - started
                return RunResult(137, b"", False, False, True, seconds, wait_seconds=seconds)
            waited = time.monotonic() - started
            try:
                vm.guest.resume()
                if not vm.warm and not self._is_served(vm):
                    runs.wait_agent(vm.guest, 30)
                result = self._execute(vm, files, command, timeout=timeout, cap=cap, cancel=cancel)
            except VmUnusable as exc:
                log.warning("sandbox VM %s unusable before the run started (%s); taking another", vm.name, exc)
                self._retire(vm, wait=True)
                continue
            except HypervisorError as exc:
                if isinstance(exc, (DomainNotFound, InvalidState, AgentError)):
                    log.warning("sandbox VM %s failed before the run started (%s); taking another", vm.name, exc)
                    self._retire(vm, wait=True)
                    continue
                self._retire(vm, wait=True)
                raise
            except BaseException:
                self._retire(vm, wait=True)
                raise
            # A finished program leaves nothing running: the VM can go in the background. After a
            # timeout, a cancel or a lost agent the VM is already gone (see run.execute).
            self._retire(vm, wait=False)
            result.seconds = time.monotonic() - started
            result.wait_seconds = waited
            result.vm = vm.name
            with self._lock:
                self._served += 1
            return result
        raise SandboxError(reason=f"three VMs of image {self.image.slug} failed before the run started")

    def lease(self, *, cancel: threading.Event | None = None) -> Vm | None:
        """A fresh VM of the pool, resumed, for a caller that drives it itself (a submission runner
        through its guest ports); None when ``cancel`` was set while waiting. Waits in arrival order
        like `run`; give it back with `release` (it is destroyed, never reused)."""
        started = time.monotonic()
        for attempt in range(3):
            vm = self._acquire(None, cancel, started)
            if vm is None:
                return None
            try:
                vm.guest.resume()
            except HypervisorError as exc:
                log.warning("sandbox VM %s could not be resumed (%s); taking another", vm.name, exc)
                self._retire(vm, wait=True)
                continue
            with self._lock:
                self._served += 1
            return vm
        raise SandboxError(reason=f"three VMs of image {self.image.slug} could not be resumed")

    def release(self, vm: Vm) -> None:
        """Destroy a leased VM (in the background); the pool refills."""
        self._retire(vm, wait=False)

    def cut(self, vm: Vm) -> None:
        """Cut a leased VM's power now (a runaway tenant): its ports end, its overlay goes; `release`
        after it is a no-op."""
        self._stop(vm)

    @staticmethod
    def disk_used(vm: Vm) -> int:
        """Bytes a leased VM's own disk (its overlay) holds on the host; 0 once it is gone."""
        return overlay.allocated(vm.overlay)

    def _execute(self, vm: Vm, files: dict[str, bytes], command: str, *, timeout: float, cap: int,
                 cancel: threading.Event | None, helper: bool | None = None) -> RunResult:
        template = self._template
        return runs.execute(vm.guest, vm.port, files, command, timeout=timeout, cap=cap, cancel=cancel,
                            helper=template.helper if helper is None else helper,
                            served=template.served, stop=lambda: self._stop(vm))

    def stats(self) -> dict:
        """A snapshot: counts, template and restore times, and QEMU RSS per idle VM."""
        with self._lock:
            idle = [vm.name for vm in self._idle]
            out = {
                "image": self.image.slug, "size": self.size, "idle": len(self._idle),
                "busy": len(self._busy), "waiting": len(self._waiters), "preparing": self._preparing,
                "reaping": self._reaping,
                "served": self._served, "closed": self._closed, "error": self._error,
                "accelerator": str(self.host.accelerator),
                "template_seconds": self._template.seconds if self._template else None,
                "template_reused": self._template.reused if self._template else None,
                # how runs reach the guest: oh-run serving on its port, oh-run through the guest
                # agent, or the shell wrapper through the agent
                "run_path": (None if self._template is None else "served" if self._template.served
                             else "agent" if self._template.helper else "wrapper"),
                # clones map the template's RAM file copy-on-write, or copy the RAM from the state
                "ram": (None if self._template is None else "shared" if self._template.ram else "copied"),
                "restore_seconds": (sorted(self._restores)[len(self._restores) // 2]
                                    if self._restores else None),
            }
        memory = {name: qemu.qemu_memory(name) for name in idle}
        out["rss"] = {name: value[0] if value else None for name, value in memory.items()}
        out["rss_kib"] = {name: value[0] // 1024 for name, value in memory.items() if value}
        values = [value for value in memory.values() if value]
        # resident: all of QEMU's pages, those shared with the template's RAM file included;
        # private: only its own (what each more pooled VM costs the host)
        out["rss_mib_avg"] = round(sum(v[0] for v in values) / len(values) / 1024**2, 1) if values else None
        out["private_mib_avg"] = round(sum(v[1] for v in values) / len(values) / 1024**2, 1) if values else None
        return out

    def cold_run(self, files: dict[str, bytes], command: str, *, timeout: float, output_cap: int) -> RunResult:
        """Define and boot a fresh VM from the image, wait for its agent, run, destroy: what every
        run would cost without the pool. ``seconds`` covers all of it."""
        for name in files:
            check_name(name)
        started = time.monotonic()
        vm_uuid = str(uuidlib.uuid4())
        name = domain_name(self.host.installation_id, vm_uuid)
        path = self._clones_dir() / f"{name}.qcow2"
        overlay.create(path, self.image.base, backing_format="raw", size=overlay.virtual_size(self.image.base))
        vm = None
        try:
            xml = vmxml.boot_xml(self.host, self.image, self.vcpus, vm_uuid, path, programs.ports(),
                                 disk_cache="unsafe")
            guest, dom = vmxml.create(self.host, xml, self.image.memory_mib, paused=False)
            vm = Vm(name=name, uuid=vm_uuid, guest=guest, dom=dom, overlay=path)
            self._register(vm)
            guest.wait_for_agent(timeout=self.boot_timeout)
            runs.exec_plain(guest, f"mkdir -p {GUEST_WORKDIR} {GUEST_CONTROL}", timeout=30)
            # a booted image has no oh-run: the shell wrapper does the same work
            result = runs.execute(guest, None, files, command, timeout=timeout,
                                  cap=max(0, min(int(output_cap), MAX_OUTPUT_CAP)), cancel=None, helper=False,
                                  served=False, stop=lambda: self._stop(vm))
            result.seconds = time.monotonic() - started
            result.vm = name
            return result
        finally:
            if vm is not None:
                self._destroy(vm)
            else:
                overlay.remove(path)

    def floor_run(self, command: str) -> float:
        """The substrate's floor: seconds to resume an idle pooled VM and run ``command`` through
        guest-exec (``/bin/sh -c``), nothing else (no files, clock, seed, cap or wrapper).
        Waits for an idle VM first (not counted). Raises SandboxError when the command fails."""
        vm = self._acquire(None, None, time.monotonic())
        try:
            started = time.monotonic()
            vm.guest.resume()
            if not vm.warm:
                runs.wait_agent(vm.guest, 30)
            status = runs.exec_plain(vm.guest, command, timeout=60)
            seconds = time.monotonic() - started
        finally:
            self._retire(vm, wait=False)
        if status.get("exitcode") != 0:
            raise SandboxError(reason=f"floor command exited {status.get('exitcode')}: "
                                      f"{base64.b64decode(status.get('err-data', ''))[-300:]!r}")
        return seconds
