"""Sandboxes on libvirt: a warm pool of restored-and-paused VMs per image, and code runs in them.

The shape (docs/sandboxes.md has the measurements and the reasons):

    image ──boot once, start oh-run --serve, warm up──► template VM ──suspend, migrate to a file──►
        template state + frozen template overlay (template.qcow2)
    template state ──createXML(-incoming defer, paused) + migrate-incoming fd──► clone VM
        (own name, uuid, genid, overlay clone.qcow2 → template.qcow2 → base raw), host end of its
        run port connected
    clone ──resume, warm up, suspend──► idle (paused) in the pool
    run(): take an idle clone ─ resume ─ one request on the run port (clock, seed, files, command)
        ─ output frames and the exit status back ─ destroy; refill in background

Clones: libvirt's own restore (`virDomainRestoreFlags`) refuses a changed name or uuid in the
replacement XML ("Target domain uuid … does not match source"), so one saved state could only ever
run once at a time. Each clone is therefore started by libvirt from the template's migratable XML
with a new name, uuid, VM generation id and disk, plus ``<qemu:commandline>`` ``-incoming defer``;
the template's state then streams in through the monitor (`getfd` + `migrate-incoming fd:`, the
file descriptor passed with `virDomainQemuMonitorCommandWithFiles`). libvirt keeps managing the VM
(cgroups, DAC labels, the agent channel, destroy); it marks the domain tainted (custom-argv,
custom-monitor), which only shows in its log.

Randomness and time: every clone gets its own VM generation id, so the guest kernel reseeds its CRNG
the moment a clone first runs ("crng reseeded due to virtual machine fork"); each run also writes
64 bytes of host randomness into the guest's pool, forces a reseed, and sets the guest clock from
the host's, since a paused clone's clock stopped when it was paused. Both happen in `oh-run`
(`sandbox_helper`), which serves the runs on the VM's virtio-serial port RUN_CHANNEL; the guest
agent is only the fallback path (and the template's and the cold path's way in).

Threads: `run`, `floor_run`, `cold_run`, `stats` and `close` may be called from any thread. The pool
owns a manager thread (template, then fillers) and a reaper thread (destroys finished VMs); all
shared state is behind one lock, and no libvirt call is made while holding it.
"""

from __future__ import annotations

import base64
import collections
import fcntl
import hashlib
import json
import logging
import os
import queue
import re
import select
import shutil
import socket
import threading
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
import libvirt_qemu

from storage import overlay

from . import sandbox_helper
from .connection import Accelerator
from .defaults import console, direct_kernel, drive, new_domain, set_defaults
from .devices.channel import Channel
from .domain import DomainType, LifecycleAction, domain_name, has_prefix, owned_by
from .errors import (AgentCommandFailed, AgentError, AgentUnavailable, DomainNotFound, HypervisorError,
                     InvalidConfig, InvalidState, translate)
from .guest import Guest
from .host import Host
from .xmlbuilder import OPENHOSTING_NS

log = logging.getLogger("openhosting.hypervisor.sandbox")

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
ET.register_namespace("qemu", QEMU_NS)

KIND = "sandbox"
#: Where a run's files land in the guest, and where the pool keeps its own few files.
GUEST_WORKDIR = "/sandbox"
GUEST_CONTROL = "/run/oh"
GUEST_COMMAND = f"{GUEST_CONTROL}/command"
GUEST_OUTPUT = f"{GUEST_CONTROL}/output"
GUEST_HELPER = f"{GUEST_CONTROL}/oh-run"
#: Files up to this many bytes in all go to oh-run on its stdin, beside the command (base64 in one
#: guest-exec request, well below libvirt's 4 MiB limit for a string); larger ones are written
#: through the guest agent first.
INLINE_FILES = 1024**2
#: The virtio-serial port oh-run serves runs on (sandbox_helper); in one-shot mode it only rings
#: the host there when a run ends.
RUN_CHANNEL = "org.openhosting.run"
#: A served run's request must be in the guest and acknowledged within this many seconds, plus one
#: per MiB of files; past it the VM is taken for broken and the run takes another.
ACK_TIMEOUT = 15.0
#: The largest output a run returns. Replies of the guest agent travel as one libvirt RPC string
#: (4 MiB at most) in base64, so the cap is enforced inside the guest, well below that.
MAX_OUTPUT_CAP = 2 * 1024**2
#: Run by the template before its state is saved (page cache) and by every clone before it joins
#: the pool (under TCG, QEMU's translation cache starts empty in every new process).
DEFAULT_WARMUP = "command -v python3 >/dev/null && python3 -c 'import os, sys'; true"
#: The environment of a run (qemu-ga replaces the whole environment). Unbuffered Python keeps
#: stdout and stderr in the order the program wrote them, and keeps the output written before a
#: timeout.
RUN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
#: QEMU's TCG translation cache (MiB); QEMU's default (1 GiB) would let one VM's cache grow past
#: any sensible memory bound.
TB_CACHE_MIB = 128
#: QEMU's own memory beside the guest's RAM (devices, TCG cache, libraries), for the hard limit.
QEMU_OVERHEAD_MIB = 256
#: cgroup CPU weights: a clone being prepared in the background, and a VM serving a run.
PREPARE_CPU_SHARES = 64
RUN_CPU_SHARES = 1024

# A run starts `sandbox_helper` (oh-run) in the guest. Where no C compiler was found to build it,
# this shell wrapper does the same (slower under TCG: four more execs per run):
# ``/bin/sh -c WRAPPER oh-run <clock> <cap+1> <seed>``; only host values travel in argv, the user's
# command is the file GUEST_COMMAND.
# - the clock and the seed (octal escapes for printf) come from the host;
# - qemu-ga was made unkillable by the guest's OOM killer in the template; its children inherit
#   that, so the run gives it up;
# - the command runs in its own session; when it exits, whatever it left behind in its process
#   group is killed, so a stray background job cannot hold the output pipe open;
# - stdout and stderr share one pipe (interleaved as written); `head` caps what reaches qemu-ga
#   and `tee` keeps a copy the host reads if the run is cut short; `cat` drains the rest so the
#   program is never killed by SIGPIPE and its exit status stays real;
# - the exit status leaves on fd 3 (the wrapper's stderr), which the command does not inherit.
WRAPPER = f"""\
date -s "@$1" >/dev/null 2>&1
printf "$3" >/dev/urandom 2>/dev/null
echo 0 >/proc/self/oom_score_adj 2>/dev/null
cd {GUEST_WORKDIR} 2>/dev/null || {{ echo "rc=125" >&2; exit 125; }}
{{
  setsid /bin/sh {GUEST_COMMAND} </dev/null 2>&1 3>&- &
  wait $!
  rc=$?
  kill -9 -$! 2>/dev/null
  echo "rc=$rc" >&3
}} 3>&2 | {{ head -c "$2" | tee {GUEST_OUTPUT}; cat >/dev/null; }}
"""

# Prepares the template guest once, before its state is saved.
_TEMPLATE_SETUP = f"""\
set -e
rm -rf {GUEST_WORKDIR}
mkdir -p {GUEST_WORKDIR} {GUEST_CONTROL}
chmod 0755 {GUEST_WORKDIR}
[ ! -e {GUEST_HELPER} ] || chmod 0755 {GUEST_HELPER}
for p in /proc/[0-9]*; do
  read -r comm < "$p/comm" 2>/dev/null || continue
  [ "$comm" = qemu-ga ] && echo -1000 > "$p/oom_score_adj" 2>/dev/null || true
done
if [ -x {GUEST_HELPER} ] && [ "$2" = serve ]; then
  # oh-run serves the runs on its port from now on, in every clone of this template
  setsid env -i {" ".join(f"{k}={v}" for k, v in RUN_ENV.items())} \
    {GUEST_HELPER} --serve {RUN_CHANNEL} {GUEST_WORKDIR} {GUEST_COMMAND} {GUEST_OUTPUT} \
    </dev/null >/dev/null 2>&1 &
  echo $! > {GUEST_CONTROL}/served.pid
fi
cd /tmp
( eval "$1" ) >/dev/null 2>&1 || true
sync
if [ -s {GUEST_CONTROL}/served.pid ] && kill -0 "$(cat {GUEST_CONTROL}/served.pid)" 2>/dev/null; then
  echo served
fi
"""

_RC_RE = re.compile(rb"rc=(\d+)\s*$")
_NAME_MAX = 255
_FORMAT = 4      # bump when the template's layout or the wrapper's contract changes
#: The QEMU memory backend holding a pooled VM's RAM: the template's RAM is a file, shared while
#: the template runs and mapped copy-on-write (private) by every clone.
RAM_BACKEND = "oh-ram"


# --- errors --------------------------------------------------------------------------------------

class SandboxError(HypervisorError):
    template = "sandbox: {reason}"


class PoolClosed(SandboxError):
    template = "the sandbox pool of image {image} is closed"


class PoolTimeout(SandboxError):
    template = "no sandbox VM of image {image} became free within {timeout} s"


class PoolBroken(SandboxError):
    """The template or the clones keep failing; the pool retries in the background."""
    template = "the sandbox pool of image {image} cannot make VMs: {reason}"


class TemplateFailed(SandboxError):
    template = "preparing the template of image {image} failed: {reason}"


# --- values --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SandboxImage:
    """What a sandbox VM boots from: the image's read-only raw root file system (``base``), the
    uncompressed kernel and boot initramfs, the kernel command line, and the guest's memory."""
    slug: str
    base: Path
    kernel: Path
    initramfs: Path
    cmdline: str
    memory_mib: int
    warmup: str = DEFAULT_WARMUP


@dataclass
class RunResult:
    exit_code: int | None   # 137 when timed out or killed; None when the VM or its agent was lost
    output: bytes           # stdout and stderr interleaved as the program wrote them, capped
    timed_out: bool
    truncated: bool         # output hit the cap (caller appends a marker)
    killed: bool            # cancelled through the cancel event
    seconds: float          # the whole call, waiting for a VM included
    wait_seconds: float = 0.0   # of which waiting for an idle VM
    vm: str | None = None       # the libvirt name of the VM that ran it
    error: str | None = None    # what went wrong on the host side, if anything (exit_code is None)
    rang: bool = False          # the guest announced the end itself (not found by polling qemu-ga)


@dataclass
class _Vm:
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


@dataclass
class _Template:
    directory: Path
    overlay: Path
    state: Path
    xml: str
    seconds: float
    reused: bool
    helper: bool          # oh-run is in the guest (else runs use the shell wrapper)
    served: bool = False  # oh-run serves runs on RUN_CHANNEL (else it is started through qemu-ga)
    ram: Path | None = None   # the template's RAM file, mapped copy-on-write by clones (else RAM is in `state`)


@dataclass(eq=False)
class _Waiter:
    event: threading.Event = field(default_factory=threading.Event)
    vm: _Vm | None = None


# --- small helpers -------------------------------------------------------------------------------

def _monitor(dom: libvirt.virDomain, command: dict, files: list[int] | None = None):
    """One QMP command to the VM's QEMU through libvirt (``files``: descriptors passed along, for
    `getfd`); returns its ``return`` value."""
    text = json.dumps(command)
    try:
        if files is not None:
            reply = libvirt_qemu.qemuMonitorCommandWithFiles(dom, text, files, 0)[0]
        else:
            reply = libvirt_qemu.qemuMonitorCommand(dom, text, 0)
    except libvirt.libvirtError as exc:
        raise translate(exc, domain=dom.name(), operation=f"monitor {command.get('execute')}") from exc
    data = json.loads(reply)
    if "error" in data:
        raise SandboxError(reason=f"{dom.name()}: {command.get('execute')}: {data['error'].get('desc')}")
    return data.get("return")


#: Migration leaves out RAM that lives in a shared file: the template's state holds no RAM, and a
#: clone keeps the copy-on-write mapping of the template's RAM file it started with.
_IGNORE_SHARED = {"execute": "migrate-set-capabilities",
                  "arguments": {"capabilities": [{"capability": "x-ignore-shared", "state": True}]}}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _wait_migration(dom: libvirt.virDomain, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        status = _monitor(dom, {"execute": "query-migrate"})
        if status.get("status") == "completed":
            return status
        if status.get("status") in ("failed", "cancelled"):
            raise SandboxError(reason=f"{dom.name()}: migration {status.get('status')}: "
                                      f"{status.get('error-desc', '')}")
        if time.monotonic() > deadline:
            raise SandboxError(reason=f"{dom.name()}: migration did not finish within {timeout} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _inline_files(files: dict[str, bytes]) -> dict[str, bytes]:
    """The files that travel to oh-run on its stdin, with the command: small ones first, up to
    INLINE_FILES bytes in all. The others are written through the guest agent beforehand (three
    round trips per file, plus one per MiB)."""
    chosen: dict[str, bytes] = {}
    total = 0
    for name, data in sorted(files.items(), key=lambda item: len(item[1])):
        if total + len(data) > INLINE_FILES:
            break
        chosen[name] = data
        total += len(data)
    return chosen


def _record(kind: bytes, name: str, data: bytes) -> bytes:
    """One record of oh-run's stdin (sandbox_helper): kind, name length, data length, name, data."""
    raw = name.encode()
    return kind + f"{len(raw)} {len(data)}\n".encode() + raw + bytes(data)


def _octal(data: bytes) -> str:
    return "".join(f"\\{b:03o}" for b in data)


def _qemu_memory(name: str) -> tuple[int, int] | None:
    """(VmRSS, RssAnon) of the domain's QEMU process in bytes: all it has resident, and what is
    its own (the pages a clone shares with its template's RAM file are resident but not its own)."""
    try:
        pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":" in line)
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["RssAnon"].split()[0]) * 1024
    except (OSError, ValueError, KeyError):
        return None


def _ram_args(path: Path, memory_mib: int, *, shared: bool) -> list[str]:
    """QEMU arguments that put the guest's RAM in ``path``: written through while ``shared``
    (the template), else mapped copy-on-write (a clone: what it writes stays its own)."""
    mem_path = str(path).replace(",", ",,")
    return ["-object", f"memory-backend-file,id={RAM_BACKEND},size={memory_mib}M,mem-path={mem_path},"
                       f"share={'on' if shared else 'off'}",
            "-machine", f"memory-backend={RAM_BACKEND}"]


def _set_commandline(root: ET.Element, args: list[str]) -> None:
    """Make ``args`` the domain's extra QEMU arguments (``<qemu:commandline>``)."""
    for old in root.findall(f"{{{QEMU_NS}}}commandline"):
        root.remove(old)
    if args:
        commandline = ET.SubElement(root, f"{{{QEMU_NS}}}commandline")
        for value in args:
            ET.SubElement(commandline, f"{{{QEMU_NS}}}arg", value=value)


def _check_name(name: str) -> str:
    if (not name or name in (".", "..") or "/" in name or "\0" in name
            or len(name.encode()) > _NAME_MAX):
        raise ValueError(f"bad sandbox file name {name!r}: use a plain file name")
    return name


def _file_key(path: Path) -> list:
    st = Path(path).stat()
    return [str(Path(path).absolute()), st.st_size, st.st_mtime_ns]


def _remove_log(host: Host, name: str) -> None:
    """libvirt keeps a log file per domain name forever; sandboxes come and go by the thousand."""
    if host.connection.uri == "qemu:///system":
        try:
            Path(f"/var/log/libvirt/qemu/{name}.log").unlink()
        except OSError:
            pass


def _sandbox_kind(guest: Guest) -> bool:
    try:
        owner = guest.config().owner
    except DomainNotFound:
        return False
    return owner is not None and owner.kind == KIND


# --- the pool ------------------------------------------------------------------------------------

class WarmPool:
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

    #: Seconds between guest-exec-status polls during a run's first second. Each poll costs the
    #: guest a little CPU; under TCG 10 ms measured best (docs/sandboxes.md).
    POLL = 0.01

    def __init__(self, host: Host, image: SandboxImage, work_dir: Path, size: int = 2, vcpus: int = 1, *,
                 fillers: int | None = None, warm_clones: bool | None = None, boot_timeout: float = 300,
                 helper: bool = True, serve: bool = True, shared_ram: bool = True):
        if fillers is None:
            # a clone's start is partly waiting (libvirtd, QEMU's monitor): two per CPU keep the
            # CPUs busy during a burst (measured: 4 fillers 1.93 runs/s, 2 fillers 1.69, on 2 CPUs)
            fillers = max(1, min(size, 2 * (os.cpu_count() or 1)))
        if size < 1 or vcpus < 1 or fillers < 1:
            raise InvalidConfig(reason="pool size, vcpus and fillers must be at least 1")
        self.host = host
        self.image = image
        self.work_dir = Path(work_dir).absolute()
        self.size = size
        self.vcpus = vcpus
        self.fillers = fillers
        self.boot_timeout = boot_timeout
        self._warm_clones = warm_clones
        self._use_helper = helper
        self._serve = serve
        self._shared_ram = shared_ram
        self._helper_path: Path | None | bool = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._idle: collections.deque[_Vm] = collections.deque()
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._busy: dict[str, _Vm] = {}
        self._preparing = 0
        self._all: dict[str, _Vm] = {}
        self._closed = False
        self._started = False
        self._template: _Template | None = None
        self._error: str | None = None
        self._restores: collections.deque[float] = collections.deque(maxlen=50)
        self._threads: list[threading.Thread] = []
        self._reap: queue.Queue = queue.Queue()
        self._reaping = 0
        self._rebuild_lock = threading.Lock()
        self._broken: str | None = None
        self._served = 0
        # VMs whose removal failed (libvirtd away, e.g. restarting): removed again before the next
        # template or clone is made, so that none outlives its pool
        self._leftovers: set[str] = set()

    # --- public -------------------------------------------------------------------------------
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
            _check_name(name)
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
                    self._wait_agent(vm.guest, 30)
                result = self._execute(vm, files, command, timeout=timeout, cap=cap, cancel=cancel,
                                       helper=self._template.helper)
            except _VmUnusable as exc:
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
            # timeout, a cancel or a lost agent the VM is already gone (see _execute).
            self._retire(vm, wait=False)
            result.seconds = time.monotonic() - started
            result.wait_seconds = waited
            result.vm = vm.name
            with self._lock:
                self._served += 1
            return result
        raise SandboxError(reason=f"three VMs of image {self.image.slug} failed before the run started")

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
        memory = {name: _qemu_memory(name) for name in idle}
        out["rss"] = {name: value[0] if value else None for name, value in memory.items()}
        out["rss_kib"] = {name: value[0] // 1024 for name, value in memory.items() if value}
        values = [value for value in memory.values() if value]
        # resident: all of QEMU's pages, those shared with the template's RAM file included;
        # private: only its own (what each more pooled VM costs the host)
        out["rss_mib_avg"] = round(sum(v[0] for v in values) / len(values) / 1024**2, 1) if values else None
        out["private_mib_avg"] = round(sum(v[1] for v in values) / len(values) / 1024**2, 1) if values else None
        return out

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
        self._remove_leftovers()

    def cold_run(self, files: dict[str, bytes], command: str, *, timeout: float, output_cap: int) -> RunResult:
        """Define and boot a fresh VM from the image, wait for its agent, run, destroy: what every
        run would cost without the pool. ``seconds`` covers all of it."""
        for name in files:
            _check_name(name)
        started = time.monotonic()
        vm_uuid = str(uuidlib.uuid4())
        name = domain_name(self.host.installation_id, vm_uuid)
        path = self._clones_dir() / f"{name}.qcow2"
        overlay.create(path, self.image.base, backing_format="raw", size=overlay.virtual_size(self.image.base))
        vm = None
        try:
            xml = self._domain_xml(vm_uuid, path, disk_cache="unsafe")
            guest, dom = self._create(xml, paused=False)
            vm = _Vm(name=name, uuid=vm_uuid, guest=guest, dom=dom, overlay=path)
            with self._lock:
                self._all[name] = vm
            guest.wait_for_agent(timeout=self.boot_timeout)
            self._exec_plain(guest, f"mkdir -p {GUEST_WORKDIR} {GUEST_CONTROL}", timeout=30)
            # a booted image has no oh-run: the shell wrapper does the same work
            result = self._execute(vm, files, command, timeout=timeout,
                                   cap=max(0, min(int(output_cap), MAX_OUTPUT_CAP)), cancel=None, helper=False)
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
                self._wait_agent(vm.guest, 30)
            status = self._exec_plain(vm.guest, command, timeout=60)
            seconds = time.monotonic() - started
        finally:
            self._retire(vm, wait=False)
        if status.get("exitcode") != 0:
            raise SandboxError(reason=f"floor command exited {status.get('exitcode')}: "
                                      f"{base64.b64decode(status.get('err-data', ''))[-300:]!r}")
        return seconds

    # --- acquiring and retiring -----------------------------------------------------------------
    def _acquire(self, acquire_timeout: float | None, cancel: threading.Event | None,
                 started: float) -> _Vm | None:
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

    def _deliver(self, vm: _Vm) -> None:
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

    def _retire(self, vm: _Vm, *, wait: bool) -> None:
        with self._cond:
            self._busy.pop(vm.name, None)
            self._cond.notify_all()
        if wait:
            self._destroy(vm)
        else:
            with self._lock:
                self._reaping += 1
            self._reap.put(vm)

    def _destroy(self, vm: _Vm) -> None:
        with self._lock:
            if vm.gone:
                return
            vm.gone = True
        if vm.port is not None:
            vm.port.close()
        try:
            vm.guest.remove()
        except HypervisorError as exc:
            log.warning("could not destroy sandbox VM %s (tried again later): %s", vm.name, exc)
            with self._lock:
                self._leftovers.add(vm.name)
        try:
            overlay.remove(vm.overlay)
        except overlay.OverlayError as exc:
            log.warning("could not remove overlay %s: %s", vm.overlay, exc)
        _remove_log(self.host, vm.name)
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

    def _reaped(self, vm: _Vm) -> None:
        try:
            self._destroy(vm)
        finally:
            with self._lock:
                self._reaping -= 1

    # --- the manager: template, then fillers ----------------------------------------------------
    #: Consecutive failures after which waiting runs are told the pool is broken (the manager
    #: keeps trying in the background; a success clears it).
    BROKEN_AFTER = 3

    def _manage(self) -> None:
        backoff, failures = 1.0, 0
        while not self._closed:
            try:
                self._template = self._ensure_template()
                self._failed(None)
                break
            except Exception as exc:   # keep trying: the agent may outlive a transient failure
                failures += 1
                self._failed(f"template: {exc}", failures)
                log.exception("template of sandbox image %s failed (%d in a row)", self.image.slug, failures)
                with self._cond:
                    self._cond.wait(backoff)
                backoff = min(backoff * 2, 60)
        if self._closed:
            return
        fillers = [threading.Thread(target=self._fill, name=f"sandbox-{self.image.slug}-fill{i}", daemon=True)
                   for i in range(self.fillers)]
        for thread in fillers:
            thread.start()
        for thread in fillers:
            thread.join()

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
                while not self._closed and len(self._idle) + self._preparing >= self.size:
                    self._cond.wait()
                if self._closed:
                    return
                self._preparing += 1
            template = self._template
            try:
                self._remove_leftovers()
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
                    self._cond.wait(min(30.0, 0.5 * 2 ** failures))
                continue
            with self._cond:
                self._preparing -= 1
            self._deliver(vm)

    def _rebuild_template(self, failed: _Template) -> None:
        """Clones of ``failed`` keep failing: make the template again (once, whichever filler asks)."""
        with self._rebuild_lock:
            if self._template is not failed or self._closed:
                return
            log.warning("sandbox template of image %s looks broken; preparing it again", self.image.slug)
            with self._template_lock():
                shutil.rmtree(failed.directory, ignore_errors=True)
            try:
                self._template = self._ensure_template()
            except Exception as exc:
                self._failed(f"template: {exc}", self.BROKEN_AFTER)
                log.exception("template of sandbox image %s failed again", self.image.slug)

    # --- files ----------------------------------------------------------------------------------
    def _clones_dir(self) -> Path:
        path = self.work_dir / "vms"
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o711)
        return path

    def _template_lock(self):
        return _FileLock(self.work_dir / f".template-{self.image.slug}.lock")

    def _template_key(self) -> str:
        conn = self.host.connection.get()
        facts = {
            "format": _FORMAT, "slug": self.image.slug, "base": _file_key(self.image.base),
            "kernel": _file_key(self.image.kernel), "initramfs": _file_key(self.image.initramfs),
            "cmdline": self.image.cmdline, "memory": self.image.memory_mib, "vcpus": self.vcpus,
            "warmup": self.image.warmup, "type": str(self.host.accelerator.domain_type),
            "qemu": conn.getVersion(), "libvirt": conn.getLibVersion(),
            "setup": _TEMPLATE_SETUP, "wrapper": WRAPPER, "tb": TB_CACHE_MIB, "overhead": QEMU_OVERHEAD_MIB,
            "helper": sandbox_helper.DIGEST if self._helper() else None, "serve": self._serve,
            "shared_ram": self._shared_ram,
        }
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()

    # --- XML --------------------------------------------------------------------------------------
    def _domain_xml(self, vm_uuid: str, disk: Path, *, console_log: Path | None = None,
                    disk_cache: str | None = None, ram: Path | None = None) -> str:
        """A sandbox domain booting the image: no NIC, virtio disk/rng, the guest agent's channel and
        RUN_CHANNEL, direct kernel boot, memory bounded, kind=sandbox. Built by DomainConfig; what it cannot express yet
        (genid, memtune, TCG cache size, no USB) is added to the tree."""
        cfg = new_domain(self.host.installation_id, vm_uuid, memory_mib=self.image.memory_mib, vcpus=self.vcpus,
                         title=f"sandbox {self.image.slug}", kind=KIND)
        cfg.os = direct_kernel(str(self.image.kernel), str(self.image.initramfs), self.image.cmdline)
        cfg.disks = [drive("block:0", str(disk), format="qcow2")]
        cfg.serials = [console(str(console_log) if console_log else None)]
        cfg.memballoon = "none"
        cfg.on_reboot = LifecycleAction.DESTROY     # a guest that reboots is finished
        set_defaults(cfg, self.host.accelerator.domain_type)
        # after the guest agent's port: oh-run serves the runs here (or, one-shot, rings when done)
        cfg.channels.append(Channel(type="unix", target_type="virtio", target_name=RUN_CHANNEL))
        if cfg.interfaces:
            raise InvalidConfig(reason="sandbox VMs have no network device")
        root = ET.fromstring(cfg.to_xml())
        ET.SubElement(root, "genid")
        if cfg.type == DomainType.QEMU:
            features = root.find("features")
            tcg = ET.SubElement(features, "tcg")
            ET.SubElement(tcg, "tb-cache", unit="MiB").text = str(TB_CACHE_MIB)
        devices = root.find("devices")
        devices.append(ET.Element("controller", type="usb", model="none"))
        if disk_cache:
            root.find("devices/disk/driver").set("cache", disk_cache)
        if ram is not None:
            _set_commandline(root, _ram_args(ram, self.image.memory_mib, shared=True))
        return ET.tostring(root, encoding="unicode")

    def _clone_xml(self, template: _Template, vm_uuid: str, disk: Path) -> str:
        """The template's migratable XML as a new domain waiting for an incoming state: same devices
        at the same addresses, new identity and disk."""
        root = ET.fromstring(template.xml)
        name = domain_name(self.host.installation_id, vm_uuid)
        root.find("name").text = name
        root.find("uuid").text = vm_uuid
        root.find("genid").text = str(uuidlib.uuid4())
        owner = root.find("metadata/{%s}owner" % OPENHOSTING_NS)
        owner.find("{%s}installation" % OPENHOSTING_NS).text = self.host.installation_id
        owner.find("{%s}server" % OPENHOSTING_NS).text = vm_uuid
        disk_el = root.find("devices/disk")
        disk_el.find("source").set("file", str(disk))
        for backing in disk_el.findall("backingStore"):
            disk_el.remove(backing)
        disk_el.find("driver").set("cache", "unsafe")   # throw-away disk: never wait for a flush
        for memtune in root.findall("memtune"):    # the live limit is set after the start (_create)
            root.remove(memtune)
        for element in root.findall("devices/serial") + root.findall("devices/console"):
            for log_el in element.findall("log"):
                element.remove(log_el)
        for tune in root.findall("cputune"):
            root.remove(tune)
        # preparing a clone must not slow the runs going on: its QEMU gets a small CPU weight until
        # it joins the pool (_prepare_clone raises it)
        ET.SubElement(ET.SubElement(root, "cputune"), "shares").text = str(PREPARE_CPU_SHARES)
        ram = [] if template.ram is None else _ram_args(template.ram, self.image.memory_mib, shared=False)
        _set_commandline(root, [*ram, "-incoming", "defer"])
        return ET.tostring(root, encoding="unicode")

    def _create(self, xml: str, *, paused: bool) -> tuple[Guest, libvirt.virDomain]:
        """A transient domain from ``xml`` (Host.create_transient takes a DomainConfig, which has no
        ``<qemu:commandline>``), after the same ownership check."""
        if not owned_by(xml, self.host.installation_id):
            raise InvalidConfig(reason="sandbox XML without this installation's owner")
        conn = self.host.connection.get()
        try:
            dom = conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
        except libvirt.libvirtError as exc:
            raise translate(exc, operation="create sandbox VM") from exc
        guest = Guest(dom, connection=self.host.connection)
        try:
            # <memtune> in the XML would make libvirt raise QEMU's RLIMIT_MEMLOCK to the same
            # value, which fails without CAP_SYS_RESOURCE (containers); the live cgroup limit
            # does not.
            dom.setMemoryParameters({"hard_limit": self._hard_limit_mib() * 1024}, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            if not paused:
                dom.resume()
        except libvirt.libvirtError as exc:
            try:
                dom.destroy()
            except libvirt.libvirtError:
                pass
            raise translate(exc, domain=guest.name, operation="bound sandbox VM") from exc
        return guest, dom

    def _hard_limit_mib(self) -> int:
        """The cgroup bound of one VM's QEMU: guest RAM plus QEMU's own memory. Past it the kernel
        reclaims that QEMU's page cache, then kills that QEMU, never anything else."""
        tcg = self.host.accelerator.domain_type == DomainType.QEMU
        return self.image.memory_mib + QEMU_OVERHEAD_MIB + (TB_CACHE_MIB if tcg else 0)

    # --- template ---------------------------------------------------------------------------------
    def _remove_leftovers(self) -> None:
        """Remove the VMs whose removal failed before. An orphaned template VM would otherwise run
        forever and hold its console log, so that every later template fails with "busy"."""
        with self._lock:
            names = list(self._leftovers)
        for name in names:
            try:
                guest = self.host.find(name)
                if guest is not None:
                    guest.remove()
            except HypervisorError as exc:
                log.warning("sandbox VM %s still cannot be removed: %s", name, exc)
                continue
            _remove_log(self.host, name)
            with self._lock:
                self._leftovers.discard(name)

    def _ensure_template(self) -> _Template:
        self._remove_leftovers()
        key = self._template_key()
        directory = self.work_dir / f"template-{self.image.slug}-{key[:16]}"
        with self._template_lock():
            meta_path = directory / "template.json"
            if meta_path.exists():
                try:
                    meta = json.loads(meta_path.read_text())
                    files = [directory / "template.qcow2", directory / "template.state"]
                    ram = directory / meta["ram"] if meta.get("ram") else None
                    if meta.get("key") == key and all(f.exists() for f in files + ([ram] if ram else [])):
                        log.info("sandbox template of %s reused from %s", self.image.slug, directory)
                        return _Template(directory, files[0], files[1], meta["xml"], meta["seconds"], True,
                                         bool(meta.get("helper")), bool(meta.get("served")), ram)
                except (OSError, ValueError, KeyError):
                    pass
            for stale in self.work_dir.glob(f"template-{self.image.slug}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            return self._make_template(directory, key)

    def _make_template(self, directory: Path, key: str) -> _Template:
        started = time.monotonic()
        directory.mkdir(parents=True)
        directory.chmod(0o711)
        disk = overlay.create(directory / "template.qcow2", self.image.base, backing_format="raw",
                              size=overlay.virtual_size(self.image.base))
        ram = self._ram_file(directory / "template.ram") if self._shared_ram else None
        vm_uuid = str(uuidlib.uuid4())
        console_log = directory / "console.log"
        try:
            guest, dom = self._create(self._domain_xml(vm_uuid, disk, console_log=console_log, ram=ram), paused=False)
        except HypervisorError as exc:
            if ram is None:
                raise
            # e.g. a security driver that lets QEMU open only the files libvirt knows of
            log.warning("the template of %s cannot keep its RAM in %s (%s); clones will copy their RAM",
                        self.image.slug, ram, exc)
            ram.unlink(missing_ok=True)
            ram = None
            guest, dom = self._create(self._domain_xml(vm_uuid, disk, console_log=console_log), paused=False)
        try:
            guest.wait_for_agent(timeout=self.boot_timeout)
            booted = time.monotonic() - started
            helper = self._helper()
            if helper is not None:
                self._exec_plain(guest, f"mkdir -p {GUEST_CONTROL}", timeout=60)
                guest.agent_file_write(GUEST_HELPER, helper.read_bytes(), timeout=30)
            status = self._exec_plain(guest, _TEMPLATE_SETUP, args=[self.image.warmup, "serve" if self._serve else ""],
                                      timeout=self.boot_timeout)
            if status.get("exitcode") != 0:
                raise TemplateFailed(image=self.image.slug, reason="setup exited "
                                     f"{status.get('exitcode')}: {base64.b64decode(status.get('err-data', ''))!r}")
            served = helper is not None and b"served" in base64.b64decode(status.get("out-data", ""))
            if helper is not None and not served:
                log.warning("oh-run did not start serving in the template of %s; runs go through the guest agent",
                            self.image.slug)
            guest.suspend()
            try:
                migratable = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE)
            except libvirt.libvirtError as exc:
                raise translate(exc, domain=guest.name, operation="read migratable XML") from exc
            state = directory / "template.state"
            fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                # QEMU throttles migration to 32 MiB/s unless told otherwise
                _monitor(dom, {"execute": "migrate-set-parameters", "arguments": {"max-bandwidth": 1 << 40}})
                if ram is not None:
                    # the RAM stays in its file: the state holds the devices only
                    _monitor(dom, _IGNORE_SHARED)
                _monitor(dom, {"execute": "getfd", "arguments": {"fdname": "oh-template"}}, [fd])
            finally:
                os.close(fd)
            _monitor(dom, {"execute": "migrate", "arguments": {"uri": "fd:oh-template"}})
            _wait_migration(dom, timeout=300)
        finally:
            try:
                guest.remove()
            except HypervisorError as exc:
                log.warning("could not remove template VM %s (tried again later): %s", guest.name, exc)
                with self._lock:
                    self._leftovers.add(guest.name)
            _remove_log(self.host, guest.name)
        for path in (disk, state, ram):
            if path is not None:    # on disk before template.json says the template is whole
                _fsync(path)
        seconds = round(time.monotonic() - started, 3)
        meta = {"key": key, "xml": migratable, "seconds": seconds, "boot_seconds": round(booted, 3),
                "state_bytes": state.stat().st_size, "created": time.time(), "helper": helper is not None,
                "served": served, "ram": ram.name if ram is not None else None}
        tmp = directory / "template.json.tmp"
        tmp.write_text(json.dumps(meta))
        tmp.rename(directory / "template.json")
        log.info("sandbox template of %s ready in %.1f s (boot %.1f s, state %d MiB)", self.image.slug,
                 seconds, booted, meta["state_bytes"] >> 20)
        return _Template(directory, disk, state, migratable, seconds, False, helper is not None, served, ram)

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

    # --- clones ---------------------------------------------------------------------------------------
    def _prepare_clone(self, template: _Template) -> _Vm:
        started = time.monotonic()
        vm_uuid = str(uuidlib.uuid4())
        name = domain_name(self.host.installation_id, vm_uuid)
        path = overlay.create(self._clones_dir() / f"{name}.qcow2", template.overlay, backing_format="qcow2",
                              size=overlay.virtual_size(self.image.base))
        vm = None
        try:
            guest, dom = self._create(self._clone_xml(template, vm_uuid, path), paused=True)
            vm = _Vm(name=name, uuid=vm_uuid, guest=guest, dom=dom, overlay=path)
            with self._lock:
                self._all[name] = vm
            fd = os.open(template.state, os.O_RDONLY)
            try:
                _monitor(dom, {"execute": "getfd", "arguments": {"fdname": "oh-state"}}, [fd])
            finally:
                os.close(fd)
            if template.ram is not None:
                _monitor(dom, _IGNORE_SHARED)     # the RAM is the template's file, not in the state
            _monitor(dom, {"execute": "migrate-incoming", "arguments": {"uri": "fd:oh-state"}})
            _wait_migration(dom, timeout=120)
            vm.port = self._connect_port(guest)
            restored = time.monotonic() - started
            # With runs waiting, a VM now beats a warmer VM later: the run pays the translation.
            if self._warm() and not self._waiters:
                guest.resume()
                if not self._is_served(vm):
                    self._wait_agent(guest, 60)
                result = self._execute(vm, {}, f"cd /tmp && {{ {self.image.warmup} ; }}", timeout=120,
                                       cap=1024, cancel=None, helper=template.helper)
                if result.exit_code is None:
                    raise SandboxError(reason=f"warm-up of {name} failed: {result.error}")
                guest.suspend()
                vm.warm = True
            try:
                dom.setSchedulerParameters({"cpu_shares": RUN_CPU_SHARES})
            except libvirt.libvirtError as exc:
                raise translate(exc, domain=name, operation="set CPU weight") from exc
            vm.prepare_seconds = time.monotonic() - started
            with self._lock:
                self._restores.append(restored)
            log.debug("sandbox VM %s ready: restored in %.3f s, warm in %.3f s", name, restored, vm.prepare_seconds)
            return vm
        except BaseException:
            if vm is not None:
                self._destroy(vm)
            else:
                overlay.remove(path)
            raise

    def _helper(self) -> Path | None:
        """The host-built oh-run binary (cached in work_dir), or None: use the shell wrapper."""
        if self._use_helper is False:
            return None
        if self._helper_path is None:
            self._helper_path = sandbox_helper.build(self.work_dir / "helper") or False
            if not self._helper_path:
                log.warning("no C compiler for the sandbox helper; runs use the slower shell wrapper")
        return self._helper_path or None

    def _warm(self) -> bool:
        if self._warm_clones is not None:
            return self._warm_clones
        return self.host.accelerator == Accelerator.TCG

    @staticmethod
    def _connect_port(guest: Guest) -> socket.socket | None:
        """The host end of the VM's RUN_CHANNEL (libvirt picked the socket's path), non-blocking;
        None when there is none or it cannot be reached (runs then go through the guest agent)."""
        try:
            path = next((c.source_path for c in guest.config().channels if c.target_name == RUN_CHANNEL), None)
        except HypervisorError:
            return None
        if not path:
            return None
        port = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            port.connect(path)
        except OSError as exc:
            log.warning("%s: cannot connect to its %s port (%s); runs go through the guest agent",
                        guest.name, RUN_CHANNEL, exc)
            port.close()
            return None
        port.setblocking(False)
        return port

    @staticmethod
    def _wait_agent(guest: Guest, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not guest.agent_ping(timeout=1):
            if time.monotonic() > deadline:
                raise _VmUnusable(f"{guest.name}: guest agent silent for {timeout} s")
            time.sleep(0.005)

    # --- running --------------------------------------------------------------------------------
    def _exec_plain(self, guest: Guest, script: str, *, args: list[str] | None = None, timeout: float) -> dict:
        """``/bin/sh -c script`` through guest-exec; the final guest-exec-status."""
        pid = guest.agent_command({"execute": "guest-exec", "arguments": {
            "path": "/bin/sh", "arg": ["-c", script, "oh", *(args or [])], "capture-output": True}}, 10)["pid"]
        status, _, _ = self._poll(guest, pid, time.monotonic() + timeout, None)
        if status is None:
            raise SandboxError(reason=f"{guest.name}: command did not finish within {timeout} s")
        return status

    #: After a ring the program is ending: qemu-ga still has to reap it and close its pipes, so ask
    #: again after these pauses (seconds) before going back to waiting for the bell.
    RING_RETRIES = (0.0, 0.002, 0.005, 0.01, 0.02, 0.05)
    #: With a bell, qemu-ga is still asked this often (a lost ring costs at most this much).
    BELL_FALLBACK = 0.25

    @staticmethod
    def _poll(guest: Guest, pid: int, deadline: float, cancel: threading.Event | None,
              bell: socket.socket | None = None) -> tuple[dict | None, bool, bool]:
        """guest-exec-status until the process exits (its status), the deadline passes or ``cancel``
        is set (None); whether the agent answered the last poll; whether the bell rang.

        With a ``bell`` (oh-run rings RUN_CHANNEL when the run ends) qemu-ga is asked right after
        the ring and otherwise every BELL_FALLBACK seconds. Without one it is polled: each poll costs
        the guest a little CPU (see POLL); a guest too busy to answer (a fork bomb) costs at most a
        second past the deadline."""
        begun = time.monotonic()
        retries: tuple[float, ...] = ()
        answering, ever_rang = True, False
        while True:
            if bell is not None and not retries:
                rang = WarmPool._wait_bell(bell, min(deadline, time.monotonic() + WarmPool.BELL_FALLBACK), cancel)
                if rang is None:       # the port closed under us: poll from now on
                    bell = None
                retries = WarmPool.RING_RETRIES if rang else (0.0,)
                ever_rang = ever_rang or bool(rang)
            if cancel is not None and cancel.is_set():
                return None, answering, ever_rang
            if retries:
                pause, retries = retries[0], retries[1:]
                if pause and (cancel.wait(pause) if cancel is not None else time.sleep(pause)):
                    return None, answering, ever_rang
            left = deadline - time.monotonic()
            try:
                status = guest.agent_command({"execute": "guest-exec-status", "arguments": {"pid": pid}},
                                             max(1.0, min(left, 2.0)))
                answering = True
            except AgentUnavailable:
                status, answering = {}, False     # keep trying until the deadline
            if status.get("exited"):
                return status, True, ever_rang
            now = time.monotonic()
            if now >= deadline or (cancel is not None and cancel.is_set()):
                return None, answering, ever_rang
            if bell is not None:
                continue
            elapsed = now - begun
            pause = WarmPool.POLL if elapsed < 1 else 0.02 if elapsed < 5 else 0.1
            pause = min(pause, max(0.0, deadline - now))
            if cancel is not None:
                if cancel.wait(pause):
                    return None, answering, ever_rang
            else:
                time.sleep(pause)

    @staticmethod
    def _wait_bell(bell: socket.socket, until: float, cancel: threading.Event | None) -> bool | None:
        """True once the bell rang (what it said is drained), False at ``until`` or on ``cancel``,
        None when the port closed (the VM is going away)."""
        while _readable(bell, until, cancel):
            rang = WarmPool._drain(bell)
            if rang is not False:
                return rang
        return False

    @staticmethod
    def _drain(bell: socket.socket) -> bool | None:
        """Read what is waiting on the bell: True when something was, False when nothing, None at EOF."""
        got = False
        while True:
            try:
                data = bell.recv(4096)
            except BlockingIOError:
                return got
            except OSError:
                return None
            if not data:
                return None
            got = True

    def _execute(self, vm: _Vm, files: dict[str, bytes], command: str, *, timeout: float, cap: int,
                 cancel: threading.Event | None, helper: bool) -> RunResult:
        """Write the files, start the program, wait, collect. The VM is running.

        Failures before the program starts raise (the caller may take another VM). Once it started,
        every outcome is a RunResult; after a timeout, a cancel or a lost agent the VM is destroyed
        here, before returning.
        """
        if helper and self._is_served(vm):
            return self._execute_served(vm, files, command, timeout=timeout, cap=cap, cancel=cancel)
        guest = vm.guest
        try:
            inline = _inline_files(files) if helper else {}
            for name, data in files.items():
                if name not in inline:
                    guest.agent_file_write(f"{GUEST_WORKDIR}/{name}", bytes(data))
            now = time.time_ns()
            seed = os.urandom(64)
            if helper:
                records = [_record(b"F", name, data) for name, data in inline.items()]
                records.append(_record(b"C", "", command.encode() + b"\n"))
                arguments = {"path": GUEST_HELPER, "arg": [
                    str(now // 10**9), str(now % 10**9), seed.hex(), GUEST_WORKDIR, GUEST_COMMAND, GUEST_OUTPUT,
                    str(cap + 1)], "input-data": base64.b64encode(b"".join(records)).decode()}
            else:
                guest.agent_file_write(GUEST_COMMAND, command.encode() + b"\n")
                arguments = {"path": "/bin/sh", "arg": [
                    "-c", WRAPPER, "oh-run", f"{now // 10**9}.{now % 10**9:09d}", str(cap + 1), _octal(seed)]}
            arguments.update({"env": [f"{k}={v}" for k, v in RUN_ENV.items()], "capture-output": True})
            bell = vm.port if helper else None
            if bell is not None and self._drain(bell) is None:
                bell = None
            pid = guest.agent_command({"execute": "guest-exec", "arguments": arguments}, 10)["pid"]
        except AgentCommandFailed as exc:
            raise _VmUnusable(str(exc)) from exc
        begun = time.monotonic()
        try:
            status, answering, rang = self._poll(guest, pid, begun + timeout, cancel, bell)
        except AgentCommandFailed as exc:
            # the agent forgot the process: something in the guest killed or restarted qemu-ga
            output = self._partial_output(guest, cap)
            self._stop(vm)
            return RunResult(None, output[:cap], False, len(output) > cap, False, time.monotonic() - begun,
                             error=f"lost track of the program: {exc.context.get('reason', exc)}")
        except (DomainNotFound, InvalidState) as exc:
            self._stop(vm)
            return RunResult(None, b"", False, False, False, time.monotonic() - begun,
                             error=f"the VM stopped during the run: {exc.context.get('reason', exc)}")
        if status is None:
            killed = cancel is not None and cancel.is_set()
            output = self._partial_output(guest, cap) if answering else b""
            self._stop(vm)
            return RunResult(137, output[:cap], not killed, len(output) > cap, killed, time.monotonic() - begun)
        out = base64.b64decode(status.get("out-data", ""))
        if helper:
            exit_code = status.get("exitcode")
            if exit_code is None and status.get("signal") is not None:
                exit_code = 128 + int(status["signal"])
            error = None
        else:
            match = _RC_RE.search(base64.b64decode(status.get("err-data", "")))
            exit_code = int(match.group(1)) if match else None
            error = None if match else "no exit status from the wrapper"
        return RunResult(exit_code, out[:cap], False, len(out) > cap, False, time.monotonic() - begun, error=error,
                         rang=rang)

    def _is_served(self, vm: _Vm) -> bool:
        """Whether runs in ``vm`` go to oh-run on RUN_CHANNEL (else through the guest agent)."""
        return vm.port is not None and self._template is not None and self._template.served

    def _execute_served(self, vm: _Vm, files: dict[str, bytes], command: str, *, timeout: float, cap: int,
                        cancel: threading.Event | None) -> RunResult:
        """A run through oh-run's port: send the request, wait for its acknowledgement (the
        program starts then), read the output frames up to the exit status. Same contract as
        `_execute`; the output arrives as it is written, so a timeout keeps it without asking the
        guest."""
        port = vm.port
        if self._drain(port) is None:
            raise _VmUnusable(f"{vm.name}: its {RUN_CHANNEL} port closed")
        now = time.time_ns()
        header = f"{now // 10**9} {now % 10**9} {os.urandom(64).hex()} {cap + 1}".encode()
        request = b"".join([_record(b"H", "", header), *(_record(b"F", n, d) for n, d in files.items()),
                            _record(b"C", "", command.encode() + b"\n"), _record(b"E", "", b"")])
        reply = _Reply(cap)
        ack_by = time.monotonic() + ACK_TIMEOUT + len(request) / 1024**2
        try:
            _send_all(port, request, ack_by, cancel)
            while not reply.acked:
                if not _receive(port, reply, ack_by, cancel):
                    break
        except _Garbled as exc:
            raise _VmUnusable(f"{vm.name}: oh-run answered nonsense: {exc}") from exc
        except TimeoutError:
            pass                 # cancelled, or the guest did not read: decided below
        except OSError as exc:
            raise _VmUnusable(f"{vm.name}: its {RUN_CHANNEL} port failed: {exc}") from exc
        if not reply.acked:
            if cancel is not None and cancel.is_set():
                self._stop(vm)
                return RunResult(137, b"", False, False, True, 0.0)
            raise _VmUnusable(f"{vm.name}: oh-run did not take the run within {ACK_TIMEOUT:.0f} s")
        begun = time.monotonic()
        deadline = begun + timeout
        error = None
        try:
            while reply.status is None and _receive(port, reply, deadline, cancel):
                pass
        except _Garbled as exc:
            error = f"oh-run answered nonsense: {exc}"
        except OSError as exc:
            error = f"the port of the VM failed: {exc}"
        output = bytes(reply.output)
        if reply.status is not None:
            return RunResult(reply.status, output[:cap], False, len(output) > cap, False,
                             time.monotonic() - begun, rang=True)
        self._stop(vm)
        if error is None and reply.closed:
            error = "the VM stopped during the run"
        if error is not None:
            return RunResult(None, output[:cap], False, len(output) > cap, False, time.monotonic() - begun,
                             error=error)
        killed = cancel is not None and cancel.is_set()
        return RunResult(137, output[:cap], not killed, len(output) > cap, killed, time.monotonic() - begun)

    @staticmethod
    def _partial_output(guest: Guest, cap: int) -> bytes:
        """What the program wrote before it was cut short (the wrapper's copy), if the agent answers."""
        try:
            return guest.agent_file_read(GUEST_OUTPUT, limit=cap + 1, timeout=1)
        except HypervisorError:
            return b""

    def _stop(self, vm: _Vm) -> None:
        """Cut the VM's power now (its program may still be running) and forget it."""
        with self._lock:
            self._busy.pop(vm.name, None)
        self._destroy(vm)


class _VmUnusable(SandboxError):
    """A pooled VM failed before its run started; the run takes another one."""

    def __init__(self, reason: str):
        super().__init__(reason=reason)


class _FileLock:
    """An exclusive flock on a file, for work shared with other processes (the template)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class _Garbled(Exception):
    """oh-run's reply on the port does not follow its framing."""


class _Reply:
    """oh-run's reply to a served run, parsed as it arrives: ``A``, ``O<n>`` frames, ``X<status>``.
    Keeps at most cap + 1 bytes of output (one more than the cap tells that it was exceeded)."""

    def __init__(self, cap: int):
        self.keep = cap + 1
        self.buffer = bytearray()
        self.output = bytearray()
        self.acked = False
        self.status: int | None = None
        self.closed = False

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while self.buffer and self.status is None:
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > 32:
                    raise _Garbled(f"no frame header in {bytes(self.buffer[:32])!r}")
                return
            kind, value = self.buffer[:1], self.buffer[1:end]
            if kind == b"A" and not value:
                self.acked = True
                del self.buffer[:end + 1]
            elif kind == b"O" and value.isdigit():
                size = int(value)
                if len(self.buffer) < end + 1 + size:
                    return
                room = max(0, self.keep - len(self.output))
                self.output += self.buffer[end + 1:end + 1 + min(size, room)]
                del self.buffer[:end + 1 + size]
            elif kind == b"X" and value.lstrip(b"-").isdigit():
                self.status = int(value)
                del self.buffer[:end + 1]
            else:
                raise _Garbled(f"unknown frame {bytes(self.buffer[:end][:32])!r}")


def _receive(port: socket.socket, reply: _Reply, until: float, cancel: threading.Event | None) -> bool:
    """Feed what arrives on ``port`` to ``reply``; False at ``until``, on ``cancel`` or at the end of
    the stream (``reply.closed``)."""
    while _readable(port, until, cancel):
        try:
            data = port.recv(256 * 1024)
        except BlockingIOError:
            continue
        if not data:
            reply.closed = True
            return False
        reply.feed(data)
        return True
    return False


def _readable(sock: socket.socket, until: float, cancel: threading.Event | None) -> bool:
    """True once ``sock`` has something to read (or its end); False at ``until`` or on ``cancel``
    (looked at every 50 ms)."""
    while True:
        left = until - time.monotonic()
        if left <= 0 or (cancel is not None and cancel.is_set()):
            return False
        ready, _, _ = select.select([sock], [], [], min(left, 0.05) if cancel is not None else left)
        if ready:
            return True


def _send_all(port: socket.socket, data: bytes, until: float, cancel: threading.Event | None) -> None:
    """Write all of ``data`` to the non-blocking ``port`` by ``until`` (else TimeoutError)."""
    view = memoryview(data)
    while view:
        left = until - time.monotonic()
        if left <= 0 or (cancel is not None and cancel.is_set()):
            raise TimeoutError("the request did not go through in time")
        _, ready, _ = select.select([], [port], [], min(left, 0.05))
        if not ready:
            continue
        try:
            view = view[port.send(view):]
        except BlockingIOError:
            continue


# --- cleanup -------------------------------------------------------------------------------------

def purge(host: Host, work_root: Path | None = None) -> int:
    """Remove every sandbox-kind domain of this installation, and the clone overlays it left under
    ``work_root`` (files named after this installation's domains; templates are kept). Returns the
    number of domains removed. Call it before starting pools (the agent does at start), so a restart
    leaves no orphan VM; never while a pool of this installation runs."""
    removed = 0
    for guest in host.guests():
        if not _sandbox_kind(guest):
            continue
        try:
            guest.remove()
            removed += 1
        except DomainNotFound:
            pass
        _remove_log(host, guest.name)
    if work_root is not None and Path(work_root).exists():
        prefix = domain_name(host.installation_id, "")
        for path in Path(work_root).rglob(f"{prefix}*.qcow2"):
            if has_prefix(path.stem, host.installation_id):
                overlay.remove(path)
    return removed


__all__ = ["SandboxImage", "RunResult", "WarmPool", "purge", "SandboxError", "PoolClosed", "PoolTimeout", "PoolBroken",
           "TemplateFailed", "GUEST_WORKDIR", "MAX_OUTPUT_CAP", "KIND"]
