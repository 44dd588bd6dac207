"""A tiny test guest for tests that need a real VM but no debootstrap image, and a raw QEMU runner.

The guest is the host's kernel and a busybox initramfs (storage.guest.build_initramfs) whose init:
- prints GUEST_UP ("OPENHOSTING-GUEST-UP") on the console (ttyS0) once it is ready, including its
  ACPI power-button handler, so an ACPI shutdown sent after the marker is never lost;
- brings eth0 up with udhcpc when there is a NIC and prints "OPENHOSTING-IP <address>";
- powers off (printing "OPENHOSTING-POWEROFF <why>") on an ACPI power-button press, or by itself
  N seconds after boot when the kernel command line has oh.poweroff=N.

Three forms: build_test_iso (isolinux CD for `media cdrom`), build_test_disk (syslinux on a FAT
"superfloppy" raw disk) and guest_kernel + build_test_initramfs (direct kernel boot). All are cached
by a hash of their inputs under <cache>/testguest/, so a test run builds each once.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from qemu.qmp import ConnectError, ExecuteError, QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from storage.guest import KERNEL_CMDLINE, build_initramfs, extract_kernel, find_vmlinuz
from storage.guest.cache import cache_dir, digest, file_identity, locked, run

GUEST_UP = "OPENHOSTING-GUEST-UP"
IP_PREFIX = "OPENHOSTING-IP "
POWEROFF = "OPENHOSTING-POWEROFF"
# Bump when the guest's behaviour changes without its inputs changing.
_VERSION = 1

INIT = r"""#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
/sbin/oh-load-modules
ip link set lo up

power_off() {
    echo "OPENHOSTING-POWEROFF $1"
    sync
    poweroff -f
}

# An ACPI power-button press arrives as an input event on the "Power Button" device. The button
# driver may register it a moment after its module loads: wait for it, or a press could be lost.
for _ in $(seq 1 50); do
    grep -qs "^Power Button$" /sys/class/input/event*/device/name && break
    sleep 0.1
done
for dev in /sys/class/input/event*; do
    [ "$(cat "$dev/device/name" 2>/dev/null)" = "Power Button" ] || continue
    ( dd if="/dev/input/${dev##*/}" of=/dev/null bs=4096 count=1 2>/dev/null && power_off acpi ) &
done

for arg in $(cat /proc/cmdline); do
    case "$arg" in
        oh.poweroff=*) ( sleep "${arg#oh.poweroff=}"; power_off timer ) & ;;
    esac
done

echo "OPENHOSTING-GUEST-UP"

if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    udhcpc -f -i eth0 -s /etc/udhcpc.script -t 20 -T 1 -A 2 >/dev/null 2>&1 &
fi

while :; do
    sleep 3600
done
"""

UDHCPC_SCRIPT = r"""#!/bin/sh
# udhcpc hook: configure the lease and announce the address on the console.
case "$1" in
    deconfig)
        ip addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        if ! ip -4 addr show dev "$interface" | grep -q "inet $ip/"; then
            ip addr flush dev "$interface"
            ip addr add "$ip/${mask:-24}" dev "$interface"
            for gw in $router; do
                ip route add default via "$gw" dev "$interface"
                break
            done
            echo "OPENHOSTING-IP $ip" > /dev/console
        fi
        ;;
esac
"""


def _cmdline(poweroff_after: int | None) -> str:
    return KERNEL_CMDLINE + (f" oh.poweroff={int(poweroff_after)}" if poweroff_after is not None else "")


def _cached(kind: str, key: str) -> Path:
    path = cache_dir() / "testguest" / f"{kind}-{key}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _deliver(cached: Path, dest: Path | None) -> Path:
    """`cached` itself when dest is None (do not modify it), else a copy at `dest`."""
    if dest is None:
        return cached
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # cp keeps the disk image sparse
    run("copy", ["cp", "--sparse=always", "--reflink=auto", cached, dest])
    return dest


def build_test_initramfs(dest: Path | None = None) -> Path:
    """The test guest's gzip initramfs (at `dest`, or the cached file when dest is None)."""
    key = digest(_VERSION, INIT, UDHCPC_SCRIPT, file_identity(find_vmlinuz()),
                 file_identity(Path("/bin/busybox")))
    cached = _cached("initramfs", key).with_suffix(".gz")
    with locked(cached):
        if not cached.exists():
            build_initramfs(cached, INIT, extra_files={"/etc/udhcpc.script": UDHCPC_SCRIPT.encode()})
    return _deliver(cached, dest)


def guest_kernel() -> Path:
    """The uncompressed (PVH) kernel for direct kernel boot, cached."""
    return extract_kernel(cache_dir() / "testguest")


def guest_cmdline(poweroff_after: int | None = None) -> str:
    """The kernel command line for a direct boot of the test guest."""
    return _cmdline(poweroff_after)


def _syslinux_config(poweroff_after: int | None, kernel: str, initrd: str) -> str:
    # PROMPT 0 with no TIMEOUT boots the default entry at once; SERIAL also shows the loader on ttyS0
    return (f"SERIAL 0 115200\nDEFAULT guest\nPROMPT 0\nLABEL guest\n  KERNEL {kernel}\n"
            f"  INITRD {initrd}\n  APPEND {_cmdline(poweroff_after)}\n")


def build_test_iso(dest: Path | None = None, poweroff_after: int | None = None) -> Path:
    """A bootable (isolinux, El Torito; also isohybrid) ISO of the test guest; returns its path.

    `poweroff_after` bakes oh.poweroff=N into the boot entry. With dest None the shared cached
    file is returned: attach it read-only.
    """
    vmlinuz = find_vmlinuz()
    initramfs = build_test_initramfs()
    isolinux = Path("/usr/lib/ISOLINUX/isolinux.bin")
    ldlinux = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
    hybrid_mbr = Path("/usr/lib/ISOLINUX/isohdpfx.bin")
    key = digest(_VERSION, poweroff_after, file_identity(vmlinuz), initramfs.name,
                 *(file_identity(p) for p in (isolinux, ldlinux, hybrid_mbr)))
    cached = _cached("iso", key).with_suffix(".iso")
    with locked(cached):
        if not cached.exists():
            with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
                root = Path(tmp) / "root"
                (root / "isolinux").mkdir(parents=True)
                (root / "boot").mkdir()
                shutil.copy(isolinux, root / "isolinux/isolinux.bin")
                shutil.copy(ldlinux, root / "isolinux/ldlinux.c32")
                shutil.copy(vmlinuz, root / "boot/vmlinuz")
                shutil.copy(initramfs, root / "boot/initrd.gz")
                (root / "isolinux/isolinux.cfg").write_text(
                    _syslinux_config(poweroff_after, "/boot/vmlinuz", "/boot/initrd.gz"))
                out = Path(tmp) / "guest.iso"
                run("xorriso", ["xorriso", "-as", "mkisofs", "-quiet", "-o", out, "-V", "OHTESTGUEST",
                                "-isohybrid-mbr", hybrid_mbr, "-b", "isolinux/isolinux.bin",
                                "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4",
                                "-boot-info-table", root])
                os.replace(out, cached)
    return _deliver(cached, dest)


def build_test_disk(dest: Path | None = None, poweroff_after: int | None = None,
                    size_mib: int = 32) -> Path:
    """A bootable raw disk of the test guest: FAT with syslinux in its boot sector, no partition
    table (a "superfloppy": the BIOS runs sector 0, which is the FAT boot sector). Returns its path.

    Built without root or mounts: mkfs.fat -C, mcopy, and syslinux's mtools installer. With dest
    None the shared cached file is returned: attach it read-only or with snapshot=on.
    """
    vmlinuz = find_vmlinuz()
    initramfs = build_test_initramfs()
    key = digest(_VERSION, poweroff_after, size_mib, file_identity(vmlinuz), initramfs.name,
                 file_identity(Path("/usr/bin/syslinux")))
    cached = _cached("disk", key).with_suffix(".img")
    with locked(cached):
        if not cached.exists():
            with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
                img = Path(tmp) / "disk.img"
                cfg = Path(tmp) / "syslinux.cfg"
                cfg.write_text(_syslinux_config(poweroff_after, "/vmlinuz", "/initrd.gz"))
                # mtools refuses images whose size is not a whole number of tracks without this
                env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
                run("mkfs.fat", ["mkfs.fat", "-C", "-n", "OHTESTGUEST", img, str(size_mib * 1024)])
                run("mcopy", ["mcopy", "-i", img, vmlinuz, "::vmlinuz"], env=env)
                run("mcopy", ["mcopy", "-i", img, initramfs, "::initrd.gz"], env=env)
                run("mcopy", ["mcopy", "-i", img, cfg, "::syslinux.cfg"], env=env)
                run("syslinux", ["syslinux", "--install", img], env=env)
                os.replace(img, cached)
    return _deliver(cached, dest)


# ---- running QEMU directly (tests only; the product boots through hypervisor/) ------------------

class Qemu:
    """One qemu-system-x86_64 process (q35, TCG) with its serial console in a file and a QMP socket.

    Use as a context manager; leaving it kills the process if it is still running.
    """

    def __init__(self, workdir: Path, args: list[str], memory: int = 256):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.serial = self.workdir / "serial.log"
        self.qmp_path = self.workdir / "qmp.sock"
        self.argv = ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-m", str(memory),
                     "-nodefaults", "-display", "none", "-no-reboot",
                     "-serial", f"file:{self.serial}",
                     "-qmp", f"unix:{self.qmp_path},server=on,wait=off", *args]
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def __enter__(self) -> "Qemu":
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()

    def console(self) -> str:
        try:
            return self.serial.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        """Wait until the console matches the regular expression `pattern`; return the match."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.console())
            if match:
                return match
            if self.proc.poll() is not None:
                raise AssertionError(f"qemu exited ({self.proc.returncode}) before {pattern!r}:\n"
                                     f"{self.proc.stdout.read().decode(errors='replace')}\n{self.console()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} on the console within {timeout} s:\n{self.console()}")
            time.sleep(0.05)

    def wait_exit(self, timeout: float) -> int:
        """Wait for QEMU to end (the guest powered off, with -no-reboot a reboot too)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"qemu still running after {timeout} s:\n{self.console()}") from None

    def qmp(self, command: str, **arguments) -> dict:
        """Run one QMP command on a fresh connection (greeting and capabilities negotiation done by
        qemu.qmp); returns the reply, ``return`` or ``error``."""
        monitor = QEMUMonitorProtocol(str(self.qmp_path))
        monitor.settimeout(10)
        try:
            monitor.connect()
            return monitor.cmd_raw(command, arguments or None)
        finally:
            monitor.close()


class GuestAgent:
    """A QEMU guest agent client on a chardev socket (tests only; hypervisor/ goes through libvirt).

    The guest agent speaks QMP without the greeting and the capabilities negotiation, so qemu.qmp's
    client does the wire work (``connect(negotiate=False)``, as qemu.qmp's own qemu_ga_client does);
    its replies carry the id of their command, so a late reply to an earlier, timed-out guest-sync
    is dropped by the library, never taken for the answer to a later command. Connect before the
    guest boots: the socket exists as soon as QEMU starts."""

    def __init__(self, path: Path, timeout: float = 10):
        # QEMU creates the socket file a moment before it listens on it: retry a refused connect.
        deadline = time.monotonic() + timeout
        while True:
            self.client = QEMUMonitorProtocol(str(path))
            try:
                self.client.connect(negotiate=False)
                break
            except ConnectError:
                self.client.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.sync_id = int(time.time()) % 100000 * 1000

    def close(self) -> None:
        try:
            self.client.close()
        except (QMPError, OSError, EOFError):
            pass        # the guest went away first (guest-shutdown): nothing left to close cleanly

    def send(self, command: str, **arguments) -> None:
        """Send a command without waiting for its reply (guest-shutdown never replies on success)."""
        self.client.settimeout(0.5)
        try:
            self.client.cmd(command, **arguments)
        except (asyncio.TimeoutError, QMPError):
            pass

    def wait_ready(self, timeout: float) -> float:
        """Poll guest-sync until the agent answers with our id."""
        deadline = time.monotonic() + timeout
        self.client.settimeout(1.0)
        while time.monotonic() < deadline:
            self.sync_id += 1
            try:
                if self.client.cmd("guest-sync", id=self.sync_id) == self.sync_id:
                    return time.monotonic()
            except asyncio.TimeoutError:
                continue
        raise AssertionError(f"guest agent not ready within {timeout} s")

    def call(self, command: str, timeout: float = 30, **arguments) -> object:
        """Run an agent command; returns its "return" value, raises on an error reply."""
        self.client.settimeout(timeout)
        try:
            return self.client.cmd(command, **arguments)
        except asyncio.TimeoutError:
            raise AssertionError(f"no reply to {command} within {timeout} s") from None
        except ExecuteError as exc:
            raise AssertionError(f"{command}: {exc.received.get('error')}") from None
