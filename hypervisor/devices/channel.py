"""``<channel>``: a virtio-serial port, used for the QEMU guest agent."""

from __future__ import annotations

from dataclasses import dataclass

from ..xmlbuilder import XMLObject, prop

GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"


@dataclass
class Channel(XMLObject):
    TAG = "channel"
    type: str | None = prop("./@type")                 # "unix": libvirt picks the socket path
    source_path: str | None = prop("./source/@path")
    target_type: str | None = prop("./target/@type")   # "virtio"
    target_name: str | None = prop("./target/@name")
    # Live XML only: "connected" once a process in the guest opened the port (qemu-ga is up).
    state: str | None = prop("./target/@state")
