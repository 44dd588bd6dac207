"""The libvirt side of a lightweight VM: its domain XML (booting an image, or a clone of a
template's saved XML) and its start as a transient domain under a memory bound.

A booted VM (template, cold run) has no NIC, a virtio disk and RNG, the guest agent's channel and one
virtio-serial port per guest program (`programs.PROGRAMS`), direct kernel boot, no USB, a VM
generation id, and under TCG a bounded translation cache. A clone keeps the template's devices at the
same addresses (its saved state expects them) with a new name, uuid, generation id, owner and disk.
"""

from __future__ import annotations

import uuid as uuidlib
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

from ..defaults import console, direct_kernel, drive, new_domain, set_defaults
from ..devices.channel import Channel
from ..domain import DomainType, LifecycleAction, owned_by
from ..errors import InvalidConfig, translate
from ..guest import Guest
from ..host import Host
from ..xmlbuilder import OPENHOSTING_NS
from . import qemu
from .image import KIND, SandboxImage

#: QEMU's TCG translation cache (MiB); QEMU's default (1 GiB) would let one VM's cache grow past
#: any sensible memory bound.
TB_CACHE_MIB = 128
#: QEMU's own memory beside the guest's RAM (devices, TCG cache, libraries), for the hard limit.
QEMU_OVERHEAD_MIB = 256
#: cgroup CPU weights: a clone being prepared in the background, and a VM serving a run.
PREPARE_CPU_SHARES = 64
RUN_CPU_SHARES = 1024


def boot_xml(host: Host, image: SandboxImage, vcpus: int, vm_uuid: str, disk: Path, ports: list[str], *,
             console_log: Path | None = None, disk_cache: str | None = None, ram: Path | None = None) -> str:
    """A sandbox domain booting the image, with one virtio-serial port per name in ``ports`` (after
    the guest agent's). Built by DomainConfig; what it cannot express yet (genid, TCG cache size, no
    USB, RAM in a file) is added to the tree."""
    cfg = new_domain(host.installation_id, vm_uuid, memory_mib=image.memory_mib, vcpus=vcpus,
                     title=f"sandbox {image.slug}", kind=KIND)
    cfg.os = direct_kernel(str(image.kernel), str(image.initramfs), image.cmdline)
    cfg.disks = [drive("block:0", str(disk), format="qcow2")]
    cfg.serials = [console(str(console_log) if console_log else None)]
    cfg.memballoon = "none"
    cfg.on_reboot = LifecycleAction.DESTROY     # a guest that reboots is finished
    set_defaults(cfg, host.accelerator.domain_type)
    for port in ports:
        cfg.channels.append(Channel(type="unix", target_type="virtio", target_name=port))
    if cfg.interfaces:
        raise InvalidConfig(reason="sandbox VMs have no network device")
    root = ET.fromstring(cfg.to_xml())
    ET.SubElement(root, "genid")
    if cfg.type == DomainType.QEMU:
        features = root.find("features")
        tcg = ET.SubElement(features, "tcg")
        ET.SubElement(tcg, "tb-cache", unit="MiB").text = str(TB_CACHE_MIB)
    devices = root.find("devices")
    devices.append(ET.Element("controller", type="usb", model="none"))
    if disk_cache:
        root.find("devices/disk/driver").set("cache", disk_cache)
    if ram is not None:
        qemu.set_commandline(root, qemu.ram_args(ram, image.memory_mib, shared=True))
    return ET.tostring(root, encoding="unicode")


def clone_xml(saved_xml: str, host: Host, *, name: str, vm_uuid: str, owner_id: str, disk: Path,
              args: list[str], kind: str = KIND, title: str | None = None, disk_cache: str | None = "unsafe",
              cpu_shares: int = PREPARE_CPU_SHARES) -> str:
    """A saved (migratable) domain XML as a new domain waiting for an incoming state: same devices at
    the same addresses; new name, uuid, generation id, owner (``owner_id``, ``kind``), disk, CPU
    weight and extra QEMU arguments (``args``, e.g. `qemu.ram_args` + ``-incoming defer``)."""
    root = ET.fromstring(saved_xml)
    root.find("name").text = name
    root.find("uuid").text = vm_uuid
    root.find("genid").text = str(uuidlib.uuid4())
    if title is not None and root.find("title") is not None:
        root.find("title").text = title
    owner = root.find("metadata/{%s}owner" % OPENHOSTING_NS)
    owner.find("{%s}installation" % OPENHOSTING_NS).text = host.installation_id
    owner.find("{%s}server" % OPENHOSTING_NS).text = owner_id
    kind_el = owner.find("{%s}kind" % OPENHOSTING_NS)
    if kind_el is None:
        kind_el = ET.SubElement(owner, "{%s}kind" % OPENHOSTING_NS)
    kind_el.text = kind
    disk_el = root.find("devices/disk")
    disk_el.find("source").set("file", str(disk))
    for backing in disk_el.findall("backingStore"):
        disk_el.remove(backing)
    if disk_cache:
        disk_el.find("driver").set("cache", disk_cache)   # "unsafe": a throw-away disk never waits for a flush
    for memtune in root.findall("memtune"):    # the live limit is set after the start (create)
        root.remove(memtune)
    for element in root.findall("devices/serial") + root.findall("devices/console"):
        for log_el in element.findall("log"):
            element.remove(log_el)
    for tune in root.findall("cputune"):
        root.remove(tune)
    # preparing a clone must not slow the runs going on: its QEMU gets a small CPU weight until
    # it joins the pool (the pool raises it)
    ET.SubElement(ET.SubElement(root, "cputune"), "shares").text = str(cpu_shares)
    qemu.set_commandline(root, args)
    return ET.tostring(root, encoding="unicode")


def hard_limit_mib(host: Host, memory_mib: int) -> int:
    """The cgroup bound of one VM's QEMU: guest RAM plus QEMU's own memory. Past it the kernel
    reclaims that QEMU's page cache, then kills that QEMU, never anything else."""
    tcg = host.accelerator.domain_type == DomainType.QEMU
    return memory_mib + QEMU_OVERHEAD_MIB + (TB_CACHE_MIB if tcg else 0)


def create(host: Host, xml: str, memory_mib: int, *, paused: bool) -> tuple[Guest, libvirt.virDomain]:
    """A transient domain from ``xml`` (Host.create_transient takes a DomainConfig, which has no
    ``<qemu:commandline>``), after the same ownership check, bounded to `hard_limit_mib`."""
    if not owned_by(xml, host.installation_id):
        raise InvalidConfig(reason="sandbox XML without this installation's owner")
    conn = host.connection.get()
    try:
        dom = conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
    except libvirt.libvirtError as exc:
        raise translate(exc, operation="create sandbox VM") from exc
    guest = Guest(dom, connection=host.connection)
    try:
        # <memtune> in the XML would make libvirt raise QEMU's RLIMIT_MEMLOCK to the same
        # value, which fails without CAP_SYS_RESOURCE (containers); the live cgroup limit
        # does not.
        dom.setMemoryParameters({"hard_limit": hard_limit_mib(host, memory_mib) * 1024},
                                libvirt.VIR_DOMAIN_AFFECT_LIVE)
        if not paused:
            dom.resume()
    except libvirt.libvirtError as exc:
        try:
            dom.destroy()
        except libvirt.libvirtError:
            pass
        raise translate(exc, domain=guest.name, operation="bound sandbox VM") from exc
    return guest, dom


def set_cpu_shares(dom: libvirt.virDomain, shares: int) -> None:
    try:
        dom.setSchedulerParameters({"cpu_shares": shares})
    except libvirt.libvirtError as exc:
        raise translate(exc, domain=dom.name(), operation="set CPU weight") from exc
