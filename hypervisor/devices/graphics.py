"""``<graphics type='vnc'>`` and ``<video>``."""

from __future__ import annotations

from dataclasses import dataclass

from ..xmlbuilder import INT, YESNO, XMLObject, prop

VNC_PASSWORD_MAX = 8   # the RFB DES challenge uses the first 8 bytes; QEMU refuses longer ones


@dataclass
class Graphics(XMLObject):
    TAG = "graphics"
    type: str | None = prop("./@type")
    # With autoport, libvirt writes port='-1' in the config and the chosen port in the live XML.
    port: int | None = prop("./@port", INT)
    autoport: bool | None = prop("./@autoport", YESNO)
    listen: str | None = prop("./@listen")
    passwd: str | None = prop("./@passwd")
    keymap: str | None = prop("./@keymap")


@dataclass
class Video(XMLObject):
    TAG = "video"
    model: str | None = prop("./model/@type")
