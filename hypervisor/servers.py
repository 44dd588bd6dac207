"""What the servers service asks of the hypervisor, in its own words: start a server from its stored
configuration, cut or request power-off, reset, forget, read live counters, list what runs.

No policy about who may use what (the service decides that); this module turns a validated cloud-API
configuration plus an attach plan into a domain and the networks it needs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from . import defaults
from .domain import DomainConfig
from .errors import DomainNotFound, HypervisorError, InvalidState, NetworkNotFound, Unsupported
from .guest import ApiState, Guest
from .host import Host
from .networks import NetworkConfig, network_config
from .connection import LifecycleEvent
from .domain import Owner, domain_name, has_prefix

PUBLIC = "pub"


@dataclass
class Live:
    rx: int = 0
    tx: int = 0
    rx_packets: int = 0
    tx_packets: int = 0
    block: dict[str, dict[str, int]] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)   # mac -> leased address
    vnc_port: int | None = None


class ServerSubstrate:
    def __init__(self, host: Host, run_dir: Path, public_cidr: str, console_address: str = "127.0.0.1",
                 public_forward: str = ""):
        self.host = host
        self.public_forward = public_forward or None
        self.run_dir = Path(run_dir)
        self.public_cidr = public_cidr
        self.console_address = console_address
        self._net_lock = threading.Lock()
        self._host_facts: tuple[int, int, int] | None = None
        # domain uuid -> its owner kind ("server", "sandbox", ...): a domain's kind never changes,
        # and reading it costs an XMLDesc, which the reconciler would pay for every sandbox VM
        self._kinds: dict[str, str | None] = {}

    @staticmethod
    def mac_for(server_id: str, index: int) -> str:
        return defaults.mac_for(server_id, index)

    def console_log(self, server_id: str) -> Path:
        return self.run_dir / f"console-{server_id}.log"

    def _facts(self) -> tuple[int, int, int]:
        """The host's CPUs, their MHz and its memory in MiB."""
        if self._host_facts is None:
            info = self.host.info()
            self._host_facts = (info.cpus, info.cpu_mhz, info.memory_mib)
        return self._host_facts

    # ---- networks -------------------------------------------------------------------------------

    def public_network(self) -> str:
        """The isolated public network (DHCP on the upper half of the pool), started if needed."""
        config = network_config(self.host.installation_id, PUBLIC, self.public_cidr,
                                forward_mode=self.public_forward)
        return self._ensure(config)

    def vlan_network(self, vlan: str) -> str:
        """A private layer-2 network for one VLAN resource: no addresses, no DHCP, no forwarding."""
        installation = self.host.installation_id
        config = NetworkConfig(name=domain_name(installation, f"vlan-{vlan[:8]}"),
                               owner=Owner(installation=installation, kind="network", server=vlan))
        return self._ensure(config)

    def _ensure(self, config: NetworkConfig) -> str:
        with self._net_lock:
            net = self.host.find_network(config.name)
            if net is None:
                net = self.host.define_network(config)
            if not net.is_active():
                net.start()
        return config.name

    def remove_vlan(self, vlan: str) -> None:
        name = domain_name(self.host.installation_id, f"vlan-{vlan[:8]}")
        net = self.host.find_network(name)
        if net is not None:
            net.remove()

    # ---- lifecycle ------------------------------------------------------------------------------

    def build(self, server_id: str, config: dict[str, str], attach: dict[str, dict], macs: dict[str, str],
              networks: dict[int, dict]) -> DomainConfig:
        cpus, mhz, memory = self._facts()
        cpu, mem = int(config["cpu"]), int(config["mem"])
        if mem > memory:  # QEMU would fail to allocate it: say so rather than pass on its error
            raise Unsupported("mem {mem} MB is more than this host has ({memory} MB)", mem=mem, memory=memory)
        smp = defaults.vcpus_for(cpu, mhz, cpus) if config.get("smp", "auto") == "auto" else int(config["smp"])
        dom = defaults.new_domain(self.host.installation_id, server_id, memory_mib=mem, vcpus=smp,
                                  title=config.get("name"))
        dom.cputune = defaults.cpu_tune(cpu, mhz)
        for dev, plan in attach.items():
            dom.disks.append(defaults.drive(dev, plan["path"], media=plan["media"], readonly=plan["readonly"],
                                            shareable=plan["shareable"]))
        public = None
        for index, net in sorted(networks.items()):
            mac = macs[str(index)]
            if net.get("vlan"):
                name = self.vlan_network(net["vlan"])
            else:
                name = public = public or self.public_network()
                self._pin(name, mac, net.get("ip"))
            dom.interfaces.append(defaults.nic(index, model=config[f"nic:{index}:model"], mac=mac, network=name))
        if config.get("password"):
            dom.graphics.append(defaults.vnc(config["password"], listen=self.console_address))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        dom.serials.append(defaults.console(str(self.console_log(server_id))))
        boot = [d for d in config.get("boot", "").split() if d]
        if not boot:
            cdroms = [d for d, p in attach.items() if p["media"] == "cdrom"]
            boot = cdroms + [d for d in attach if d not in cdroms]
        defaults.apply_boot_order(dom, boot)
        return defaults.set_defaults(dom, self.host.accelerator.domain_type)

    def _pin(self, network: str, mac: str, ip: str | None) -> None:
        net = self.host.network(network)
        if ip:
            net.set_host(mac, ip)
        else:
            net.remove_host(mac)

    def start(self, server_id: str, config: dict[str, str], attach: dict[str, dict], macs: dict[str, str],
              networks: dict[int, dict]) -> None:
        """Define the server's domain afresh from its configuration and boot it."""
        dom = self.build(server_id, config, attach, macs, networks)
        self.host.launch(dom)

    def _guest(self, server_id: str) -> Guest | None:
        try:
            return self.host.find(server_id)
        except DomainNotFound:
            return None

    def poweroff(self, server_id: str) -> None:
        """Cut the power; nothing happens when it is not running."""
        guest = self._guest(server_id)
        if guest is not None and guest.is_active():
            try:
                guest.destroy()
            except (InvalidState, DomainNotFound):
                pass

    def acpi_shutdown(self, server_id: str) -> None:
        guest = self._guest(server_id)
        if guest is None:
            raise DomainNotFound(domain=server_id)
        guest.shutdown()

    def reset(self, server_id: str) -> None:
        guest = self._guest(server_id)
        if guest is None:
            raise DomainNotFound(domain=server_id)
        guest.reset()

    def forget(self, server_id: str) -> None:
        """Power off and undefine: no trace of the server left in libvirt."""
        guest = self._guest(server_id)
        if guest is not None:
            guest.remove()
        try:
            self.console_log(server_id).unlink()
        except FileNotFoundError:
            pass

    # ---- observation ----------------------------------------------------------------------------

    def states(self) -> dict[str, ApiState]:
        """Every domain of this installation: server uuid -> API state."""
        out: dict[str, ApiState] = {}
        kinds: dict[str, str | None] = {}
        for guest in self.host.guests():
            try:
                # Sandboxes and other throw-away VMs of this installation are not servers.
                if guest.uuid in self._kinds:
                    kind = self._kinds[guest.uuid]
                else:
                    owner = guest.config().owner
                    kind = None if owner is None else (owner.kind or "server")
                kinds[guest.uuid] = kind
                if kind != "server":
                    continue
                out[guest.uuid] = guest.state()
            except DomainNotFound:
                continue
        self._kinds = kinds       # forget the domains that are gone
        return out

    def concerns(self, event) -> bool:
        """Whether a libvirt event (`hypervisor.connection`) may have changed a server: not one of
        another installation's domains, nor of a domain `states` found to be no server (sandbox
        VMs start, pause, resume and stop several times a second under load)."""
        if isinstance(event, LifecycleEvent):
            if not has_prefix(event.name, self.host.installation_id):
                return False
            return self._kinds.get(event.uuid, "server") == "server"
        return True

    def live(self, server_id: str) -> Live | None:
        guest = self._guest(server_id)
        if guest is None or not guest.is_active():
            return None
        totals = guest.interface_totals()
        live = Live(rx=totals.rx, tx=totals.tx, rx_packets=totals.rx_packets, tx_packets=totals.tx_packets)
        for dev, c in guest.block_stats().items():
            live.block[dev] = {"read:bytes": c.read_bytes, "read:requests": c.read_requests,
                               "write:bytes": c.write_bytes, "write:requests": c.write_requests}
        vnc = guest.vnc_address()
        live.vnc_port = vnc.port if vnc else None
        for nic in guest.config().interfaces:
            if nic.network and nic.mac:
                try:
                    leases = self.host.network(nic.network).dhcp_leases(nic.mac)
                except (NetworkNotFound, HypervisorError):
                    continue
                if leases:
                    live.addresses[nic.mac] = leases[0].ip
        return live
