"""The domain configuration: a typed object that is built into, and parsed back from, domain XML.

`DomainConfig` declares each element once (see `xmlbuilder`); it holds no policy. Fill what you know,
call `hypervisor.defaults.set_defaults()` for the rest, then `to_xml()`. `DomainConfig.from_xml()`
reads a definition back, including libvirt's live XML (unknown elements are ignored).

Ownership: every domain this project creates is named ``oh-<installation>-<suffix>`` and carries
``<metadata><openhosting:owner>`` with the installation id and the server uuid. Both must match for
an object to count as ours (`owned_by`); the prefix makes listing cheap, the metadata makes it certain.
"""

from __future__ import annotations

import enum
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from .devices import (Channel, Controller, Disk, DiskBus, DiskMedia, Graphics, Interface, InterfaceType, Rng,
                      Serial, Video, VNC_PASSWORD_MAX)
from .errors import InvalidConfig
from .xmlbuilder import INT, MEMORY_MIB, OPENHOSTING_NS, XMLObject, child, children, flag, prop

NAME_PREFIX = "oh-"
_INSTALLATION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]{0,39}$")


class DomainType(enum.StrEnum):
    KVM = "kvm"
    QEMU = "qemu"   # TCG: QEMU's own translator, no hardware virtualization


class Machine(enum.StrEnum):
    Q35 = "q35"
    PC = "pc"


class LifecycleAction(enum.StrEnum):
    DESTROY = "destroy"
    RESTART = "restart"
    PRESERVE = "preserve"


def is_q35(machine: str | None) -> bool:
    """True for ``q35`` and the versioned names libvirt writes back (``pc-q35-7.2``)."""
    return machine is None or "q35" in machine


# --- ownership ---------------------------------------------------------------------------------

def check_installation_id(installation_id: str) -> str:
    """Installation ids are 1-40 of [A-Za-z0-9_.] (no '-', so that name prefixes never overlap)."""
    if not _INSTALLATION_RE.match(installation_id or ""):
        raise InvalidConfig(reason=f"bad installation id {installation_id!r}: use 1-40 of [A-Za-z0-9_.]")
    return installation_id


def name_prefix(installation_id: str) -> str:
    return f"{NAME_PREFIX}{check_installation_id(installation_id)}-"


def domain_name(installation_id: str, suffix: str) -> str:
    """The libvirt name of one of our objects, e.g. ``oh-a1b2c3-<server uuid>``."""
    return name_prefix(installation_id) + suffix


def has_prefix(name: str, installation_id: str) -> bool:
    return name.startswith(name_prefix(installation_id))


@dataclass
class Owner(XMLObject):
    """``<openhosting:owner>`` inside ``<metadata>``: the installation and the object it stands for."""
    TAG = "openhosting:owner"
    installation: str | None = prop("./openhosting:installation")
    server: str | None = prop("./openhosting:server")
    kind: str | None = prop("./openhosting:kind")   # "server", "sandbox", "network", …

    @classmethod
    def from_metadata(cls, xml_text: str) -> "Owner":
        """Parse what ``virDomainGetMetadata(ELEMENT, OPENHOSTING_NS)`` returns: libvirt hands the
        element back without its namespace, so unqualified names are read as ours."""
        root = ET.fromstring(xml_text)
        for node in root.iter():
            if isinstance(node.tag, str) and not node.tag.startswith("{"):
                node.tag = "{%s}%s" % (OPENHOSTING_NS, node.tag)
        return cls.from_element(root)


def _owner_in(root: ET.Element) -> Owner | None:
    node = root.find("metadata/{%s}owner" % OPENHOSTING_NS)
    return None if node is None else Owner.from_element(node)


def owned_by(xml_text: str, installation_id: str) -> bool:
    """True when a domain or network XML names this installation by prefix AND by metadata."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError:
        return False
    name = root.findtext("name") or ""
    owner = _owner_in(root)
    return has_prefix(name, installation_id) and owner is not None and owner.installation == installation_id


# --- the domain ------------------------------------------------------------------------------

@dataclass
class OS(XMLObject):
    TAG = "os"
    type: str | None = prop("./type")
    arch: str | None = prop("./type/@arch")
    machine: str | None = prop("./type/@machine")
    # Direct kernel boot: QEMU loads these itself, no bootloader, no boot disk needed.
    kernel: str | None = prop("./kernel")
    initrd: str | None = prop("./initrd")
    cmdline: str | None = prop("./cmdline")


@dataclass
class CpuTune(XMLObject):
    """cgroup CPU controls. ``global_*`` bound the whole VM; ``shares`` weigh VMs against each other."""
    TAG = "cputune"
    shares: int | None = prop("./shares", INT)
    period: int | None = prop("./period", INT)
    quota: int | None = prop("./quota", INT)
    global_period: int | None = prop("./global_period", INT)
    global_quota: int | None = prop("./global_quota", INT)


@dataclass
class DomainConfig(XMLObject):
    TAG = "domain"
    type: DomainType | None = prop("./@type", DomainType)
    name: str | None = prop("./name")
    uuid: str | None = prop("./uuid")
    title: str | None = prop("./title")
    owner: Owner | None = child("./metadata/openhosting:owner", Owner)
    memory_mib: int | None = prop("./memory", MEMORY_MIB)
    vcpus: int | None = prop("./vcpu", INT)
    cputune: CpuTune | None = child("./cputune", CpuTune)
    os: OS | None = child("./os", OS)
    acpi: bool = flag("./features/acpi")
    apic: bool = flag("./features/apic")
    cpu_mode: str | None = prop("./cpu/@mode")
    clock_offset: str | None = prop("./clock/@offset")
    on_poweroff: LifecycleAction | None = prop("./on_poweroff", LifecycleAction)
    on_reboot: LifecycleAction | None = prop("./on_reboot", LifecycleAction)
    on_crash: LifecycleAction | None = prop("./on_crash", LifecycleAction)
    disks: list[Disk] = children("./devices/disk", Disk)
    controllers: list[Controller] = children("./devices/controller", Controller)
    interfaces: list[Interface] = children("./devices/interface", Interface)
    serials: list[Serial] = children("./devices/serial", Serial)
    channels: list[Channel] = children("./devices/channel", Channel)
    graphics: list[Graphics] = children("./devices/graphics", Graphics)
    videos: list[Video] = children("./devices/video", Video)
    rngs: list[Rng] = children("./devices/rng", Rng)
    memballoon: str | None = prop("./devices/memballoon/@model")

    def validate(self) -> "DomainConfig":
        """Refuse what libvirt would accept but we never mean; returns self."""
        for key in ("type", "name", "memory_mib", "vcpus", "os"):
            if getattr(self, key) in (None, ""):
                raise InvalidConfig(reason=f"{key} is required (call set_defaults)")
        if self.memory_mib <= 0 or self.vcpus <= 0:
            raise InvalidConfig(reason="memory and vcpus must be positive")
        if self.owner is None or not self.owner.installation:
            raise InvalidConfig(reason="every domain carries an owner (installation id)")
        if not has_prefix(self.name, self.owner.installation):
            raise InvalidConfig(reason=f"name {self.name!r} lacks the prefix of installation "
                                       f"{self.owner.installation!r}")
        for d in self.disks:
            if d.readonly and d.device != DiskMedia.CDROM and d.bus in (DiskBus.IDE, DiskBus.SATA):
                raise InvalidConfig(reason=f"disk {d.alias or d.target}: QEMU cannot make an IDE or SATA disk "
                                           f"read-only; use a scsi: or block: slot, or media cdrom")
        targets = [d.target for d in self.disks]
        if None in targets or len(set(targets)) != len(targets):
            raise InvalidConfig(reason=f"disk targets must be set and distinct: {targets}")
        for nic in self.interfaces:
            if nic.type == InterfaceType.NETWORK and not nic.network:
                raise InvalidConfig(reason="a network interface names its network")
            if nic.network == "default":
                raise InvalidConfig(reason="libvirt's 'default' network is not ours to use")
        for g in self.graphics:
            if g.passwd is not None and len(g.passwd) > VNC_PASSWORD_MAX:
                raise InvalidConfig(reason=f"VNC password longer than {VNC_PASSWORD_MAX} characters")
        orders = [d.boot_order for d in self.disks + self.interfaces if d.boot_order is not None]
        if len(set(orders)) != len(orders):
            raise InvalidConfig(reason=f"boot orders must be distinct: {orders}")
        return self

    def disk_by_alias(self, alias: str) -> Disk | None:
        return next((d for d in self.disks if d.alias == alias), None)

    def vnc(self) -> Graphics | None:
        return next((g for g in self.graphics if g.type == "vnc"), None)
