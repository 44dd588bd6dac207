"""`Host`: what one installation may do on one libvirt host, and nothing outside what it owns.

Every lookup checks ownership (name prefix, then the ``<metadata>`` owner element); an object of
another installation, or one made by hand, is reported as not found (`NotOwned`) and never touched.

Persistent definitions: servers are defined (`defineXML`) and then started (`create`), and the service
defines again before every start so that the database stays the source of truth. A persistent
definition keeps a stopped server visible to libvirt with the reason it stopped (shutdown, destroyed,
crashed), survives a libvirtd restart whatever the domain's state, and lets `start` be one call.
`create_transient` (`createXML`) exists for throw-away VMs (sandboxes, benchmarks): they vanish when
they stop.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import libvirt

from .connection import Accelerator, Connection, HostInfo, detect_accelerator, host_info, shared_connection
from .domain import DomainConfig, Owner, check_installation_id, has_prefix, owned_by
from .errors import (DomainNotFound, HypervisorError, InvalidConfig, NetworkNotFound, NotOwned,
                     is_connection_error, translate)
from .guest import Guest
from .networks import Network, NetworkConfig
from .xmlbuilder import OPENHOSTING_NS

_RETRIED = frozenset({"defineXML", "networkDefineXML", "listAllDomains", "listAllNetworks", "saveImageGetXMLDesc",
                      "lookupByName", "lookupByUUIDString", "networkLookupByName"})
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class Host:
    def __init__(self, installation_id: str, connection: Connection | None = None, *,
                 uri: str = "qemu:///system", accelerator: Accelerator | None = None):
        self.installation_id = check_installation_id(installation_id)
        self.connection = connection or shared_connection(uri)
        self._accelerator = accelerator

    def _conn(self) -> libvirt.virConnect:
        return self.connection.get()

    def _call(self, operation: str, method: str, *args, **context):
        """``virConnect.<method>(*args)`` on the live connection; after a lost connection, reads (and
        define, which is idempotent) retry once on a fresh one."""
        for attempt in (1, 2):
            try:
                return getattr(self._conn(), method)(*args)
            except libvirt.libvirtError as exc:
                if attempt == 1 and is_connection_error(exc):
                    self.connection.invalidate()
                    if method in _RETRIED:
                        continue
                raise translate(exc, operation=operation, **context) from exc

    # --- host ---------------------------------------------------------------------------------
    @property
    def accelerator(self) -> Accelerator:
        if self._accelerator is None:
            self._accelerator = detect_accelerator()
        return self._accelerator

    def info(self) -> HostInfo:
        return host_info(self.connection, self.accelerator)

    def qemu_user(self) -> tuple[int, int] | None:
        """The uid and gid libvirt runs QEMU as for this host's domain type (the DAC driver's base
        label in the capabilities), or None when libvirt does not say."""
        try:
            caps = ET.fromstring(self._call("read capabilities", "getCapabilities"))
        except (HypervisorError, ET.ParseError):
            return None
        domain_type = str(self.accelerator.domain_type)
        for model in caps.findall("host/secmodel"):
            if model.findtext("model") != "dac":
                continue
            labels = {label.get("type"): label.text or "" for label in model.findall("baselabel")}
            label = labels.get(domain_type) or next(iter(labels.values()), "")
            match = re.fullmatch(r"\+?(\d+):\+?(\d+)", label.strip())
            if match:
                return int(match.group(1)), int(match.group(2))
        return None

    # --- ownership ----------------------------------------------------------------------------
    def owns_domain(self, dom: libvirt.virDomain) -> bool:
        """Name prefix and metadata owner both ours. Raises DomainNotFound if it vanished meanwhile."""
        if not has_prefix(dom.name(), self.installation_id):
            return False
        try:
            text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, OPENHOSTING_NS, 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                return False
            raise translate(exc, domain=dom.name(), operation="read ownership") from exc
        return Owner.from_metadata(text).installation == self.installation_id

    def _check_config(self, config: DomainConfig) -> str:
        config.validate()
        if config.owner.installation != self.installation_id:
            raise InvalidConfig(reason=f"domain {config.name} belongs to installation "
                                       f"{config.owner.installation!r}, not {self.installation_id!r}")
        return config.to_xml()

    # --- domains ------------------------------------------------------------------------------
    def define(self, config: DomainConfig) -> Guest:
        """Define (or redefine) a persistent domain from ``config``; it stays stopped."""
        xml = self._check_config(config)
        if config.uuid:
            existing = self.find(config.uuid, include_foreign=True)
            if existing is not None and not self.owns_domain(existing._dom):
                raise NotOwned(domain=config.uuid)
        dom = self._call("define", "defineXML", xml, domain=config.name)
        return Guest(dom, connection=self.connection)

    def launch(self, config: DomainConfig, *, paused: bool = False) -> Guest:
        """Define, then start; the usual way a server comes up."""
        guest = self.define(config)
        guest.start(paused=paused)
        return guest

    def create_transient(self, config: DomainConfig, *, paused: bool = False) -> Guest:
        """Start a domain that libvirt forgets once it stops (`createXML`)."""
        xml = self._check_config(config)
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        return Guest(self._call("create", "createXML", xml, flags, domain=config.name), connection=self.connection)

    def guest(self, key: str) -> Guest:
        """Our domain by libvirt name or uuid; DomainNotFound (NotOwned) otherwise."""
        guest = self.find(key)
        if guest is None:
            raise DomainNotFound(domain=key)
        return guest

    def find(self, key: str, *, include_foreign: bool = False) -> Guest | None:
        """Like `guest`, but None when absent. ``include_foreign`` is for define's collision check only."""
        try:
            dom = self._call("look up domain", "lookupByUUIDString" if _UUID_RE.match(key) else "lookupByName",
                             key, domain=key)
            if not include_foreign and not self.owns_domain(dom):
                raise NotOwned(domain=key)
        except NotOwned:
            raise
        except DomainNotFound:     # absent, or gone between the lookup and the ownership check
            return None
        return Guest(dom, connection=self.connection)

    def guests(self) -> list[Guest]:
        """Every domain of this installation, running or defined."""
        guests = []
        for dom in self._call("list domains", "listAllDomains", 0):
            try:
                if self.owns_domain(dom):
                    guests.append(Guest(dom, connection=self.connection))
            except DomainNotFound:
                continue    # a transient domain that ended while we listed
        return guests

    def restore(self, path: str, *, paused: bool = False) -> Guest:
        """Start a domain from a `Guest.save` file, if that file holds one of ours; running, or
        with its CPUs stopped when ``paused`` or when it was saved with ``paused``."""
        xml = self._call("read saved image", "saveImageGetXMLDesc", path, libvirt.VIR_DOMAIN_XML_SECURE)
        if not owned_by(xml, self.installation_id):
            raise NotOwned(domain=path)
        self._call("restore", "restoreFlags", path, None, libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else 0)
        name = ET.fromstring(xml).findtext("name")
        return self.guest(name)

    # --- networks -----------------------------------------------------------------------------
    def _owns_network(self, net: libvirt.virNetwork) -> bool:
        if not has_prefix(net.name(), self.installation_id):
            return False
        try:
            return owned_by(net.XMLDesc(0), self.installation_id)
        except libvirt.libvirtError as exc:
            raise translate(exc, network=net.name(), operation="read network XML") from exc

    def _check_network(self, config: NetworkConfig) -> str:
        if config.owner is None or config.owner.installation != self.installation_id \
                or not has_prefix(config.name or "", self.installation_id):
            raise InvalidConfig(reason=f"network {config.name} is not marked as this installation's")
        return config.to_xml()

    def define_network(self, config: NetworkConfig) -> Network:
        """Define a persistent network (stopped; call `Network.start`)."""
        xml = self._check_network(config)
        existing = self.find_network(config.name, include_foreign=True)
        if existing is not None and not self._owns_network(existing._net):
            raise NotOwned(domain=config.name)
        return Network(self._call("define network", "networkDefineXML", xml, network=config.name),
                       connection=self.connection)

    def create_network(self, config: NetworkConfig) -> Network:
        """Start a transient network (gone when destroyed or when libvirtd forgets it)."""
        xml = self._check_network(config)
        return Network(self._call("create network", "networkCreateXML", xml, network=config.name),
                       connection=self.connection)

    def network(self, name: str) -> Network:
        net = self.find_network(name)
        if net is None:
            raise NetworkNotFound(network=name)
        return net

    def find_network(self, name: str, *, include_foreign: bool = False) -> Network | None:
        try:
            net = self._call("look up network", "networkLookupByName", name, network=name)
        except NetworkNotFound:
            return None
        if not include_foreign and not self._owns_network(net):
            raise NotOwned(domain=name)
        return Network(net, connection=self.connection)

    def networks(self) -> list[Network]:
        networks = []
        for net in self._call("list networks", "listAllNetworks", 0):
            try:
                if self._owns_network(net):
                    networks.append(Network(net, connection=self.connection))
            except NetworkNotFound:
                continue
        return networks
