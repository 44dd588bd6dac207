"""Domain XML: golden files, libvirt's test driver, and build-then-parse round trips.

Golden files live in tests/golden/<name>.xml: written when missing, compared otherwise, rewritten
with OPENHOSTING_REGOLD=1 (virt-manager's tests/utils.py: diff_compare). Every generated domain is
also defined on libvirt's test driver (test:///default) and read back, so libvirt itself vouches
that the XML means what we think.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import uuid
from pathlib import Path

import libvirt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hypervisor as hv
from hypervisor.devices import DiskBus, DiskMedia, Graphics, SerialType
from hypervisor.domain import Machine, Owner
from hypervisor.errors import InvalidConfig
from hypervisor.slots import DeviceSlot

GOLDEN = Path(__file__).parent / "golden"
INSTALLATION = "golden"
SERVER = "0f8fad5b-d9cb-469f-a165-70867728950e"


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.xml"
    if os.environ.get("OPENHOSTING_REGOLD") == "1" or not path.exists():
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
        return
    expected = path.read_text()
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            f"golden/{name}.xml", "generated"))
        pytest.fail(f"generated XML differs from golden/{name}.xml "
                    f"(OPENHOSTING_REGOLD=1 rewrites it):\n{diff}")


@pytest.fixture(scope="module")
def test_conn():
    conn = libvirt.open("test:///default")
    yield conn
    conn.close()


def comparable(cfg: hv.DomainConfig) -> hv.DomainConfig:
    """What we set, minus what libvirt adds or reorders on its own: disks sorted, implicit
    controllers and video dropped, live-only interface targets cleared."""
    cfg = dataclasses.replace(cfg)
    cfg.disks = sorted(cfg.disks, key=lambda d: d.target)
    cfg.controllers = [c for c in cfg.controllers if c.type == "scsi"]
    cfg.interfaces = [dataclasses.replace(i, target_dev=None) for i in cfg.interfaces]
    cfg.videos = []
    if cfg.memballoon is None or cfg.memballoon == "virtio":
        cfg.memballoon = None
    return cfg


def define_and_parse(conn, cfg: hv.DomainConfig) -> hv.DomainConfig:
    dom = conn.defineXML(cfg.to_xml())
    try:
        return hv.DomainConfig.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))
    finally:
        dom.undefine()


# --- the configurations under test ------------------------------------------------------------

def minimal() -> hv.DomainConfig:
    return hv.set_defaults(hv.new_domain(INSTALLATION, SERVER, memory_mib=256), hv.DomainType.QEMU)


def full_q35() -> hv.DomainConfig:
    cfg = hv.new_domain(INSTALLATION, SERVER, memory_mib=512, vcpus=2, title="web server")
    cfg.os = hv.direct_kernel("/boot/vmlinuz", "/var/lib/openhosting/initrd.img")
    cfg.cputune = hv.cpu_tune(2000, 2600)
    cfg.disks = [
        hv.drive("ide:0:0", "/var/lib/openhosting/drives/iso", media="cdrom"),
        hv.drive("ide:1:1", "/var/lib/openhosting/drives/a"),
        hv.drive("ata:0:5", "/var/lib/openhosting/drives/b"),
        hv.drive("scsi:0:7", "/var/lib/openhosting/drives/c", format="qcow2", readonly=True),
        hv.drive("block:0", "/var/lib/openhosting/drives/d", shareable=True),
        hv.drive("ata:0:0", None, media="cdrom"),
    ]
    cfg.interfaces = [hv.nic(0, model="e1000", network="oh-golden-vlan1"),
                      hv.nic(1, model="rtl8139", mac="52:54:00:AA:BB:CC", network="oh-golden-vlan2"),
                      hv.nic(2, model="virtio")]
    cfg.graphics = [hv.vnc("s3cr3t")]
    cfg.serials = [hv.console("/var/lib/openhosting/run/console.log")]
    hv.set_defaults(cfg, hv.DomainType.QEMU)
    return hv.apply_boot_order(cfg, ["ide:0:0", "block:0", "nic:0"])


def pc_ide() -> hv.DomainConfig:
    cfg = hv.new_domain(INSTALLATION, SERVER, memory_mib=256)
    cfg.os = hv.domain.OS(machine=Machine.PC.value)
    cfg.disks = [hv.drive("ide:0:0", "/srv/cd.iso", media="cdrom"), hv.drive("ide:1:1", "/srv/disk.raw"),
                 hv.drive("ata:0:2", "/srv/sata.raw")]
    hv.set_defaults(cfg, hv.DomainType.QEMU)
    return hv.apply_boot_order(cfg, ["ide:0:0", "ide:1:1"])


def kvm_fixed_vnc_file_console() -> hv.DomainConfig:
    cfg = hv.new_domain(INSTALLATION, SERVER, memory_mib=1024, vcpus=4)
    cfg.graphics = [hv.vnc(None, listen="0.0.0.0", port=5977)]
    cfg.serials = [hv.console("/srv/ttyS0.log", pty=False)]
    cfg.interfaces = [hv.nic(0)]
    return hv.set_defaults(cfg, hv.DomainType.KVM)


CASES = {"minimal": minimal, "full-q35": full_q35, "pc-ide": pc_ide,
         "kvm-fixed-vnc-file-console": kvm_fixed_vnc_file_console}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_and_test_driver(name, test_conn):
    cfg = CASES[name]()
    text = cfg.to_xml()
    assert_golden(f"domain-{name}", text)
    assert hv.DomainConfig.from_xml(text) == cfg
    assert comparable(define_and_parse(test_conn, cfg)) == comparable(cfg)


def test_minimal_has_the_fixed_devices():
    cfg = minimal()
    assert cfg.type == "qemu" and cfg.os.machine == "q35" and cfg.on_poweroff == "destroy"
    assert cfg.uuid == SERVER and cfg.name == f"oh-{INSTALLATION}-{SERVER}"
    assert [c.target_name for c in cfg.channels] == ["org.qemu.guest_agent.0"]
    assert cfg.rngs[0].model == "virtio" and cfg.serials[0].type == SerialType.PTY
    assert cfg.interfaces == [] and "network" not in cfg.to_xml()


def test_ide_becomes_sata_on_q35_and_stays_ide_on_pc():
    q35 = {str(DeviceSlot.from_alias(d.alias)): d for d in full_q35().disks}
    assert q35["ide:0:0"].bus == DiskBus.SATA and q35["ide:0:0"].address.controller == 1
    assert q35["ide:1:1"].address.unit == 3 and q35["ata:0:5"].address.controller == 0
    assert q35["block:0"].bus == DiskBus.VIRTIO and q35["block:0"].address is None
    assert q35["scsi:0:7"].bus == DiskBus.SCSI
    pc = {str(DeviceSlot.from_alias(d.alias)): d for d in pc_ide().disks}
    assert pc["ide:1:1"].bus == DiskBus.IDE and (pc["ide:1:1"].address.bus, pc["ide:1:1"].address.unit) == (1, 1)
    assert pc["ide:0:0"].target == "hda" and pc["ata:0:2"].bus == DiskBus.SATA


@pytest.mark.parametrize("slot", ["ide:0:1", "ata:0:1"])
def test_readonly_disks_need_scsi_or_virtio(slot):
    cfg = hv.new_domain(INSTALLATION, SERVER, memory_mib=256)
    cfg.disks = [hv.drive(slot, "/srv/shared.raw", readonly=True)]
    with pytest.raises(InvalidConfig, match="read-only"):
        hv.set_defaults(cfg)
    cfg.disks = [hv.drive(slot, "/srv/shared.iso", media="cdrom")]
    hv.set_defaults(cfg)


def test_cdrom_is_readonly_and_may_be_empty():
    disks = {d.alias: d for d in full_q35().disks}
    assert disks["ua-ata-0-0"].device == DiskMedia.CDROM and disks["ua-ata-0-0"].source is None
    assert disks["ua-ata-0-0"].readonly and disks["ua-ide-0-0"].readonly


def test_cpu_tune_is_relative_to_host_mhz():
    tune = hv.cpu_tune(1300, 2600)
    assert tune.global_quota == 50_000 and tune.global_period == 100_000 and tune.shares == 1300
    assert hv.cpu_tune(5200, 2600).global_quota == 200_000
    assert hv.vcpus_for(5200, 2600, 8) == 2 and hv.vcpus_for(100, 2600, 8) == 1 and hv.vcpus_for(99999, 2600, 2) == 2


def test_mac_is_stable_and_local():
    assert hv.mac_for(SERVER, 0) == hv.mac_for(SERVER, 0) != hv.mac_for(SERVER, 1)
    assert hv.mac_for(SERVER, 0).startswith("52:54:00:")


@pytest.mark.parametrize("bad", ["ide:2:0", "ide:0:2", "ata:1:0", "ata:0:6", "scsi:0:8", "block:8",
                                 "usb:0", "ide:0", "block:x", ""])
def test_bad_device_slots(bad):
    with pytest.raises(InvalidConfig):
        DeviceSlot.parse(bad)


@pytest.mark.parametrize("good", ["ide:0:0", "ide:1:1", "ata:0:5", "scsi:0:7", "block:0", "block:7"])
def test_slot_alias_round_trip(good):
    assert str(DeviceSlot.from_alias(DeviceSlot.parse(good).alias)) == good


def test_validation():
    with pytest.raises(InvalidConfig, match="longer than 8"):
        hv.vnc("123456789")
    cfg = hv.new_domain(INSTALLATION, SERVER, memory_mib=256)
    cfg.interfaces = [hv.nic(0, network="default")]
    with pytest.raises(InvalidConfig, match="default"):
        hv.set_defaults(cfg)
    cfg = hv.new_domain(INSTALLATION, SERVER, memory_mib=256)
    cfg.disks = [hv.drive("block:0", "/a"), hv.drive("block:0", "/b")]
    with pytest.raises(InvalidConfig, match="distinct"):
        hv.set_defaults(cfg)
    cfg = hv.new_domain(INSTALLATION, SERVER, memory_mib=256)
    with pytest.raises(InvalidConfig, match="not configured"):
        hv.apply_boot_order(hv.set_defaults(cfg), ["block:1"])
    cfg = hv.set_defaults(hv.new_domain(INSTALLATION, SERVER, memory_mib=256))
    cfg.name = "someone-else"
    with pytest.raises(InvalidConfig, match="prefix"):
        cfg.validate()
    with pytest.raises(InvalidConfig):
        hv.domain_name("has-dash", SERVER)


def test_ownership_needs_prefix_and_metadata():
    xml = minimal().to_xml()
    assert hv.owned_by(xml, INSTALLATION)
    assert not hv.owned_by(xml, "other")
    assert not hv.owned_by(xml.replace(f"oh-{INSTALLATION}-", "oh-x-"), INSTALLATION)   # metadata only
    cfg = minimal()
    cfg.owner = Owner(installation="other")
    assert not hv.owned_by(cfg.to_xml(), INSTALLATION)                                  # prefix only
    assert not hv.owned_by("<domain type='qemu'><name>oh-golden-x</name></domain>", INSTALLATION)
    assert not hv.owned_by("not xml", INSTALLATION)


def test_owner_metadata_parses_with_and_without_namespace():
    plain = "<owner><installation>a</installation><server>s</server></owner>"
    assert Owner.from_metadata(plain) == Owner(installation="a", server="s")
    qualified = ('<owner xmlns="https://openhosting.org/xmlns/libvirt/1"><installation>a</installation>'
                 '</owner>')
    assert Owner.from_metadata(qualified).installation == "a"


def test_parses_libvirt_units_and_unknown_values():
    xml = ("<domain type='kvm'><name>x</name><memory unit='KiB'>1048576</memory><vcpu>2</vcpu>"
           "<devices><disk type='network' device='lun'><target dev='sda' bus='usb'/></disk>"
           "<graphics type='vnc' port='5901' autoport='no'/></devices></domain>")
    cfg = hv.DomainConfig.from_xml(xml)
    assert cfg.memory_mib == 1024 and cfg.vcpus == 2
    assert cfg.disks[0].bus == "usb" and cfg.disks[0].device == "lun"   # kept as text
    assert cfg.vnc() == Graphics(type="vnc", port=5901, autoport=False)


# --- property test: any configuration the vocabulary can express survives build-then-parse ---------

SLOTS = ["ide:0:0", "ide:0:1", "ide:1:0", "ide:1:1"] + [f"ata:0:{u}" for u in range(6)] + \
        [f"scsi:0:{u}" for u in range(8)] + [f"block:{n}" for n in range(8)]
_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_. ", min_size=1, max_size=20)


@st.composite
def configs(draw):
    server = str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)), version=4))
    cfg = hv.new_domain(INSTALLATION, server, memory_mib=draw(st.integers(16, 65536)),
                        vcpus=draw(st.integers(1, 64)), title=draw(st.none() | _text))
    if draw(st.booleans()):
        cfg.os = hv.direct_kernel("/k/" + draw(_text).strip().replace(" ", "_") or "/k/vmlinuz",
                                  draw(st.none() | st.just("/k/initrd")), draw(_text),
                                  draw(st.sampled_from(list(Machine))))
    slots = draw(st.lists(st.sampled_from(SLOTS), unique=True, max_size=6))
    cfg.disks = [hv.drive(s, draw(st.none() | st.just(f"/d/{i}")) if draw(st.booleans()) else f"/d/{i}",
                          media=draw(st.sampled_from(list(DiskMedia))),
                          format=draw(st.sampled_from(["raw", "qcow2"])),
                          readonly=draw(st.booleans()) and s.startswith(("scsi", "block")))
                 for i, s in enumerate(slots)]
    for d in cfg.disks:
        if d.source is None:
            d.device = DiskMedia.CDROM
            d.readonly = True
    n = draw(st.integers(0, 3))
    cfg.interfaces = [hv.nic(i, model=draw(st.sampled_from(list(hv.NicModel))),
                             network=draw(st.none() | st.just(f"oh-{INSTALLATION}-n{i}"))) for i in range(n)]
    if draw(st.booleans()):
        cfg.graphics = [hv.vnc(draw(st.none() | st.text("abcXYZ019", min_size=1, max_size=8)),
                               port=draw(st.none() | st.integers(5900, 65535)))]
    if draw(st.booleans()):
        cfg.cputune = hv.cpu_tune(draw(st.integers(100, 100000)), 2600)
    hv.set_defaults(cfg, draw(st.sampled_from(list(hv.DomainType))))
    boot = draw(st.lists(st.sampled_from(slots), unique=True)) if slots else []
    return hv.apply_boot_order(cfg, boot)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=configs())
def test_build_then_parse_round_trip(cfg, test_conn):
    assert hv.DomainConfig.from_xml(cfg.to_xml()) == cfg
    assert comparable(define_and_parse(test_conn, cfg)) == comparable(cfg)
