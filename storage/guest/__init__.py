"""The guest-image builder: kernels, initramfs images and root file systems for VMs.

Everything here writes files only (no mounts, no libvirt); hypervisor/ boots what it builds.
- extract_kernel / kernel_version: the host's Debian kernel, uncompressed for PVH direct boot.
- build_initramfs: busybox-static + kernel modules + a caller's /init, as a newc cpio.
- build_boot_initramfs: the initramfs that boots the debootstrap images from /dev/vda.
- load_manifest / build_rootfs: debootstrap images described in images.toml.
- build_image / list_images: all of the above for one image, for the operator CLI and the agent.
Builds are cached under cache_dir() and are idempotent. See docs/guest-images.md.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .cache import cache_dir
from .errors import BadManifest, BuildFailed, GuestImageError, KernelNotFound, UnknownImage
from .initramfs import DEFAULT_MODULES, build_boot_initramfs, build_initramfs, resolve_modules
from .kernel import KERNEL_CMDLINE, extract_kernel, find_vmlinuz, has_pvh_entry, kernel_version
from .rootfs import ImageSpec, build_rootfs, get_spec, is_current, load_manifest

__all__ = [
    "DEFAULT_MODULES", "KERNEL_CMDLINE", "BOOT_INITRAMFS", "ImageSpec",
    "GuestImageError", "BadManifest", "BuildFailed", "KernelNotFound", "UnknownImage",
    "build_boot_initramfs", "build_image", "build_initramfs", "build_rootfs", "cache_dir",
    "extract_kernel", "find_vmlinuz", "has_pvh_entry", "kernel_version", "list_images",
    "load_manifest", "resolve_modules",
]

log = logging.getLogger("openhosting.storage.guest")

# File name of the shared boot initramfs inside an image output directory.
BOOT_INITRAMFS = "initramfs-boot.img"


def _rootfs_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / f"{name}.ext4"


def build_image(name: str, out_dir: Path) -> dict:
    """Build (or find current) everything a VM of image `name` boots from, in `out_dir`.

    Returns {"name", "description", "memory" (MiB), "kernel", "initramfs", "rootfs" (Paths),
    "cmdline", "kernel_version", "seconds"}. The kernel and boot initramfs are shared by all
    images in `out_dir`; the root file system is `out_dir`/<name>.ext4, to be used read-only as
    the backing file of per-VM qcow2 overlays. Raises UnknownImage for a name not in the manifest.
    """
    started = time.monotonic()
    spec = get_spec(name)
    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    kernel = extract_kernel(out_dir)
    initramfs = build_boot_initramfs(out_dir / BOOT_INITRAMFS)
    rootfs = build_rootfs(name, _rootfs_path(out_dir, name))
    seconds = round(time.monotonic() - started, 1)
    log.info("image %s ready in %.1f s", name, seconds)
    return {
        "name": name,
        "description": spec.description,
        "memory": spec.memory,
        "kernel": kernel,
        "initramfs": initramfs,
        "rootfs": rootfs,
        "cmdline": KERNEL_CMDLINE,
        "kernel_version": kernel_version(),
        "seconds": seconds,
    }


def list_images(out_dir: Path | None = None) -> list[dict]:
    """The manifest's images: {"name", "description", "memory", "size", "packages"}, plus, when
    `out_dir` is given, "built" (its root file system there is current) and "rootfs" (its path).
    """
    images = []
    for spec in load_manifest().values():
        entry = {"name": spec.name, "description": spec.description, "memory": spec.memory,
                 "size": spec.size, "packages": list(spec.packages)}
        if out_dir is not None:
            rootfs = _rootfs_path(out_dir, spec.name)
            entry["built"] = is_current(spec, rootfs)
            entry["rootfs"] = rootfs
        images.append(entry)
    return images
