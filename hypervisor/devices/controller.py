"""``<controller>``: only those libvirt would not add by itself (a virtio-scsi HBA)."""

from __future__ import annotations

from dataclasses import dataclass

from ..xmlbuilder import INT, XMLObject, prop


@dataclass
class Controller(XMLObject):
    TAG = "controller"
    type: str | None = prop("./@type")
    index: int | None = prop("./@index", INT)
    model: str | None = prop("./@model")
