"""The guest side of a workspace as the workspaces services use it: the VMs (hypervisor/microvm/
workspace.py) and oh-guest's channel (hypervisor/microvm/guest_channel.py).

oh-guest serves one host connection at a time (a new HELLO drops the channels of the previous one),
so every process that talks to a workspace's guest takes that workspace's file lock first and holds
it for the whole conversation (`conversation`). File calls run as the workspace user, `beneath` the
workspace directory: links cannot lead them out.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from ..config import Settings
from .workspace_files import ROOT, GuestFileError

USER_HOME = "/home/user"
USER_UID = 1000
BOOT_TIMEOUT = 900
# Made as root before anything else runs in a workspace (in its template, else by the create): the
# user and the workspace directory.
PREPARE = (f"id -u user >/dev/null 2>&1 || useradd -m -u {USER_UID} -U -s /bin/bash user; "
           f"mkdir -p {ROOT} && chown user:user {USER_HOME} {ROOT}")


def work_root(settings: Settings) -> Path:
    return settings.state_dir / "workspace-vms"


def workspace_vms(settings: Settings, host, *, owner: bool = False):
    """The workspace VMs; ``owner``: for the process that runs their actions (the agent), which
    keeps the spare VMs (`OPENHOSTING_WORKSPACE_SPARE_VMS`)."""
    from hypervisor.microvm.workspace import WorkspaceVMs

    root = work_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o711)  # QEMU (another user) reaches the disks below
    # A template boots once per image and memory size; under TCG on a loaded host it has taken
    # longer than WorkspaceVMs' default 300 s. The template makes the user and the workspace
    # directory, so that a create does not spend a guest command (0.25 s under TCG) on them.
    return WorkspaceVMs(host, root, boot_timeout=BOOT_TIMEOUT, template_setup=PREPARE,
                        spare_vms=settings.workspace_spare_vms if owner else 0)


@contextlib.contextmanager
def conversation(settings: Settings, vms, workspace_id: str, *, hello_timeout: float = 10.0):
    """A GuestChannel to the workspace's oh-guest, held alone (per-workspace file lock)."""
    from hypervisor.microvm.guest_channel import GuestChannel

    locks = settings.run_dir / "workspace-locks"
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / f"{workspace_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        channel = GuestChannel.connect(str(vms.guest_port(workspace_id)), hello_timeout=hello_timeout)
        try:
            yield channel
        finally:
            channel.close()
    finally:
        os.close(fd)  # releases the lock


def guest_factory(settings: Settings, host):
    """workspace id -> a context manager giving an object with stat/read/write/listdir on its guest."""
    state: dict = {}

    def make(workspace_id: str):
        if "vms" not in state:
            state["vms"] = workspace_vms(settings, host)
        return _Files(conversation(settings, state["vms"], workspace_id))

    return make


class _Files:
    def __init__(self, conv):
        self.conv = conv

    def __enter__(self) -> "ChannelFiles":
        return ChannelFiles(self.conv.__enter__())

    def __exit__(self, *exc):
        return self.conv.__exit__(*exc)


def _kind(exc) -> GuestFileError:
    from hypervisor.microvm import guestd

    for cls, kind in ((guestd.GuestNotFound, "missing"), (guestd.GuestNoParent, "missing"),
                      (guestd.GuestNotADirectory, "notdir"), (guestd.GuestPermissionDenied, "denied"),
                      (guestd.GuestTooLarge, "toolarge")):
        if isinstance(exc, cls):
            return GuestFileError(kind, str(exc))
    return GuestFileError("failed", str(exc))


class ChannelFiles:
    """stat/read/write/listdir over one held channel, as the workspace user, beneath the workspace."""

    def __init__(self, channel):
        self.channel = channel

    def stat(self, path: str) -> dict | None:
        from hypervisor.microvm import guestd

        try:
            st = self.channel.stat(path, beneath=ROOT)
        except (guestd.GuestNotFound, guestd.GuestNoParent, guestd.GuestNotADirectory):
            return None
        except guestd.GuestError as exc:
            raise _kind(exc) from None
        kind = {"f": "file", "d": "dir"}.get(st.type, "other")
        return {"type": kind, "size": st.size, "mode": st.mode, "mtime": st.mtime}

    def read(self, path: str, limit: int) -> bytes:
        from hypervisor.microvm import guestd

        try:
            data = self.channel.get_file(path, beneath=ROOT).read()
        except guestd.GuestError as exc:
            raise _kind(exc) from None
        if len(data) > limit:
            raise GuestFileError("toolarge")
        return data

    def write(self, path: str, data: bytes) -> None:
        from hypervisor.microvm import guestd

        try:
            self.channel.put_file(path, data, beneath=ROOT, limit=len(data) + 1)
        except guestd.GuestError as exc:
            raise _kind(exc) from None

    def listdir(self, path: str) -> list[dict]:
        from hypervisor.microvm import guestd

        try:
            entries = self.channel.listdir(path, beneath=ROOT)
        except guestd.GuestError as exc:
            raise _kind(exc) from None
        out = []
        for e in entries:
            kind = e.target_type if e.type == "l" else e.type
            out.append({"name": e.name, "type": "dir" if kind == "d" else "file", "size": e.size,
                        "mode": e.mode, "mtime": e.mtime})
        return out
