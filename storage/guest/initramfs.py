"""Initramfs images: busybox-static, the kernel modules a guest needs, and a caller's /init.

The archive is written in Python (see cpio.py), so building needs neither root nor a mount. Its
contract with the /init script it carries:
- every busybox applet is linked under /bin, /sbin, /usr/bin, /usr/sbin;
- /etc/oh-modules lists the modules in dependency order and `/sbin/oh-load-modules` insmods them
  (a module that does not fit the machine, such as a NIC driver without a NIC, fails quietly);
- /dev/console and /dev/null exist before devtmpfs is mounted; /proc, /sys, /dev, /run, /tmp and
  /newroot exist as empty directories.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import subprocess
from importlib import resources
from pathlib import Path
from typing import Sequence

from .cache import run, write_atomic
from .cpio import CpioWriter
from .errors import BuildFailed
from .kernel import MODULES_DIR, kernel_version

BUSYBOX = Path("/bin/busybox")

DEFAULT_MODULES: tuple[str, ...] = (
    # virtio transports and devices: disks, consoles (the guest agent's port), entropy, network
    "virtio_pci", "virtio_mmio", "virtio_blk", "virtio_scsi", "virtio_console", "virtio_rng",
    "virtio_net",
    # host <-> guest sockets without a network
    "vmw_vsock_virtio_transport",
    # root and boot file systems
    "ext4", "isofs", "vfat",
    # emulated disks and CD-ROMs of the q35 (AHCI) and pc (PIIX) machines
    "ahci", "ata_piix", "sd_mod", "sr_mod",
    # emulated NICs: q35 defaults to e1000e, pc to e1000
    "e1000", "e1000e",
    # the ACPI power button and its /dev/input/event* node, for ACPI shutdown without acpid
    "button", "evdev",
)

_LOAD_MODULES = """#!/bin/sh
# Load the initramfs's kernel modules in dependency order (listed in /etc/oh-modules).
while read -r module; do
    insmod "$module" 2>/dev/null
done < /etc/oh-modules
"""


def resolve_modules(names: Sequence[str], kver: str | None = None) -> list[Path]:
    """The module files for `names` and their dependencies, each once, in a valid load order.

    Built-in modules are left out. An unknown module name raises BuildFailed.
    """
    kver = kver or kernel_version()
    # -C /dev/null: the host's modprobe.d options and blacklists are not the guest's business
    out = run("module dependency resolution",
              ["modprobe", "-C", "/dev/null", "-S", kver, "--show-depends", "-a", *names]).stdout
    paths: list[Path] = []
    for line in out.decode().splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "insmod":
            path = Path(words[1])
            if path not in paths:
                paths.append(path)
    return paths


def _read_module(path: Path) -> bytes:
    """The module's ELF bytes, decompressed: busybox insmod hands them to init_module as they are."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".bz2":
        return bz2.decompress(data)
    if path.suffix == ".zst":
        return run("module decompression", ["zstd", "-dc", path]).stdout
    return data


def _check_static(busybox: Path) -> None:
    """Refuse a dynamically linked busybox: the initramfs carries no C library."""
    try:
        head = busybox.read_bytes()[:65536]
    except FileNotFoundError:
        raise BuildFailed(step="initramfs", detail=f"{busybox} is missing: install busybox-static") from None
    if head[:4] != b"\x7fELF" or head[4] != 2:
        raise BuildFailed(step="initramfs", detail=f"{busybox} is not a 64-bit ELF binary")
    phoff, = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    for i in range(phnum):
        if struct.unpack_from("<I", head, phoff + i * phentsize)[0] == 3:  # PT_INTERP
            raise BuildFailed(step="initramfs", detail=f"{busybox} is dynamically linked: install busybox-static")


def _applets(busybox: Path) -> list[str]:
    try:
        out = subprocess.run([str(busybox), "--list-full"], check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BuildFailed(step="initramfs", detail=f"{busybox} --list-full: {exc}") from None
    return [line.strip() for line in out.decode().splitlines() if line.strip()]


def build_initramfs(dest: Path, init: str, modules: Sequence[str] = DEFAULT_MODULES,
                    extra_files: dict[str, bytes] | None = None, *, kver: str | None = None,
                    compress: bool = True) -> Path:
    """Write a (gzip-compressed unless compress=False) newc initramfs to `dest` and return `dest`.

    `init` is the shell script placed at /init. `modules` (with their dependencies, for kernel
    `kver`, default the guests' kernel) are included uncompressed. `extra_files` maps absolute
    paths to contents; those starting with "#!" are made executable, and they take precedence
    over busybox applet links of the same name. The output is deterministic: when `dest` already
    holds the same bytes it is left untouched (so is its mtime).
    """
    kver = kver or kernel_version()
    _check_static(BUSYBOX)
    archive = CpioWriter()
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "lib/modules", "dev", "proc",
                      "sys", "run", "tmp", "newroot", "mnt", "root"):
        archive.add_dir(directory)
    archive.add_char_device("dev/console", 5, 1)
    archive.add_char_device("dev/null", 1, 3, 0o666)
    archive.add_file("init", init.encode(), 0o755)
    for path, data in sorted((extra_files or {}).items()):
        archive.add_file(path, data, 0o755 if data.startswith(b"#!") else 0o644)
    archive.add_file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    for applet in _applets(BUSYBOX):
        if not archive.exists(applet):
            archive.add_symlink(applet, "/bin/busybox")

    order = []
    module_root = MODULES_DIR / kver
    for path in resolve_modules(modules, kver):
        relative = path.relative_to(module_root)
        if relative.suffix in (".xz", ".gz", ".bz2", ".zst"):
            relative = relative.with_suffix("")
        target = f"/lib/modules/{kver}/{relative}"
        archive.add_file(target, _read_module(path))
        order.append(target)
    archive.add_file("etc/oh-modules", "".join(f"{m}\n" for m in order).encode())
    if not archive.exists("sbin/oh-load-modules"):
        archive.add_file("sbin/oh-load-modules", _LOAD_MODULES.encode(), 0o755)

    data = archive.getvalue()
    if compress:
        data = gzip.compress(data, compresslevel=6, mtime=0)
    write_atomic(Path(dest), data)
    return Path(dest)


def script(name: str) -> str:
    """A shell script shipped in storage/guest/scripts/."""
    return resources.files(__package__).joinpath("scripts", name).read_text()


def build_boot_initramfs(dest: Path, modules: Sequence[str] = DEFAULT_MODULES) -> Path:
    """Write the boot initramfs of the debootstrap images to `dest` and return `dest`.

    Its /init loads the modules, mounts the root disk (/dev/vda, ext4, read-write; kernel
    arguments oh.root=, oh.rootfstype= and oh.init= change that) and switch_roots into the root's
    /sbin/openhosting-init. When the root cannot be mounted it prints OPENHOSTING-BOOT-FAILED and
    powers off, so a broken image ends its VM instead of hanging it.
    """
    return build_initramfs(dest, script("boot-init.sh"), modules)
