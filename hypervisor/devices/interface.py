"""``<interface>``: a NIC on a libvirt network, a host bridge, or QEMU's user-mode network."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..xmlbuilder import INT, XMLObject, prop


class InterfaceType(enum.StrEnum):
    NETWORK = "network"
    BRIDGE = "bridge"
    USER = "user"


class NicModel(enum.StrEnum):
    E1000 = "e1000"
    RTL8139 = "rtl8139"
    VIRTIO = "virtio"


@dataclass
class Interface(XMLObject):
    TAG = "interface"
    type: InterfaceType | None = prop("./@type", InterfaceType)
    mac: str | None = prop("./mac/@address")
    network: str | None = prop("./source/@network")
    bridge: str | None = prop("./source/@bridge")
    model: NicModel | None = prop("./model/@type", NicModel)
    # The host-side tap device; libvirt fills it in the live XML (interface counters use the MAC).
    target_dev: str | None = prop("./target/@dev")
    boot_order: int | None = prop("./boot/@order", INT)
    alias: str | None = prop("./alias/@name")
