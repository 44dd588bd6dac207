"""The warm pool's machinery: idle (paused) clones of one image's template, filled in the background,
handed out in arrival order, destroyed after use by a reaper thread.

    template ──clone.from_template──► clone ──resume, warm up, suspend──► idle (paused) in the pool
    acquire: the longest-waiting run gets the next idle clone; retire: the reaper destroys it

Threads: the pool owns a manager thread (template, then ``fillers`` filler threads) and a reaper
thread; all shared state is behind one lock, and no libvirt call is made while holding it. The runs
themselves are `sandbox.WarmPool`'s.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path

from storage import overlay

from ..connection import Accelerator
from ..domain import domain_name
from ..errors import InvalidConfig
from ..host import Host
from . import clone, qemu, run, vmxml
from .clone import Vm
from .errors import PoolBroken, PoolClosed, PoolTimeout, SandboxError
from .image import SandboxImage
from .template import Template, Templates

log = logging.getLogger("openhosting.hypervisor.microvm")


@dataclass(eq=False)
class _Waiter:
    event: threading.Event = field(default_factory=threading.Event)
    vm: Vm | None = None


class ClonePool:
    """Idle clones of one image's template; see `sandbox.WarmPool` for the parameters."""

    #: Consecutive failures after which waiting runs are told the pool is broken (the manager
    #: keeps trying in the background; a success clears it).
    BROKEN_AFTER = 3

    def __init__(self, host: Host, image: SandboxImage, work_dir: Path, size: int = 2, vcpus: int = 1, *,
                 fillers: int | None = None, warm_clones: bool | None = None, boot_timeout: float = 300,
                 helper: bool = True, serve: bool = True, shared_ram: bool = True):
        if fillers is None:
            # a clone's start is partly waiting (libvirtd, QEMU's monitor): two per CPU keep the
            # CPUs busy during a burst (measured: 4 fillers 1.93 runs/s, 2 fillers 1.69, on 2 CPUs)
            fillers = max(1, min(size, 2 * (os.cpu_count() or 1)))
        if size < 0 or vcpus < 1 or fillers < 1:
            raise InvalidConfig(reason="pool size must be at least 0, vcpus and fillers at least 1")
        self.host = host
        self.image = image
        self.work_dir = Path(work_dir).absolute()
        self.size = size
        self.vcpus = vcpus
        self.fillers = fillers
        self.boot_timeout = boot_timeout
        # Throw-away VMs without address space randomisation: a clone's warm-up then leaves QEMU's
        # translations where its run's processes look for them (measured: a C compile-and-run 1.7 s
        # -> 0.4-0.6 s). The VM, not the process, is what isolates the tenant.
        self.templates = Templates(host, image, self.work_dir, vcpus, boot_timeout=boot_timeout, helper=helper,
                                   serve=serve, shared_ram=shared_ram, aslr=False)
        self._warm_clones = warm_clones
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._idle: collections.deque[Vm] = collections.deque()
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._busy: dict[str, Vm] = {}
        self._preparing = 0
        self._all: dict[str, Vm] = {}
        self._closed = False
        self._started = False
        self._template: Template | None = None
        self._error: str | None = None
        self._restores: collections.deque[float] = collections.deque(maxlen=50)
        self._threads: list[threading.Thread] = []
        self._reap: queue.Queue = queue.Queue()
        self._reaping = 0
        self._rebuild_lock = threading.Lock()
        self._broken: str | None = None
        self._served = 0

    # --- life -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Prepare the template (or find it) and fill the pool, all in background threads."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.chmod(0o711)
        for target, name in ((self._manage, "manager"), (self._reaper, "reaper")):
            thread = threading.Thread(target=target, name=f"sandbox-{self.image.slug}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wait_ready(self, timeout: float) -> bool:
        """True once at least one VM is idle; False when ``timeout`` passes first or the pool closes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._idle:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return False
                self._cond.wait(left)
            return True

    def close(self) -> None:
        """Destroy every VM and overlay of this pool; waiting runs get PoolClosed. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            waiters, self._waiters = list(self._waiters), collections.deque()
        for w in waiters:
            w.event.set()
        self._reap.put(None)
        for thread in self._threads:
            thread.join(timeout=120)
        with self._lock:
            remaining = list(self._all.values())
            self._idle.clear()
        for vm in remaining:
            self._destroy(vm)
        self.templates.leftovers.retry()

    # --- acquiring and retiring -----------------------------------------------------------------
    def _acquire(self, acquire_timeout: float | None, cancel: threading.Event | None,
                 started: float) -> Vm | None:
        """An idle VM, taken in arrival order; None when ``cancel`` was set while waiting."""
        if not self._started:
            self.start()
        with self._cond:
            if self._closed:
                raise PoolClosed(image=self.image.slug)
            if self._idle and not self._waiters:
                vm = self._idle.popleft()
                self._busy[vm.name] = vm
                self._cond.notify_all()      # a filler may start on the replacement
                return vm
            waiter = _Waiter()
            self._waiters.append(waiter)
            self._cond.notify_all()
        while True:
            if waiter.event.wait(0.05):
                if waiter.vm is not None:
                    return waiter.vm
            expired = acquire_timeout is not None and time.monotonic() - started > acquire_timeout
            cancelled = cancel is not None and cancel.is_set()
            broken = self._broken
            if expired or cancelled or broken or self._closed:
                with self._lock:
                    if waiter.vm is not None:
                        return waiter.vm
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)
                if self._closed:
                    raise PoolClosed(image=self.image.slug)
                if cancelled:
                    return None
                if broken:
                    raise PoolBroken(image=self.image.slug, reason=broken)
                raise PoolTimeout(image=self.image.slug, timeout=acquire_timeout)

    def _deliver(self, vm: Vm) -> None:
        """A freshly prepared, paused VM: to the longest-waiting run, or into the idle queue."""
        with self._cond:
            if not self._closed:
                vm.ready_at = time.monotonic()
                if self._waiters:
                    waiter = self._waiters.popleft()
                    waiter.vm = vm
                    self._busy[vm.name] = vm
                    waiter.event.set()
                else:
                    self._idle.append(vm)
                self._cond.notify_all()
                return
        self._destroy(vm)

    def _retire(self, vm: Vm, *, wait: bool) -> None:
        with self._cond:
            self._busy.pop(vm.name, None)
            self._cond.notify_all()
        if wait:
            self._destroy(vm)
        else:
            with self._lock:
                self._reaping += 1
            self._reap.put(vm)

    def _stop(self, vm: Vm) -> None:
        """Cut the VM's power now (its program may still be running) and forget it."""
        with self._lock:
            self._busy.pop(vm.name, None)
        self._destroy(vm)

    def _destroy(self, vm: Vm) -> None:
        with self._lock:
            if vm.gone:
                return
            vm.gone = True
        if vm.port is not None:
            vm.port.close()
        self.templates.leftovers.remove(vm.guest, "sandbox VM")
        try:
            overlay.remove(vm.overlay)
        except overlay.OverlayError as exc:
            log.warning("could not remove overlay %s: %s", vm.overlay, exc)
        qemu.remove_log(self.host, vm.name)
        with self._lock:
            self._all.pop(vm.name, None)

    def _reaper(self) -> None:
        while True:
            vm = self._reap.get()
            if vm is None:
                # close(): finish what is queued, then stop
                while True:
                    try:
                        vm = self._reap.get_nowait()
                    except queue.Empty:
                        return
                    if vm is not None:
                        self._reaped(vm)
            self._reaped(vm)

    def _reaped(self, vm: Vm) -> None:
        try:
            self._destroy(vm)
        finally:
            with self._lock:
                self._reaping -= 1

    # --- the manager: template, then fillers ----------------------------------------------------
    def _manage(self) -> None:
        backoff, failures = 1.0, 0
        while not self._closed:
            try:
                self._template = self.templates.ensure()
                self._failed(None)
                break
            except Exception as exc:   # keep trying: the agent may outlive a transient failure
                failures += 1
                self._failed(f"template: {exc}", failures)
                log.exception("template of sandbox image %s failed (%d in a row)", self.image.slug, failures)
                self._pause(backoff)
                backoff = min(backoff * 2, 60)
        if self._closed:
            return
        fillers = [threading.Thread(target=self._fill, name=f"sandbox-{self.image.slug}-fill{i}", daemon=True)
                   for i in range(self.fillers)]
        for thread in fillers:
            thread.start()
        for thread in fillers:
            thread.join()

    def _pause(self, seconds: float) -> None:
        """Wait `seconds` after a failure, or until the pool closes. Other notifications (a VM released,
        a waiter leaving) do not cut it short: they would turn the backoff into a busy retry."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def _failed(self, error: str | None, failures: int = 0) -> None:
        """Record the last failure (None: a success); past BROKEN_AFTER in a row, waiting runs fail."""
        with self._cond:
            self._error = error
            self._broken = error if error is not None and failures >= self.BROKEN_AFTER else None
            if self._broken:
                self._cond.notify_all()

    def _fill(self) -> None:
        failures = 0
        while True:
            with self._cond:
                while not self._closed and len(self._idle) + self._preparing >= self._target():
                    self._cond.wait()
                if self._closed:
                    return
                self._preparing += 1
            template = self._template
            try:
                self.templates.leftovers.retry()
                vm = self._prepare_clone(template)
                failures = 0
                self._failed(None)
            except Exception as exc:
                failures += 1
                self._failed(f"clone: {exc}", failures)
                log.exception("preparing a sandbox VM of image %s failed (%d in a row)", self.image.slug, failures)
                if failures % self.BROKEN_AFTER == 0:
                    self._rebuild_template(template)
                with self._cond:
                    self._preparing -= 1
                self._pause(min(30.0, 0.5 * 2 ** failures))
                continue
            with self._cond:
                self._preparing -= 1
            self._deliver(vm)

    def _target(self) -> int:
        """How many VMs to hold idle or in preparation (lock held): the pool's size; a pool of size 0
        holds none and prepares one per waiting run (which then pays the clone's restore)."""
        return self.size if self.size > 0 else len(self._waiters)

    def _rebuild_template(self, failed: Template) -> None:
        """Clones of ``failed`` keep failing: make the template again (once, whichever filler asks)."""
        with self._rebuild_lock:
            if self._template is not failed or self._closed:
                return
            log.warning("sandbox template of image %s looks broken; preparing it again", self.image.slug)
            self.templates.discard(failed)
            try:
                self._template = self.templates.ensure()
            except Exception as exc:
                self._failed(f"template: {exc}", self.BROKEN_AFTER)
                log.exception("template of sandbox image %s failed again", self.image.slug)

    # --- clones ---------------------------------------------------------------------------------
    def _clones_dir(self) -> Path:
        path = self.work_dir / "vms"
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o711)
        return path

    def _register(self, vm: Vm) -> None:
        with self._lock:
            self._all[vm.name] = vm

    def _prepare_clone(self, template: Template) -> Vm:
        started = time.monotonic()
        vm_uuid = str(uuidlib.uuid4())
        name = domain_name(self.host.installation_id, vm_uuid)
        path = overlay.create(self._clones_dir() / f"{name}.qcow2", template.overlay, backing_format="qcow2",
                              size=overlay.virtual_size(self.image.base))
        vm = None
        try:
            vm = clone.from_template(self.host, template, path, vm_uuid=vm_uuid, name=name, on_created=self._register)
            restored = time.monotonic() - started
            guest = vm.guest
            # With runs waiting, a VM now beats a warmer VM later: the run pays the translation.
            if self._warm() and not self._waiters:
                guest.resume()
                if not self._is_served(vm):
                    run.wait_agent(guest, 60)
                result = run.execute(guest, vm.port, {}, f"cd /tmp && {{ {self.image.clone_warmup} ; }}", timeout=120,
                                     cap=1024, cancel=None, helper=template.helper, served=template.served,
                                     stop=lambda: self._stop(vm))
                # a clone whose warm-up did not end cleanly may still be busy with it, or hold its
                # reply: the next run would read that; it goes (BROKEN_AFTER counts the failures)
                if result.exit_code is None or result.timed_out or (
                        result.exit_code == 125 and result.output.startswith(b"oh-run: ")):
                    raise SandboxError(reason=f"warm-up of {name} failed: {result.error or result.output[:200]!r}")
                guest.suspend()
                vm.warm = True
            vmxml.set_cpu_shares(vm.dom, vmxml.RUN_CPU_SHARES)
            vm.prepare_seconds = time.monotonic() - started
            with self._lock:
                self._restores.append(restored)
            log.debug("sandbox VM %s ready: restored in %.3f s, warm in %.3f s", name, restored, vm.prepare_seconds)
            return vm
        except BaseException:
            with self._lock:
                vm = vm or self._all.get(name)
            if vm is not None:
                self._destroy(vm)
            else:
                overlay.remove(path)
            raise

    def _warm(self) -> bool:
        if self._warm_clones is not None:
            return self._warm_clones
        return self.host.accelerator == Accelerator.TCG

    def _is_served(self, vm: Vm) -> bool:
        """Whether runs in ``vm`` go to oh-run on RUN_CHANNEL (else through the guest agent)."""
        return vm.port is not None and self._template is not None and self._template.served
