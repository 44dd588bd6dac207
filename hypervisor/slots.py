"""Where an API device name (``ide:0:1``, ``ata:0:3``, ``scsi:0:2``, ``block:4``, ``nic:0``) lands.

The decision on IDE: we always use the ``q35`` machine (design.md: it is the one that boots reliably
under TCG), and q35 has no IDE controller. So on q35 the API's ``ide:B:U`` becomes a SATA disk on a
*second* AHCI controller (index 1, unit ``B*2+U``), which keeps ``ata:0:U`` on controller 0 free of
collisions. Guests see AHCI, which every OS of the last fifteen years drives, and SeaBIOS boots CD-ROMs
from it. A domain configured with ``machine pc`` gets real IDE (PIIX) for ``ide:B:U`` instead.

Every disk and NIC carries a libvirt user alias (``ua-ide-0-1``, ``ua-nic-0``) that survives in the
live XML, so counters and boot order find their way back to API names without a side table.
"""

from __future__ import annotations

from typing import NamedTuple

from .devices import Disk, DiskBus, DriveAddress
from .domain import is_q35
from .errors import InvalidConfig

# (kind, highest bus, highest unit); ata is SATA, block is virtio.
_LIMITS = {"ide": (1, 1), "ata": (0, 5), "sata": (0, 5), "scsi": (0, 7)}
_BLOCK_MAX = 7
ALIAS_PREFIX = "ua-"


class DeviceSlot(NamedTuple):
    kind: str          # "ide" | "ata" | "scsi" | "block"
    bus: int
    unit: int

    @classmethod
    def parse(cls, text: str) -> "DeviceSlot":
        parts = text.strip().split(":")
        try:
            if parts[0] == "block" and len(parts) == 2:
                n = int(parts[1])
                if 0 <= n <= _BLOCK_MAX:
                    return cls("block", 0, n)
            elif parts[0] in _LIMITS and len(parts) == 3:
                kind = "ata" if parts[0] == "sata" else parts[0]
                bus, unit = int(parts[1]), int(parts[2])
                max_bus, max_unit = _LIMITS[kind]
                if 0 <= bus <= max_bus and 0 <= unit <= max_unit:
                    return cls(kind, bus, unit)
        except ValueError:
            pass
        raise InvalidConfig(reason=f"bad device {text!r}: use ide:[0-1]:[0-1], ata:0:[0-5], "
                                   f"scsi:0:[0-7] or block:[0-7]")

    def __str__(self) -> str:
        return f"block:{self.unit}" if self.kind == "block" else f"{self.kind}:{self.bus}:{self.unit}"

    @property
    def alias(self) -> str:
        return ALIAS_PREFIX + str(self).replace(":", "-")

    @classmethod
    def from_alias(cls, alias: str | None) -> "DeviceSlot | None":
        if not alias or not alias.startswith(ALIAS_PREFIX) or alias.startswith(ALIAS_PREFIX + "nic-"):
            return None
        try:
            return cls.parse(alias[len(ALIAS_PREFIX):].replace("-", ":"))
        except InvalidConfig:
            return None


def nic_alias(index: int) -> str:
    return f"{ALIAS_PREFIX}nic-{index}"


def nic_index(alias: str | None) -> int | None:
    prefix = ALIAS_PREFIX + "nic-"
    if alias and alias.startswith(prefix) and alias[len(prefix):].isdigit():
        return int(alias[len(prefix):])
    return None


def _letters(n: int) -> str:
    return "abcdefghijklmnopqrstuvwxyz"[n]


def place(disk: Disk, slot: DeviceSlot, machine: str | None) -> Disk:
    """Set bus, target name and drive address of ``disk`` for ``slot`` on ``machine``.

    Target names only need to be distinct within a domain; the guest names its disks itself.
    sd-letters: a-f for ata:0:U, g-j for ide on q35, k-r for scsi.
    """
    disk.alias = slot.alias
    if slot.kind == "block":
        disk.bus, disk.target, disk.address = DiskBus.VIRTIO, "vd" + _letters(slot.unit), None
    elif slot.kind == "ata":
        disk.bus, disk.target = DiskBus.SATA, "sd" + _letters(slot.unit)
        disk.address = DriveAddress(type="drive", controller=0, bus=0, target=0, unit=slot.unit)
    elif slot.kind == "ide" and is_q35(machine):
        n = slot.bus * 2 + slot.unit
        disk.bus, disk.target = DiskBus.SATA, "sd" + _letters(6 + n)
        disk.address = DriveAddress(type="drive", controller=1, bus=0, target=0, unit=n)
    elif slot.kind == "ide":
        disk.bus, disk.target = DiskBus.IDE, "hd" + _letters(slot.bus * 2 + slot.unit)
        disk.address = DriveAddress(type="drive", controller=0, bus=slot.bus, target=0, unit=slot.unit)
    elif slot.kind == "scsi":
        disk.bus, disk.target = DiskBus.SCSI, "sd" + _letters(10 + slot.unit)
        disk.address = DriveAddress(type="drive", controller=0, bus=0, target=0, unit=slot.unit)
    return disk
