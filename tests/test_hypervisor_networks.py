"""Isolated networks: XML (golden, test driver), ownership, and the real thing on qemu:///system."""

from __future__ import annotations

import ipaddress
import os
import random

import libvirt
import pytest

import hypervisor as hv
from hypervisor.connection import Connection
from hypervisor.errors import InvalidConfig, NetworkNotFound, NotOwned
from hypervisor.networks import DhcpHost, NetworkConfig, add_host

from .test_hypervisor_xml import assert_golden

INSTALLATION = f"nt{os.getpid()}"


def golden_network() -> NetworkConfig:
    return hv.isolated_network("golden", "vlan-1", "10.99.0.0/24",
                               hosts={"52:54:00:AA:00:01": "10.99.0.10", "52:54:00:aa:00:02": "10.99.0.200"})


def test_golden_isolated_network():
    cfg = golden_network()
    text = cfg.to_xml()
    assert_golden("network-isolated", text)
    assert "<forward" not in text and cfg.isolated
    assert cfg.address == "10.99.0.1" and cfg.prefix == 24
    assert (cfg.dhcp_ranges[0].start, cfg.dhcp_ranges[0].end) == ("10.99.0.128", "10.99.0.254")
    assert cfg.dhcp_hosts[0] == DhcpHost(mac="52:54:00:aa:00:01", ip="10.99.0.10")
    assert NetworkConfig.from_xml(text) == cfg
    assert hv.owned_by(text, "golden") and not hv.owned_by(text, "other")


def test_bare_layer2_network_xml():
    cfg = NetworkConfig(name="oh-golden-vlan-2", owner=hv.Owner(installation="golden", kind="network"))
    assert_golden("network-layer2", cfg.to_xml())
    assert NetworkConfig.from_xml(cfg.to_xml()) == cfg


def test_network_on_the_test_driver():
    conn = Connection("test:///default")
    host = hv.Host(INSTALLATION, conn)
    cfg = hv.isolated_network(INSTALLATION, "t1", "10.98.0.0/24", hosts={"52:54:00:00:00:01": "10.98.0.5"})
    net = host.define_network(cfg)
    try:
        back = net.config()
        assert (back.name, back.owner, back.address, back.dhcp_ranges, back.dhcp_hosts) == \
            (cfg.name, cfg.owner, cfg.address, cfg.dhcp_ranges, cfg.dhcp_hosts)
        assert back.forward_mode is None
        assert [n.name for n in host.networks()] == [cfg.name]
        assert host.network(cfg.name).name == cfg.name
        # the test driver's own "default" network is not ours
        with pytest.raises(NotOwned):
            host.network("default")
        assert host.find_network(f"oh-{INSTALLATION}-missing") is None
        with pytest.raises(NetworkNotFound):
            host.network(f"oh-{INSTALLATION}-missing")
    finally:
        net.remove()
        conn.close()


def test_network_config_validation():
    with pytest.raises(InvalidConfig):
        hv.isolated_network("golden", "x", "10.0.0.0/30")
    with pytest.raises(InvalidConfig):
        hv.isolated_network("golden", "x", "10.0.0.0/24", forward_mode="nat")
    with pytest.raises(InvalidConfig):
        hv.isolated_network("golden", "x", "10.0.0.0/24", dhcp_start="10.0.1.5")
    cfg = hv.isolated_network("golden", "x", "10.0.0.0/24")
    with pytest.raises(InvalidConfig, match="outside"):
        add_host(cfg, "52:54:00:00:00:01", "10.0.1.5")
    with pytest.raises(InvalidConfig, match="gateway"):
        add_host(cfg, "52:54:00:00:00:01", "10.0.0.1")
    add_host(cfg, "52:54:00:00:00:01", "10.0.0.5")
    add_host(cfg, "52:54:00:00:00:01", "10.0.0.6")     # re-pinning a MAC replaces its entry
    assert [(h.mac, h.ip) for h in cfg.dhcp_hosts] == [("52:54:00:00:00:01", "10.0.0.6")]
    nat = hv.network_config("golden", "x", "10.0.0.0/24", forward_mode="nat")
    assert not nat.isolated and "<forward mode=\"nat\"" in nat.to_xml()


# --- qemu:///system: a real bridge and dnsmasq, nothing routed ----------------------------------

@pytest.fixture
def system_host():
    try:
        libvirt.open("qemu:///system").close()
    except libvirt.libvirtError as exc:
        pytest.skip(f"no libvirtd: {exc}")
    host = hv.Host(INSTALLATION, Connection("qemu:///system"))
    yield host
    for net in host.networks():
        net.remove()
    host.connection.close()


def free_subnet(host) -> str:
    """A /24 in 10.200-249.x.0 that no network on this libvirtd uses (others may run tests too)."""
    used = set()
    for net in host.connection.get().listAllNetworks(0):
        cfg = NetworkConfig.from_xml(net.XMLDesc(0))
        if cfg.address:
            used.add(cfg.subnet())
    rng = random.Random(os.getpid())
    while True:
        candidate = f"10.{rng.randint(200, 249)}.{rng.randint(0, 255)}.0/24"
        if not any(ipaddress.ip_network(candidate).overlaps(u) for u in used):
            return candidate


def test_isolated_network_on_libvirtd(system_host):
    subnet = free_subnet(system_host)
    cfg = hv.isolated_network(INSTALLATION, "live", subnet)
    net = system_host.define_network(cfg)
    net.start()
    assert net.is_active() and net.bridge().startswith("virbr")
    live = net.config()
    assert live.forward_mode is None and live.owner.installation == INSTALLATION
    base = subnet.rsplit(".", 1)[0]
    net.set_host("52:54:00:12:34:56", f"{base}.7")
    net.set_host("52:54:00:12:34:57", f"{base}.8")
    net.set_host("52:54:00:12:34:56", f"{base}.9")       # move a pin, live and in the definition
    hosts = {(h.mac, h.ip) for h in net.config().dhcp_hosts}
    assert hosts == {("52:54:00:12:34:56", f"{base}.9"), ("52:54:00:12:34:57", f"{base}.8")}
    persistent = NetworkConfig.from_xml(system_host.connection.get().networkLookupByName(cfg.name)
                                        .XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE))
    assert {(h.mac, h.ip) for h in persistent.dhcp_hosts} == hosts
    net.remove_host("52:54:00:12:34:57")
    assert [(h.mac, h.ip) for h in net.config().dhcp_hosts] == [("52:54:00:12:34:56", f"{base}.9")]
    assert net.dhcp_leases("52:54:00:12:34:56") == []
    net.remove()
    assert system_host.find_network(cfg.name) is None
