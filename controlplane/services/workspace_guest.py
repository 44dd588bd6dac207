"""The guest side of a workspace, as the workspaces services use it: VMs (hypervisor/microvm/workspace.py)
and the guest channel's file calls (hypervisor/microvm/guestd.py), adapted to the small interfaces
that workspace_files.py and workspace_runner.py need."""

from __future__ import annotations

from pathlib import Path

from ..config import Settings


def work_root(settings: Settings) -> Path:
    return settings.state_dir / "workspace-vms"


def workspace_vms(settings: Settings, host):
    from hypervisor.microvm.workspace import WorkspaceVMs

    root = work_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o711)  # QEMU (another user) reaches the disks below
    return WorkspaceVMs(host, root)


def guest_factory(settings: Settings, host):
    """workspace id -> an object with stat/read/write/listdir on that workspace's guest."""
    state: dict = {}

    def make(workspace_id: str):
        if "vms" not in state:
            state["vms"] = workspace_vms(settings, host)
        return ChannelFiles(state["vms"].guest_port(workspace_id))

    return make


class ChannelFiles:
    """stat/read/write/listdir over the guest channel, as the workspace's user."""

    def __init__(self, socket_path: Path):
        from hypervisor.microvm.guestd import GuestChannel

        self.channel = GuestChannel(socket_path)

    def stat(self, path: str) -> dict | None:
        raise NotImplementedError

    def read(self, path: str, limit: int) -> bytes:
        raise NotImplementedError

    def write(self, path: str, data: bytes) -> None:
        raise NotImplementedError

    def listdir(self, path: str) -> list[dict]:
        raise NotImplementedError
