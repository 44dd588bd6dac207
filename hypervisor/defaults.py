"""Policy: every default of a domain we create, in one function apart from the XML mapping.

`set_defaults(config, accelerator)` fills what the caller left absent and places disks by their API
slot. The small constructors below (`drive`, `nic`, `vnc`, `console`, `cpu_tune`, …) are the
vocabulary the servers service speaks; `apply_boot_order` turns the API's ``boot`` list into per-device
``<boot order=N>``.
"""

from __future__ import annotations

import hashlib
import math

from .devices import (GUEST_AGENT_CHANNEL, Channel, Controller, Disk, DiskBus, DiskFormat, DiskMedia,
                      DiskSourceType, Graphics, Interface, InterfaceType, NicModel, Rng, Serial,
                      SerialType, VNC_PASSWORD_MAX)
from .domain import OS, CpuTune, DomainConfig, DomainType, LifecycleAction, Machine, Owner, domain_name
from .errors import InvalidConfig
from .slots import DeviceSlot, nic_alias, nic_index, place

#: Boots reliably under TCG (design.md); the i8042 options avoid a long probe of a missing keyboard.
DEFAULT_CMDLINE = ("console=ttyS0 quiet no_timer_check tsc=reliable i8042.noaux i8042.nokbd "
                   "i8042.nopnp i8042.dumbkbd cryptomgr.notests")
DEFAULT_VNC_LISTEN = "127.0.0.1"
CPU_PERIOD_US = 100_000


# --- vocabulary --------------------------------------------------------------------------------

def new_domain(installation_id: str, server_uuid: str, *, memory_mib: int, vcpus: int = 1,
               title: str | None = None, kind: str = "server") -> DomainConfig:
    """The skeleton every server domain starts from: name, uuid, ownership, size."""
    return DomainConfig(
        name=domain_name(installation_id, server_uuid), uuid=server_uuid, title=title,
        owner=Owner(installation=installation_id, server=server_uuid, kind=kind),
        memory_mib=memory_mib, vcpus=vcpus)


def drive(slot: str, source: str | None, *, media: DiskMedia | str = DiskMedia.DISK,
          format: DiskFormat | str = DiskFormat.RAW, readonly: bool = False,
          shareable: bool = False) -> Disk:
    """A drive at an API slot (``ide:0:0``); placement happens in `set_defaults`.

    A CD-ROM may have no source (an empty tray). CD-ROMs are always read-only.
    """
    media = DiskMedia(media)
    return Disk(device=media, source_file=source, format=DiskFormat(format),
                readonly=readonly or media == DiskMedia.CDROM, shareable=shareable,
                alias=DeviceSlot.parse(slot).alias)


def nic(index: int, *, model: NicModel | str = NicModel.VIRTIO, mac: str | None = None,
        network: str | None = None, bridge: str | None = None) -> Interface:
    """NIC ``nic:<index>``: on a libvirt network by name, a host bridge, or else user-mode networking."""
    kind = InterfaceType.NETWORK if network else InterfaceType.BRIDGE if bridge else InterfaceType.USER
    return Interface(type=kind, network=network, bridge=bridge, model=NicModel(model),
                     mac=mac.lower() if mac else None, alias=nic_alias(index))


def vnc(password: str | None = None, *, listen: str = DEFAULT_VNC_LISTEN, port: int | None = None) -> Graphics:
    """A VNC server on ``listen``; ``port`` None lets libvirt pick one (5900 and up)."""
    if password is not None and len(password) > VNC_PASSWORD_MAX:
        raise InvalidConfig(reason=f"VNC password longer than {VNC_PASSWORD_MAX} characters")
    return Graphics(type="vnc", listen=listen, passwd=password, port=port if port else -1,
                    autoport=port is None)


def console(log_file: str | None, *, pty: bool = True) -> Serial:
    """ttyS0 as a pty whose output virtlogd also writes to ``log_file`` (or a plain file)."""
    if pty:
        return Serial(type=SerialType.PTY, port=0, log_file=log_file,
                      log_append=False if log_file else None)
    return Serial(type=SerialType.FILE, port=0, source_path=log_file)


def direct_kernel(kernel: str, initrd: str | None = None, cmdline: str | None = DEFAULT_CMDLINE,
                  machine: Machine | str = Machine.Q35) -> OS:
    return OS(type="hvm", machine=str(machine), kernel=kernel, initrd=initrd, cmdline=cmdline)


def vcpus_for(cpu_mhz: int, host_mhz: int, host_cpus: int) -> int:
    """``smp auto``: enough whole cores to carry ``cpu_mhz``, at most the host's."""
    return max(1, min(host_cpus, math.ceil(cpu_mhz / max(host_mhz, 1))))


def cpu_tune(cpu_mhz: int, host_mhz: int) -> CpuTune:
    """The API's ``cpu`` (core MHz for the whole server) as cgroup controls.

    ``shares`` weigh servers against each other when the host is busy; ``global_quota`` caps the whole
    VM at ``cpu_mhz / host_mhz`` host cores even when it is idle. Under TCG a cap below one core slows
    the boot in proportion (a 50% cap doubles it).
    """
    if cpu_mhz <= 0 or host_mhz <= 0:
        raise InvalidConfig(reason=f"cpu must be positive (got {cpu_mhz} MHz on a {host_mhz} MHz host)")
    quota = max(1000, CPU_PERIOD_US * cpu_mhz // host_mhz)
    return CpuTune(shares=max(2, min(262144, cpu_mhz)), global_period=CPU_PERIOD_US, global_quota=quota)


def mac_for(server_uuid: str, index: int) -> str:
    """A stable locally administered MAC (QEMU's 52:54:00 prefix) per server and NIC index."""
    digest = hashlib.sha256(f"{server_uuid}:{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def apply_boot_order(config: DomainConfig, boot: list[str]) -> DomainConfig:
    """Give the devices named in ``boot`` (``ide:0:0 block:0 nic:0``) ``<boot order>`` 1, 2, …"""
    for dev in config.disks + config.interfaces:
        dev.boot_order = None
    for order, name in enumerate(boot, start=1):
        if name.startswith("nic:"):
            target = next((n for n in config.interfaces if n.alias == nic_alias(int(name[4:]))), None)
        else:
            target = config.disk_by_alias(DeviceSlot.parse(name).alias)
        if target is None:
            raise InvalidConfig(reason=f"boot device {name!r} is not configured")
        target.boot_order = order
    return config


# --- the one defaults function ---------------------------------------------------------------

def set_defaults(config: DomainConfig, domain_type: DomainType | str = DomainType.QEMU) -> DomainConfig:
    """Fill every absent setting of ``config`` in place and return it, validated.

    ``domain_type`` comes from the host (`Host.accelerator.domain_type`): kvm only where the CPU
    really has VT-x/AMD-V.
    """
    config.type = config.type or DomainType(domain_type)
    if config.uuid is None and config.owner is not None and config.owner.server:
        config.uuid = config.owner.server

    config.os = config.os or OS()
    config.os.type = config.os.type or "hvm"
    config.os.arch = config.os.arch or "x86_64"
    config.os.machine = config.os.machine or Machine.Q35.value
    config.acpi = True          # the ACPI power button is how `shutdown` reaches the guest
    config.apic = True
    if config.type == DomainType.KVM and config.cpu_mode is None:
        config.cpu_mode = "host-passthrough"
    config.clock_offset = config.clock_offset or "utc"
    # The guest powering itself off ends the domain; the agent decides what the server becomes.
    config.on_poweroff = config.on_poweroff or LifecycleAction.DESTROY
    config.on_reboot = config.on_reboot or LifecycleAction.RESTART
    config.on_crash = config.on_crash or LifecycleAction.DESTROY

    for disk in config.disks:
        disk.type = disk.type or (DiskSourceType.BLOCK if disk.source_dev else DiskSourceType.FILE)
        disk.device = disk.device or DiskMedia.DISK
        disk.driver_name = disk.driver_name or "qemu"
        disk.format = disk.format or DiskFormat.RAW
        if disk.device == DiskMedia.CDROM:
            disk.readonly = True
        slot = DeviceSlot.from_alias(disk.alias)
        if slot is not None:
            place(disk, slot, config.os.machine)
    if any(d.bus == DiskBus.SCSI for d in config.disks) and not any(
            c.type == "scsi" for c in config.controllers):
        config.controllers.append(Controller(type="scsi", index=0, model="virtio-scsi"))

    for position, iface in enumerate(config.interfaces):
        iface.type = iface.type or (InterfaceType.NETWORK if iface.network else InterfaceType.USER)
        iface.model = iface.model or NicModel.VIRTIO
        index = nic_index(iface.alias)
        if index is None:
            index = position
            iface.alias = nic_alias(index)
        if iface.mac is None:
            iface.mac = mac_for(config.uuid or config.name, index)

    if not config.serials:
        config.serials.append(console(None))
    if not any(c.target_name == GUEST_AGENT_CHANNEL for c in config.channels):
        config.channels.append(Channel(type="unix", target_type="virtio", target_name=GUEST_AGENT_CHANNEL))
    if not config.rngs:
        config.rngs.append(Rng(model="virtio", backend_model="random", backend="/dev/urandom"))
    for g in config.graphics:
        g.type = g.type or "vnc"
        g.listen = g.listen or DEFAULT_VNC_LISTEN
        if g.autoport is None:
            g.autoport = g.port in (None, -1)
        if g.autoport:
            g.port = -1
    return config.validate()
