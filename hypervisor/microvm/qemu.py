"""QEMU below libvirt: monitor commands, saving and loading a VM's state through a file, RAM in a
file, extra command-line arguments, and the facts libvirt has no verb for (RSS, logs).

States travel by migration: `save_state` migrates a paused VM to a file descriptor (`getfd` +
``migrate fd:``); `load_state` streams one into a domain started with ``-incoming defer``
(``migrate-incoming fd:``). The descriptors are passed with `virDomainQemuMonitorCommandWithFiles`.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import libvirt_qemu

from ..errors import translate
from ..host import Host
from .errors import SandboxError

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
ET.register_namespace("qemu", QEMU_NS)

#: The QEMU memory backend holding a VM's RAM when it is set on the command line: the template's
#: RAM is a file, shared while the template runs and mapped copy-on-write (private) by every clone.
RAM_BACKEND = "oh-ram"

#: Migration leaves out RAM that lives in a shared file: the template's state holds no RAM, and a
#: clone keeps the copy-on-write mapping of the template's RAM file it started with.
IGNORE_SHARED = {"execute": "migrate-set-capabilities",
                 "arguments": {"capabilities": [{"capability": "x-ignore-shared", "state": True}]}}


def monitor(dom: libvirt.virDomain, command: dict, files: list[int] | None = None):
    """One QMP command to the VM's QEMU through libvirt (``files``: descriptors passed along, for
    `getfd`); returns its ``return`` value. Not qemu.qmp: libvirtd holds QEMU's only monitor
    connection, and its passthrough is the supported way in (a second ``-qmp`` monitor of our own
    would change state behind libvirt's back)."""
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


def wait_migration(dom: libvirt.virDomain, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        status = monitor(dom, {"execute": "query-migrate"})
        if status.get("status") == "completed":
            return status
        if status.get("status") in ("failed", "cancelled"):
            raise SandboxError(reason=f"{dom.name()}: migration {status.get('status')}: "
                                      f"{status.get('error-desc', '')}")
        if time.monotonic() > deadline:
            raise SandboxError(reason=f"{dom.name()}: migration did not finish within {timeout} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def earlier_save(dom: libvirt.virDomain, timeout: float) -> bool:
    """Whether an outgoing migration (a save) that an earlier process began on ``dom`` has written
    the whole state: one still under way is waited for (QEMU goes on writing to the descriptor it
    was given when the process that asked dies). QEMU then stays in ``postmigrate`` and refuses a
    second save, so the file that save wrote is the state. False when there was none."""
    status = (monitor(dom, {"execute": "query-migrate"}) or {}).get("status")
    if status not in (None, "none", "completed", "failed", "cancelled"):
        wait_migration(dom, timeout=timeout)
    return (monitor(dom, {"execute": "query-status"}) or {}).get("status") == "postmigrate"


def save_state(dom: libvirt.virDomain, path: Path, *, ignore_shared: bool, timeout: float = 300) -> None:
    """Write the paused VM's whole state (devices, and RAM unless it lives in a shared file and
    ``ignore_shared``) to ``path`` (created 0600). The VM stays paused; its QEMU can then go."""
    begin_save(dom, path, ignore_shared=ignore_shared)
    wait_migration(dom, timeout=timeout)


def save_whole(dom: libvirt.virDomain, path: Path, *, timeout: float) -> bool:
    """Save the paused VM's whole state, RAM included, to ``path``: written as ``<path>.partial``,
    fsynced, then renamed, so ``path`` is whole or absent. A save an earlier process began is
    finished and used (`earlier_save`); returns True when it was."""
    partial = path.with_name(path.name + ".partial")
    earlier = earlier_save(dom, timeout=timeout)
    if not earlier:
        save_state(dom, partial, ignore_shared=False, timeout=timeout)
    elif not partial.exists() and not path.exists():    # saved, then its file lost: run, save anew
        monitor(dom, {"execute": "cont"})
        try:
            dom.suspend()
        except libvirt.libvirtError as exc:
            raise translate(exc, domain=dom.name(), operation="pause") from exc
        save_state(dom, partial, ignore_shared=False, timeout=timeout)
    if partial.exists():
        fsync(partial)
        partial.rename(path)
    return earlier


def begin_save(dom: libvirt.virDomain, path: Path, *, ignore_shared: bool, bandwidth: int = 1 << 40) -> None:
    """Start `save_state`'s migration (at most ``bandwidth`` bytes/s) and return while it runs."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # QEMU throttles migration to 32 MiB/s unless told otherwise
        monitor(dom, {"execute": "migrate-set-parameters", "arguments": {"max-bandwidth": bandwidth}})
        # said either way: a clone keeps the capability its incoming migration was given
        monitor(dom, {"execute": "migrate-set-capabilities", "arguments": {"capabilities": [
            {"capability": "x-ignore-shared", "state": ignore_shared}]}})
        monitor(dom, {"execute": "getfd", "arguments": {"fdname": "oh-save"}}, [fd])
    finally:
        os.close(fd)
    monitor(dom, {"execute": "migrate", "arguments": {"uri": "fd:oh-save"}})


def load_state(dom: libvirt.virDomain, path: Path, *, ignore_shared: bool, timeout: float = 120) -> None:
    """Stream the state in ``path`` into ``dom`` (started paused with ``-incoming defer``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        monitor(dom, {"execute": "getfd", "arguments": {"fdname": "oh-state"}}, [fd])
    finally:
        os.close(fd)
    if ignore_shared:
        monitor(dom, IGNORE_SHARED)     # the RAM is the template's file, not in the state
    monitor(dom, {"execute": "migrate-incoming", "arguments": {"uri": "fd:oh-state"}})
    wait_migration(dom, timeout=timeout)


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def qemu_pid(name: str) -> int | None:
    """The pid of the domain's QEMU process (libvirt's pid file), or None."""
    try:
        return int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def qemu_memory(name: str) -> tuple[int, int] | None:
    """(VmRSS, RssAnon) of the domain's QEMU process in bytes: all it has resident, and what is
    its own (the pages a clone shares with its template's RAM file are resident but not its own)."""
    pid = qemu_pid(name)
    if pid is None:
        return None
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":" in line)
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["RssAnon"].split()[0]) * 1024
    except (OSError, ValueError, KeyError):
        return None


def ram_args(path: Path | None, memory_mib: int, *, shared: bool) -> list[str]:
    """QEMU arguments that put the guest's RAM in ``path``: written through while ``shared``
    (the template), else mapped copy-on-write (a clone: what it writes stays its own). With no
    ``path``: anonymous RAM under the same backend name, so that a state saved by a VM whose RAM
    was a file loads into it (migration matches RAM blocks by name)."""
    if path is None:
        return ["-object", f"memory-backend-ram,id={RAM_BACKEND},size={memory_mib}M",
                "-machine", f"memory-backend={RAM_BACKEND}"]
    mem_path = str(path).replace(",", ",,")
    return ["-object", f"memory-backend-file,id={RAM_BACKEND},size={memory_mib}M,mem-path={mem_path},"
                       f"share={'on' if shared else 'off'}",
            "-machine", f"memory-backend={RAM_BACKEND}"]


def set_commandline(root: ET.Element, args: list[str]) -> None:
    """Make ``args`` the domain's extra QEMU arguments (``<qemu:commandline>``)."""
    for old in root.findall(f"{{{QEMU_NS}}}commandline"):
        root.remove(old)
    if args:
        commandline = ET.SubElement(root, f"{{{QEMU_NS}}}commandline")
        for value in args:
            ET.SubElement(commandline, f"{{{QEMU_NS}}}arg", value=value)


def commandline(root: ET.Element) -> list[str]:
    """The domain's extra QEMU arguments."""
    return [arg.get("value") for arg in root.findall(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]


def remove_log(host: Host, name: str) -> None:
    """libvirt keeps a log file per domain name forever; sandboxes come and go by the thousand."""
    if host.connection.uri == "qemu:///system":
        try:
            Path(f"/var/log/libvirt/qemu/{name}.log").unlink()
        except OSError:
            pass


class FileLock:
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


class BothLocks:
    """A thread lock, then a file lock (other processes): one object's calls, serialized."""

    def __init__(self, lock, path: Path):
        self.lock, self.path = lock, path

    def __enter__(self):
        self.lock.acquire()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = FileLock(self.path).__enter__()
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, *exc):
        try:
            self.file.__exit__(*exc)
        finally:
            self.lock.release()
