"""The template of an image: booted once, guest programs started, warmed up, suspended and saved.

    image ──boot, copy in and start the guest programs (programs.PROGRAMS), warm up──► template VM
        ──suspend, migrate to a file──► template.state + frozen template.qcow2 (+ template.ram)

With ``shared_ram`` the template's RAM lives in ``template.ram`` (QEMU maps it shared while the
template runs), the state holds only the devices, and every clone maps the RAM file copy-on-write.
Where QEMU cannot open that file the RAM travels in the state and every clone copies it.

A template directory ``template-<slug>-<key>`` is reused across processes and restarts while its key
(image files, kernel, command line, memory, vCPUs, warm-up, QEMU and libvirt versions, the guest
programs and how they start) is unchanged; making one is serialized by a file lock, and older
directories of the same slug are removed then.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shlex
import shutil
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

import libvirt

from storage import overlay

from ..errors import HypervisorError, translate
from ..host import Host
from . import programs, qemu, vmxml
from .errors import TemplateFailed
from .leftovers import Leftovers
from .image import GUEST_CONTROL, GUEST_WORKDIR, RUN_ENV, SandboxImage
from .run import WRAPPER, exec_plain

log = logging.getLogger("openhosting.hypervisor.microvm")

#: Templates booted at once in this process: an agent with a pool per image starts every template at
#: once, and under TCG nine boots sharing two CPUs each missed the 300 s agent timeout (load 60-77);
#: one after the other they are ready one by one. The boot timeout counts from the VM's start.
_BOOTING = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
#: Seconds the template's warm-up may take (then it is cut short and the template saved as it is).
WARMUP_LIMIT = 200
_FORMAT = 5      # bump when the template's layout or the run contract changes


@dataclass
class Template:
    directory: Path
    overlay: Path
    state: Path
    xml: str
    seconds: float
    reused: bool
    helper: bool          # oh-run is in the guest (else runs use the shell wrapper)
    served: bool = False  # oh-run serves runs on RUN_CHANNEL (else it is started through qemu-ga)
    ram: Path | None = None   # the template's RAM file, mapped copy-on-write by clones (else RAM is in `state`)
    running: tuple[str, ...] = ()   # the guest programs alive when the state was saved
    memory_mib: int = 0


def setup_script(started: list[tuple[str, list[str]]], copied: list[str], *, aslr: bool = True) -> str:
    """The shell script that prepares the template guest once, before its state is saved: the
    working directory, qemu-ga out of the OOM killer's reach, without ``aslr`` the guest's address
    space randomisation off, the guest programs (``copied``: their guest paths, made executable;
    ``started``: name and argv, started in their own sessions), the warm-up (``$1``), a sync, then
    ``running NAME`` for every started program still alive."""
    env = " ".join(f"{k}={v}" for k, v in RUN_ENV.items())
    lines = ["set -e", f"rm -rf {GUEST_WORKDIR}", f"mkdir -p {GUEST_WORKDIR} {GUEST_CONTROL}",
             f"chmod 0755 {GUEST_WORKDIR}"]
    if not aslr:
        lines.append("echo 0 > /proc/sys/kernel/randomize_va_space")
    lines += [f"[ ! -e {shlex.quote(path)} ] || chmod 0755 {shlex.quote(path)}" for path in copied]
    lines += ["for p in /proc/[0-9]*; do",
              '  read -r comm < "$p/comm" 2>/dev/null || continue',
              '  [ "$comm" = qemu-ga ] && echo -1000 > "$p/oom_score_adj" 2>/dev/null || true',
              "done"]
    for name, argv in started:
        pid = f"{GUEST_CONTROL}/{name}.pid"
        lines += [f"if [ -x {shlex.quote(argv[0])} ]; then",
                  f"  setsid env -i {env} {shlex.join(argv)} </dev/null >/dev/null 2>&1 &",
                  f"  echo $! > {pid}",
                  "fi"]
    # the warm-up is best effort: bounded (a compiler under TCG on a loaded host may take minutes) so
    # that the template is saved either way
    lines += ["cd /tmp", f'timeout {WARMUP_LIMIT} bash -c "$1" >/dev/null 2>&1 || true', "sync"]
    for name, _ in started:
        pid = f"{GUEST_CONTROL}/{name}.pid"
        lines += [f'if [ -s {pid} ] && kill -0 "$(cat {pid})" 2>/dev/null; then echo "running {name}"; fi']
    return "\n".join(lines) + "\n"


def _file_key(path: Path) -> list:
    st = Path(path).stat()
    return [str(Path(path).absolute()), st.st_size, st.st_mtime_ns]


class Templates:
    """Makes or finds the template of one image in ``work_dir`` (see the module docstring).

    ``helper`` False: no guest program is copied in (runs use the shell wrapper through the guest
    agent); ``serve`` False: they are copied but not started (oh-run runs one-shot through the
    agent); ``shared_ram``: RAM in a file that clones map copy-on-write; ``aslr`` False: the guest
    maps every program at the same addresses each run, so that what QEMU translated for one process
    (a clone's warm-up) serves the next (its run): TCG finds translations by virtual address too."""

    def __init__(self, host: Host, image: SandboxImage, work_dir: Path, vcpus: int = 1, *,
                 boot_timeout: float = 300, helper: bool = True, serve: bool = True, shared_ram: bool = True,
                 aslr: bool = True):
        self.host = host
        self.image = image
        self.work_dir = Path(work_dir).absolute()
        self.vcpus = vcpus
        self.boot_timeout = boot_timeout
        self.helper = helper
        self.serve = serve
        self.shared_ram = shared_ram
        self.aslr = aslr
        self._built: dict[str, tuple[Path, list[str]]] | None = None
        self.leftovers = Leftovers(host)

    def lock(self) -> qemu.FileLock:
        return qemu.FileLock(self.work_dir / f".template-{self.image.slug}.lock")

    def built(self) -> dict[str, tuple[Path, list[str]]]:
        """The guest programs to copy in: name → (host binary, argv), built once per instance."""
        if self._built is None:
            built = {}
            if self.helper:
                for program in programs.PROGRAMS:
                    made = program.build(self.work_dir / "helper")
                    if made is None:
                        log.warning("guest program %s cannot be built (no C compiler?); left out", program.name)
                    else:
                        built[program.name] = made
            self._built = built
        return self._built

    def _script(self) -> str:
        built = self.built()
        started = [(name, argv) for name, (_, argv) in built.items()] if self.serve else []
        return setup_script(started, [argv[0] for _, argv in built.values()], aslr=self.aslr)

    def key(self) -> str:
        conn = self.host.connection.get()
        image = self.image
        facts = {
            "format": _FORMAT, "slug": image.slug, "base": _file_key(image.base),
            "kernel": _file_key(image.kernel), "initramfs": _file_key(image.initramfs),
            "cmdline": image.cmdline, "memory": image.memory_mib, "vcpus": self.vcpus,
            "warmup": image.warmup, "type": str(self.host.accelerator.domain_type),
            "qemu": conn.getVersion(), "libvirt": conn.getLibVersion(),
            "setup": self._script(), "wrapper": WRAPPER, "tb": vmxml.TB_CACHE_MIB,
            "overhead": vmxml.QEMU_OVERHEAD_MIB, "ports": programs.ports(),
            "programs": {name: [binary.name, argv] for name, (binary, argv) in self.built().items()},
            "serve": self.serve, "shared_ram": self.shared_ram,
        }
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()

    def ensure(self) -> Template:
        """The current template: reused when whole and of the current key, else made (and the stale
        ones of this slug removed)."""
        self.leftovers.retry()
        key = self.key()
        directory = self.work_dir / f"template-{self.image.slug}-{key[:16]}"
        with self.lock():
            meta_path = directory / "template.json"
            if meta_path.exists():
                try:
                    meta = json.loads(meta_path.read_text())
                    files = [directory / "template.qcow2", directory / "template.state"]
                    ram = directory / meta["ram"] if meta.get("ram") else None
                    if meta.get("key") == key and all(f.exists() for f in files + ([ram] if ram else [])):
                        log.info("sandbox template of %s reused from %s", self.image.slug, directory)
                        running = tuple(meta.get("running", ()))
                        return Template(directory, files[0], files[1], meta["xml"], meta["seconds"], True,
                                        bool(meta.get("helper")), "oh-run" in running, ram, running,
                                        self.image.memory_mib)
                except (OSError, ValueError, KeyError):
                    pass
            for stale in self.work_dir.glob(f"template-{self.image.slug}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            with _BOOTING:
                return self._make(directory, key)

    def discard(self, template: Template) -> None:
        """Remove a template that looks broken (its clones keep failing); `ensure` makes it again."""
        with self.lock():
            shutil.rmtree(template.directory, ignore_errors=True)

    def _make(self, directory: Path, key: str) -> Template:
        image = self.image
        started = time.monotonic()
        directory.mkdir(parents=True)
        directory.chmod(0o711)
        disk = overlay.create(directory / "template.qcow2", image.base, backing_format="raw",
                              size=overlay.virtual_size(image.base))
        ram = self._ram_file(directory / "template.ram") if self.shared_ram else None
        vm_uuid = str(uuidlib.uuid4())
        console_log = directory / "console.log"
        ports = programs.ports()
        try:
            guest, dom = vmxml.create(self.host, vmxml.boot_xml(self.host, image, self.vcpus, vm_uuid, disk, ports,
                                                                console_log=console_log, ram=ram),
                                      image.memory_mib, paused=False)
        except HypervisorError as exc:
            if ram is None:
                raise
            # e.g. a security driver that lets QEMU open only the files libvirt knows of
            log.warning("the template of %s cannot keep its RAM in %s (%s); clones will copy their RAM",
                        image.slug, ram, exc)
            ram.unlink(missing_ok=True)
            ram = None
            guest, dom = vmxml.create(self.host, vmxml.boot_xml(self.host, image, self.vcpus, vm_uuid, disk, ports,
                                                                console_log=console_log),
                                      image.memory_mib, paused=False)
        state = directory / "template.state"
        try:
            guest.wait_for_agent(timeout=self.boot_timeout)
            booted = time.monotonic() - started
            built = self.built()
            if built:
                dirs = sorted({str(Path(argv[0]).parent) for _, argv in built.values()} | {GUEST_CONTROL})
                exec_plain(guest, "mkdir -p " + " ".join(shlex.quote(d) for d in dirs), timeout=60)
                for binary, argv in built.values():
                    guest.agent_file_write(argv[0], binary.read_bytes(), timeout=30)
            status = exec_plain(guest, self._script(), args=[image.warmup], timeout=self.boot_timeout)
            if status.get("exitcode") != 0:
                raise TemplateFailed(image=image.slug, reason="setup exited "
                                     f"{status.get('exitcode')}: {base64.b64decode(status.get('err-data', ''))!r}")
            said = set(base64.b64decode(status.get("out-data", "")).decode(errors="replace").splitlines())
            running = tuple(name for name in built if f"running {name}" in said)
            missing = [name for name in built if self.serve and name not in running]
            if missing:
                log.warning("guest programs %s did not start in the template of %s%s", ", ".join(missing),
                            image.slug, "; runs go through the guest agent" if "oh-run" in missing else "")
            guest.suspend()
            try:
                migratable = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE)
            except libvirt.libvirtError as exc:
                raise translate(exc, domain=guest.name, operation="read migratable XML") from exc
            # with the RAM in its file, the state holds the devices only
            qemu.save_state(dom, state, ignore_shared=ram is not None, timeout=300)
        finally:
            self.leftovers.remove(guest, "template VM")
            qemu.remove_log(self.host, guest.name)
        for path in (disk, state, ram):
            if path is not None:    # on disk before template.json says the template is whole
                qemu.fsync(path)
        seconds = round(time.monotonic() - started, 3)
        helper = "oh-run" in built
        meta = {"key": key, "xml": migratable, "seconds": seconds, "boot_seconds": round(booted, 3),
                "state_bytes": state.stat().st_size, "created": time.time(), "helper": helper,
                "running": list(running), "ram": ram.name if ram is not None else None,
                "memory_mib": image.memory_mib}
        tmp = directory / "template.json.tmp"
        tmp.write_text(json.dumps(meta))
        tmp.rename(directory / "template.json")
        log.info("sandbox template of %s ready in %.1f s (boot %.1f s, state %d MiB)", image.slug,
                 seconds, booted, meta["state_bytes"] >> 20)
        return Template(directory, disk, state, migratable, seconds, False, helper, "oh-run" in running, ram,
                        running, image.memory_mib)

    def _ram_file(self, path: Path) -> Path | None:
        """An empty file for the template's RAM, owned by the user QEMU runs as (QEMU opens it read-
        write even to map it copy-on-write); None when that user is unknown or the file cannot be
        given to it: the RAM then travels in the state file, and every clone copies it."""
        owner = self.host.qemu_user()
        if owner is None:
            log.warning("libvirt names no DAC user for QEMU; sandbox clones will copy their RAM")
            return None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.ftruncate(fd, self.image.memory_mib * 1024**2)
                os.fchown(fd, *owner)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("cannot prepare %s for QEMU (%s); sandbox clones will copy their RAM", path, exc)
            path.unlink(missing_ok=True)
            return None
        return path
