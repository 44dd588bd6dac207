"""The guest kernel: the host's Debian bzImage, and the uncompressed ELF inside it.

Under TCG most of a bzImage boot is spent decompressing the kernel in emulated code. The ELF
vmlinux in the payload carries a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY), so QEMU and libvirt
can start it directly with `-kernel` / `<os><kernel>`, which roughly halves the boot.
"""

from __future__ import annotations

import bz2
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

from .errors import BuildFailed, KernelNotFound

BOOT_DIR = Path("/boot")
MODULES_DIR = Path("/lib/modules")

# Boots reliably under TCG: no TSC or timer calibration trouble, no PS/2 probing, no crypto self-tests.
KERNEL_CMDLINE = ("console=ttyS0 quiet no_timer_check tsc=reliable i8042.noaux i8042.nokbd "
                  "i8042.nopnp i8042.dumbkbd cryptomgr.notests")

_CHUNK = 1024 * 1024
_XEN_ELFNOTE_PHYS32_ENTRY = 18


def _version_key(version: str) -> list:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", version) if p]


def find_vmlinuz() -> Path:
    """The newest /boot/vmlinuz-* whose modules are installed (so an initramfs can be built for it)."""
    candidates = []
    for path in BOOT_DIR.glob("vmlinuz-*"):
        version = path.name.removeprefix("vmlinuz-")
        if (MODULES_DIR / version).is_dir():
            candidates.append((_version_key(version), path))
    if not candidates:
        raise KernelNotFound(reason=f"no {BOOT_DIR}/vmlinuz-* with modules under {MODULES_DIR}"
                                    " (install linux-image-amd64)")
    return max(candidates)[1]


def kernel_version() -> str:
    """The release string (`uname -r` form, e.g. 6.1.0-56-amd64) of the kernel guests boot."""
    return find_vmlinuz().name.removeprefix("vmlinuz-")


def _payload(bzimage: bytes) -> bytes:
    """The compressed kernel inside a bzImage, located through the boot protocol header."""
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != b"HdrS":
        raise KernelNotFound(reason="not a bzImage (no HdrS boot header)")
    protocol = struct.unpack_from("<H", bzimage, 0x206)[0]
    if protocol < 0x208:
        raise KernelNotFound(reason=f"boot protocol {protocol:#x} has no payload fields")
    setup_sects = bzimage[0x1F1] or 4  # 0 means 4, for ancient reasons
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    return bzimage[start:start + length]


def _decompress(payload: bytes, out) -> None:
    """Stream the decompressed payload into `out`, whatever the kernel was compressed with.

    Kernels append the uncompressed size after the stream; the decompressors stop at the end of
    the stream and ignore it.
    """
    if payload.startswith(b"\xfd7zXZ\x00"):
        dec = lzma.LZMADecompressor(lzma.FORMAT_XZ)
    elif payload.startswith(b"\x1f\x8b"):
        dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif payload.startswith(b"\x5d\x00\x00"):
        dec = lzma.LZMADecompressor(lzma.FORMAT_ALONE)
    elif payload.startswith(b"BZh"):
        dec = bz2.BZ2Decompressor()
    else:
        tools = {b"\x28\xb5\x2f\xfd": "zstd", b"\x02\x21\x4c\x18": "lz4", b"\x89\x4c\x5a\x4f": "lzop"}
        tool = tools.get(payload[:4])
        if tool is None:
            raise KernelNotFound(reason=f"unknown kernel compression (magic {payload[:6].hex()})")
        if shutil.which(tool) is None:
            raise BuildFailed(step="kernel extraction", detail=f"{tool} is needed to decompress this kernel")
        # These tools stop at the end of the frame; the appended size is trailing garbage to them.
        proc = subprocess.run([tool, "-dc"], input=payload, stdout=out, stderr=subprocess.PIPE)
        if proc.returncode != 0 and not out.tell():
            raise BuildFailed(step="kernel extraction", detail=proc.stderr.decode(errors="replace"))
        return
    view = memoryview(payload)
    for pos in range(0, len(view), _CHUNK):
        out.write(dec.decompress(view[pos:pos + _CHUNK]))
        if getattr(dec, "eof", False):
            break


def has_pvh_entry(vmlinux: Path) -> bool:
    """Whether an ELF kernel carries the PVH entry note that QEMU's direct kernel boot needs."""
    with open(vmlinux, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        for i in range(phnum):
            p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
            if p_type != 4:  # PT_NOTE
                continue
            f.seek(p_offset)
            notes = f.read(p_filesz)
            pos = 0
            while pos + 12 <= len(notes):
                namesz, descsz, ntype = struct.unpack_from("<III", notes, pos)
                name = notes[pos + 12:pos + 12 + namesz].rstrip(b"\0")
                if name == b"Xen" and ntype == _XEN_ELFNOTE_PHYS32_ENTRY:
                    return True
                pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def extract_kernel(dest_dir: Path, vmlinuz: Path | None = None) -> Path:
    """Write the uncompressed ELF kernel of `vmlinuz` (default: the newest) to dest_dir/vmlinux-<version>.

    Returns that path. Nothing is done when it exists and is newer than the bzImage. The file is
    replaced atomically, so a VM starting meanwhile sees the old or the new kernel, never half.
    """
    vmlinuz = Path(vmlinuz) if vmlinuz is not None else find_vmlinuz()
    version = vmlinuz.name.removeprefix("vmlinuz-") if vmlinuz.name.startswith("vmlinuz-") else vmlinuz.name
    dest_dir = Path(dest_dir)
    dest = dest_dir / f"vmlinux-{version}"
    try:
        if dest.stat().st_mtime_ns > vmlinuz.stat().st_mtime_ns:
            return dest
    except FileNotFoundError:
        pass
    payload = _payload(vmlinuz.read_bytes())
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            _decompress(payload, out)
        with open(tmp, "rb") as f:
            if f.read(4) != b"\x7fELF":
                raise KernelNotFound(reason=f"the payload of {vmlinuz} is not an ELF kernel")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest
