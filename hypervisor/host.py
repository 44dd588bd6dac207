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
from .errors import (DomainNotFound, InvalidConfig, NetworkNotFound, NotOwned, translate)
from .guest import Guest
from .networks import Network, NetworkConfig
from .xmlbuilder import OPENHOSTING_NS

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class Host:
    def __init__(self, installation_id: str, connection: Connection | None = None, *,
                 uri: str = "qemu:///system", accelerator: Accelerator | None = None):
        self.installation_id = check_installation_id(installation_id)
        self.connection = connection or shared_connection(uri)
        self._accelerator = accelerator

    def _conn(self) -> libvirt.virConnect:
        return self.connection.get()

    def _call(self, operation: str, fn, *args, **context):
        try:
            return fn(*args)
        except libvirt.libvirtError as exc:
            raise translate(exc, operation=operation, **context) from exc

    # --- host ---------------------------------------------------------------------------------
    @property
    def accelerator(self) -> Accelerator:
        if self._accelerator is None:
            self._accelerator = detect_accelerator()
        return self._accelerator

    def info(self) -> HostInfo:
        return host_info(self.connection, self.accelerator)

    # --- ownership ----------------------------------------------------------------------------
    def owns_domain(self, dom: libvirt.virDomain) -> bool:
        if not has_prefix(dom.name(), self.installation_id):
            return False
        try:
            text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, OPENHOSTING_NS, 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN_METADATA, libvirt.VIR_ERR_NO_DOMAIN):
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
        dom = self._call("define", self._conn().defineXML, xml, domain=config.name)
        return Guest(dom)

    def launch(self, config: DomainConfig, *, paused: bool = False) -> Guest:
        """Define, then start; the usual way a server comes up."""
        guest = self.define(config)
        guest.start(paused=paused)
        return guest

    def create_transient(self, config: DomainConfig, *, paused: bool = False) -> Guest:
        """Start a domain that libvirt forgets once it stops (`createXML`)."""
        xml = self._check_config(config)
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        return Guest(self._call("create", self._conn().createXML, xml, flags, domain=config.name))

    def guest(self, key: str) -> Guest:
        """Our domain by libvirt name or uuid; DomainNotFound (NotOwned) otherwise."""
        guest = self.find(key)
        if guest is None:
            raise DomainNotFound(domain=key)
        return guest

    def find(self, key: str, *, include_foreign: bool = False) -> Guest | None:
        """Like `guest`, but None when absent. ``include_foreign`` is for define's collision check only."""
        conn = self._conn()
        lookup = conn.lookupByUUIDString if _UUID_RE.match(key) else conn.lookupByName
        try:
            dom = lookup(key)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise translate(exc, domain=key, operation="look up domain") from exc
        if include_foreign:
            return Guest(dom)
        if not self.owns_domain(dom):
            raise NotOwned(domain=key)
        return Guest(dom)

    def guests(self) -> list[Guest]:
        """Every domain of this installation, running or defined."""
        doms = self._call("list domains", self._conn().listAllDomains, 0)
        return [Guest(d) for d in doms if has_prefix(d.name(), self.installation_id) and self.owns_domain(d)]

    def restore(self, path: str, *, paused: bool = False) -> Guest:
        """Start a domain from a `Guest.save` file, if that file holds one of ours; running, or
        with its CPUs stopped when ``paused`` or when it was saved with ``paused``."""
        conn = self._conn()
        xml = self._call("read saved image", conn.saveImageGetXMLDesc, path, libvirt.VIR_DOMAIN_XML_SECURE)
        if not owned_by(xml, self.installation_id):
            raise NotOwned(domain=path)
        self._call("restore", conn.restoreFlags, path, None, libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else 0)
        name = ET.fromstring(xml).findtext("name")
        return self.guest(name)

    # --- networks -----------------------------------------------------------------------------
    def _owns_network(self, net: libvirt.virNetwork) -> bool:
        if not has_prefix(net.name(), self.installation_id):
            return False
        return owned_by(self._call("read network XML", net.XMLDesc, 0, network=net.name()),
                        self.installation_id)

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
        return Network(self._call("define network", self._conn().networkDefineXML, xml, network=config.name))

    def create_network(self, config: NetworkConfig) -> Network:
        """Start a transient network (gone when destroyed or when libvirtd forgets it)."""
        xml = self._check_network(config)
        return Network(self._call("create network", self._conn().networkCreateXML, xml, network=config.name))

    def network(self, name: str) -> Network:
        net = self.find_network(name)
        if net is None:
            raise NetworkNotFound(network=name)
        return net

    def find_network(self, name: str, *, include_foreign: bool = False) -> Network | None:
        try:
            net = self._conn().networkLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                return None
            raise translate(exc, network=name, operation="look up network") from exc
        if not include_foreign and not self._owns_network(net):
            raise NotOwned(domain=name)
        return Network(net)

    def networks(self) -> list[Network]:
        nets = self._call("list networks", self._conn().listAllNetworks, 0)
        return [Network(n) for n in nets if self._owns_network(n)]
