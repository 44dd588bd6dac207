"""qcow2 overlays: a small writable file on top of a read-only backing file (`qemu-img`).

The only code that creates, inspects or deletes overlay files. A sandbox VM writes only into its own
overlay; the backing chain below it (a frozen template overlay, then an image's raw base) is never
written. Chains are recorded with absolute paths and an explicit backing format, so QEMU and libvirt
never probe a format.

Permissions: overlays are created 0600 (root). libvirt's DAC driver hands every file of a running
domain's chain to the QEMU user and gives it back when the domain stops, so nothing here chowns.
The directories above must be traversable by that user (0711).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from .errors import StorageError

QEMU_IMG = "qemu-img"


class OverlayError(StorageError):
    template = "{operation} {path}: {reason}"


def _qemu_img(operation: str, path: Path, *args: str, timeout: float = 60) -> str:
    try:
        done = subprocess.run([QEMU_IMG, *args], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OverlayError(operation=operation, path=path, reason=str(exc)) from exc
    if done.returncode != 0:
        raise OverlayError(operation=operation, path=path,
                           reason=(done.stderr or done.stdout).strip()[-500:] or f"exit {done.returncode}")
    return done.stdout


def virtual_size(path: Path, format: str = "raw") -> int:
    """Bytes the guest sees: the file size of a raw image, the header's size of a qcow2."""
    path = Path(path)
    if format == "raw":
        try:
            return path.stat().st_size
        except OSError as exc:
            raise OverlayError(operation="size of", path=path, reason=exc.strerror) from exc
    return int(info(path)["virtual-size"])


def create(path: Path, backing: Path, *, backing_format: str = "raw", size: int | None = None) -> Path:
    """Create the qcow2 ``path`` on ``backing`` (absolute path, given format), 0600, and return it.

    With ``size`` (the backing's virtual size, e.g. from `virtual_size`) qemu-img does not open the
    backing file, which saves a few milliseconds and works while a running VM holds it.
    An existing ``path`` is an error: overlays are never reused.
    """
    path, backing = Path(path).absolute(), Path(backing).absolute()
    if path.exists():
        raise OverlayError(operation="create", path=path, reason="already exists")
    args = ["create", "-q", "-f", "qcow2", "-F", backing_format, "-b", str(backing)]
    if size is not None:
        args += ["-u", str(path), str(size)]
    else:
        args += [str(path)]
    # Make the file 0600 first and let qemu-img fill it: changing the umask instead would leak into
    # every thread of the process (and into children it spawns meanwhile).
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    try:
        _qemu_img("create", path, *args)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def copy(source: Path, path: Path) -> Path:
    """A private copy of the (small) qcow2 ``source`` at ``path``, 0600, same backing chain below it:
    what lets a long-lived VM outlive the frozen overlay it was cloned from. Sparse regions stay
    sparse. An existing ``path`` is an error."""
    source, path = Path(source).absolute(), Path(path).absolute()
    if path.exists():
        raise OverlayError(operation="copy to", path=path, reason="already exists")
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    try:
        done = subprocess.run(["cp", "--sparse=always", "--no-preserve=all", str(source), str(path)],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise OverlayError(operation="copy to", path=path, reason=done.stderr.strip()[-300:])
        os.chmod(path, 0o600)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def info(path: Path) -> dict:
    """``qemu-img info --output=json`` of one file (not the chain). Opens the file read-only with
    ``-U`` (no lock), so it also works on an overlay a VM is using."""
    return json.loads(_qemu_img("inspect", Path(path), "info", "-U", "--output=json", str(path)))


def backing_chain(path: Path) -> list[Path]:
    """``path`` and every file below it, top first."""
    text = _qemu_img("inspect", Path(path), "info", "-U", "--backing-chain", "--output=json", str(path))
    return [Path(layer["filename"]) for layer in json.loads(text)]


def remove(path: Path) -> bool:
    """Delete an overlay; True when it existed. Never follows the chain: backing files stay."""
    try:
        Path(path).unlink()
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise OverlayError(operation="remove", path=path, reason=exc.strerror) from exc


def allocated(path: Path) -> int:
    """Bytes the overlay occupies on the host (what a guest's writes have cost so far)."""
    try:
        return Path(path).stat().st_blocks * 512
    except FileNotFoundError:
        return 0
