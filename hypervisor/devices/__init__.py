"""One small module per libvirt device kind (virtinst's layout)."""

from .channel import GUEST_AGENT_CHANNEL, Channel
from .controller import Controller
from .disk import Disk, DiskBus, DiskFormat, DiskMedia, DiskSourceType, DriveAddress
from .graphics import VNC_PASSWORD_MAX, Graphics, Video
from .interface import Interface, InterfaceType, NicModel
from .rng import Rng
from .serial import Serial, SerialType

__all__ = [
    "GUEST_AGENT_CHANNEL", "Channel", "Controller", "Disk", "DiskBus", "DiskFormat", "DiskMedia",
    "DiskSourceType", "DriveAddress", "VNC_PASSWORD_MAX", "Graphics", "Video", "Interface",
    "InterfaceType", "NicModel", "Rng", "Serial", "SerialType",
]
