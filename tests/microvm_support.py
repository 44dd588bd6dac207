"""What the lightweight-VM tests share: the `base` guest image as a SandboxImage, and timings printed
as "TIMING name seconds" (run pytest with -s to see them; they are figures, never asserted)."""

from __future__ import annotations

from hypervisor.microvm import SandboxImage

from .conftest import STATE_ROOT


def base_image() -> SandboxImage:
    """Build (or find in the cache, well under a second) the `base` image into STATE_ROOT. No skip: these
    tests are the substrate's, and a machine without libvirtd or debootstrap must fail them loudly."""
    from storage.guest import build_image
    STATE_ROOT.mkdir(mode=0o711, parents=True, exist_ok=True)
    out = STATE_ROOT / "sandbox-image"
    built = build_image("base", out)
    for path in (STATE_ROOT, out):
        path.chmod(0o711)   # QEMU runs as another user and must reach the image
    return SandboxImage(slug="base", base=built["rootfs"], kernel=built["kernel"], initramfs=built["initramfs"],
                        cmdline=built["cmdline"], memory_mib=built["memory"])


def timing(name: str, seconds: float) -> float:
    print(f"TIMING {name} {seconds:.3f}")
    return seconds
