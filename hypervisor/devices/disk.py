"""``<disk>``: a file-backed drive or CD-ROM."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..xmlbuilder import INT, XMLObject, child, flag, prop


class DiskBus(enum.StrEnum):
    """libvirt's bus names; the API calls SATA ``ata`` and virtio ``block``."""
    IDE = "ide"
    SATA = "sata"
    SCSI = "scsi"
    VIRTIO = "virtio"


class DiskMedia(enum.StrEnum):
    DISK = "disk"
    CDROM = "cdrom"


class DiskFormat(enum.StrEnum):
    RAW = "raw"
    QCOW2 = "qcow2"


class DiskSourceType(enum.StrEnum):
    FILE = "file"
    BLOCK = "block"


@dataclass
class DriveAddress(XMLObject):
    """``<address type='drive'>``: where an IDE, SATA or SCSI disk sits on its controller."""
    TAG = "address"
    type: str | None = prop("./@type")
    controller: int | None = prop("./@controller", INT)
    bus: int | None = prop("./@bus", INT)
    target: int | None = prop("./@target", INT)
    unit: int | None = prop("./@unit", INT)


@dataclass
class Disk(XMLObject):
    TAG = "disk"
    type: DiskSourceType | None = prop("./@type", DiskSourceType)
    device: DiskMedia | None = prop("./@device", DiskMedia)
    driver_name: str | None = prop("./driver/@name")
    format: DiskFormat | None = prop("./driver/@type", DiskFormat)
    cache: str | None = prop("./driver/@cache")
    discard: str | None = prop("./driver/@discard")
    source_file: str | None = prop("./source/@file")
    source_dev: str | None = prop("./source/@dev")
    target: str | None = prop("./target/@dev")
    bus: DiskBus | None = prop("./target/@bus", DiskBus)
    readonly: bool = flag("./readonly")
    shareable: bool = flag("./shareable")
    serial: str | None = prop("./serial")
    boot_order: int | None = prop("./boot/@order", INT)
    alias: str | None = prop("./alias/@name")
    address: DriveAddress | None = child("./address", DriveAddress)

    @property
    def source(self) -> str | None:
        return self.source_file or self.source_dev
