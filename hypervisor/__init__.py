"""The hypervisor layer: the only code in openhosting that imports libvirt.

Entry points (see docs/hypervisor.md):
- `Host(installation_id)`: define/launch/find/list/restore this installation's domains and networks.
- `Guest`: verbs on one domain (start, destroy, shutdown, reset, suspend, resume, save, undefine),
  `state()` through `LIBVIRT_STATE`, counters, VNC address, guest agent.
- `DomainConfig` + `defaults.*` + `set_defaults()`: the typed configuration, built into domain XML.
- `networks.isolated_network()` / `Network`: isolated DHCP networks.
- `register_event_loop()`, `Connection`, `shared_connection()`: the process's libvirt connection.
- `errors`: one exception family, `HypervisorError`.
"""

from .connection import (Accelerator, Connection, ConnectionEvent, HostInfo, LifecycleEvent, detect_accelerator,
                         host_info, register_event_loop, shared_connection)
from .defaults import (apply_boot_order, console, cpu_tune, direct_kernel, drive, mac_for, new_domain, nic,
                       set_defaults, vcpus_for, vnc)
from .devices import DiskBus, DiskFormat, DiskMedia, NicModel
from .domain import DomainConfig, DomainType, Machine, Owner, domain_name, has_prefix, owned_by
from .errors import HypervisorError
from .guest import LIBVIRT_STATE, ApiState, BlockCounters, ExecResult, Guest, InterfaceCounters, VncAddress, api_state
from .host import Host
from .networks import Lease, Network, NetworkConfig, isolated_network, network_config
from .slots import DeviceSlot

__all__ = [
    "Accelerator", "Connection", "ConnectionEvent", "HostInfo", "LifecycleEvent", "detect_accelerator",
    "host_info", "register_event_loop", "shared_connection", "apply_boot_order", "console", "cpu_tune",
    "direct_kernel", "drive", "mac_for", "new_domain", "nic", "set_defaults", "vcpus_for", "vnc", "DiskBus",
    "DiskFormat", "DiskMedia", "NicModel", "DomainConfig", "DomainType", "Machine", "Owner", "domain_name",
    "has_prefix", "owned_by", "HypervisorError", "LIBVIRT_STATE", "ApiState", "BlockCounters", "ExecResult",
    "Guest", "InterfaceCounters", "VncAddress", "api_state", "Host", "Lease", "Network", "NetworkConfig",
    "isolated_network", "network_config", "DeviceSlot",
]
