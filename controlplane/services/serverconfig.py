"""Server configuration keys: parse and validate a create/set body into the stored configuration.

The stored configuration uses the first of each historic spelling (`vnc`, `password`); the API
accepts both. Values are kept as the strings the API shows. No libvirt here: the servers service turns
a configuration into a hypervisor request.
"""

from __future__ import annotations

import ipaddress
import re

from ..errors import Usage
from .accounts import is_uuid

DEVICE_RE = re.compile(r"^(ide:[01]:[01]|ata:0:[0-5]|scsi:0:[0-7]|block:[0-7])$")
NIC_RE = re.compile(r"^nic:([0-3]):(model|dhcp|vlan|mac)$")
MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
USER_KEY_RE = re.compile(r"^user:[A-Za-z0-9_.:\-]{1,64}$")
NIC_MODELS = ("e1000", "rtl8139", "virtio")
MEDIA = ("disk", "cdrom")
ALIASES = {"vnc:ip": "vnc", "vnc:password": "password"}
# Keys that may change while the server runs (the rest need it stopped).
LIVE_KEYS = {"name", "cpu", "persistent", "tags", "password"}
SIMPLE_KEYS = {"name", "cpu", "smp", "mem", "persistent", "boot", "vnc", "password", "vnc:tls", "tags",
               "avoid:drives", "avoid:servers"}
MAX_MEM_MB = 1024 * 1024
MAX_SMP = 64


def _int(key: str, value: str, lo: int, hi: int) -> str:
    if not value.isdigit() or not lo <= int(value) <= hi:
        raise Usage("{key} must be a whole number from {lo} to {hi}", key=key, lo=lo, hi=hi)
    return str(int(value))


def canonical_key(key: str) -> str:
    return ALIASES.get(key, key)


def validate_key(key: str, value: str) -> str:
    """Return the normalized value of one configuration key, or raise Usage."""
    if key == "name":
        if not value.strip() or len(value) > 256:
            raise Usage("name must be 1 to 256 characters")
        return value
    if key == "cpu":
        return _int("cpu", value, 100, 1_000_000)
    if key == "smp":
        return "auto" if value == "auto" else _int("smp", value, 1, MAX_SMP)
    if key == "mem":
        return _int("mem", value, 32, MAX_MEM_MB)
    if key == "persistent":
        if value not in ("true", "false"):
            raise Usage("persistent must be 'true' or 'false'")
        return value
    if key == "boot":
        devices = value.split()
        if not devices or not all(DEVICE_RE.match(d) for d in devices):
            raise Usage("boot lists devices such as ide:0:0 or block:0")
        return " ".join(devices)
    if key == "vnc":
        if value not in ("auto", "off", ""):
            raise Usage("vnc (vnc:ip) must be 'auto'")
        return value or "off"
    if key == "password":
        if len(value) > 8 or not value.isprintable() or " " in value:
            raise Usage("password (vnc:password) is at most 8 printable characters")
        return value
    if key == "vnc:tls":
        if value not in ("off", "none", "false"):
            raise Usage("vnc:tls is not supported; the console listens on the host's loopback")
        return "off"
    if key == "tags":
        tags = value.split()
        if len(tags) > 64 or any(len(t) > 64 for t in tags):
            raise Usage("tags: at most 64 words of at most 64 characters")
        return " ".join(tags)
    if key in ("avoid:drives", "avoid:servers"):
        if not all(is_uuid(v) for v in value.split()):
            raise Usage("{key} lists UUIDs", key=key)
        return value
    if USER_KEY_RE.match(key):
        if len(value) > 1024:
            raise Usage("{key}: value longer than 1024 characters", key=key)
        return value
    if DEVICE_RE.match(key):
        if not is_uuid(value):
            raise Usage("{key} names a drive UUID", key=key)
        return value.lower()
    if key.endswith(":media") and DEVICE_RE.match(key[: -len(":media")]):
        if value not in MEDIA:
            raise Usage("{key} must be 'disk' or 'cdrom'", key=key)
        return value
    nic = NIC_RE.match(key)
    if nic:
        what = nic.group(2)
        if what == "model":
            if value not in NIC_MODELS:
                raise Usage("{key} must be one of {models}", key=key, models=", ".join(NIC_MODELS))
            return value
        if what == "dhcp":
            if value == "auto":
                return value
            try:
                return str(ipaddress.IPv4Address(value))
            except ValueError:
                raise Usage("{key} is 'auto' or one of your IP resources", key=key) from None
        if what == "vlan":
            if not is_uuid(value):
                raise Usage("{key} names a VLAN resource UUID", key=key)
            return value.lower()
        if what == "mac":
            if not MAC_RE.match(value.lower()):
                raise Usage("{key} must be a MAC address like 52:54:00:12:34:56", key=key)
            if int(value[:2], 16) & 1:
                raise Usage("{key} must be a unicast MAC address", key=key)
            return value.lower()
    raise Usage("unknown or read-only key '{key}'", key=key[:64])


def apply(config: dict[str, str], fields: dict[str, str], creating: bool) -> dict[str, str]:
    """Merge validated `fields` into `config`; an empty value removes a key. Returns the new config."""
    merged = dict(config)
    for raw_key, value in fields.items():
        key = canonical_key(raw_key)
        if value == "" and key not in ("name",):
            if creating:
                continue
            merged.pop(key, None)
            continue
        merged[key] = validate_key(key, value)
    if "name" not in merged:
        raise Usage("'name' is required")
    merged.setdefault("cpu", "1000")
    merged.setdefault("smp", "auto")
    merged.setdefault("mem", "512")
    merged.setdefault("persistent", "false")
    _check_whole(merged)
    return merged


def devices(config: dict[str, str]) -> dict[str, str]:
    """Block devices and the drives they name, in a stable order."""
    return {k: v for k, v in sorted(config.items()) if DEVICE_RE.match(k)}


def nics(config: dict[str, str]) -> dict[int, dict[str, str]]:
    out: dict[int, dict[str, str]] = {}
    for key, value in config.items():
        m = NIC_RE.match(key)
        if m:
            out.setdefault(int(m.group(1)), {})[m.group(2)] = value
    return dict(sorted(out.items()))


def boot_order(config: dict[str, str]) -> list[str]:
    """`boot` as given, else every disk device in order (cdroms first, as a fresh install wants)."""
    if config.get("boot"):
        return config["boot"].split()
    devs = list(devices(config))
    return sorted(devs, key=lambda d: config.get(f"{d}:media", "disk") != "cdrom")


def _check_whole(config: dict[str, str]) -> None:
    devs = devices(config)
    for key in config:
        if key.endswith(":media") and key[: -len(":media")] not in devs:
            raise Usage("{key} given without the device itself", key=key)
    for dev in boot_order(config) if config.get("boot") else []:
        if dev not in devs:
            raise Usage("boot device {dev} is not configured", dev=dev)
    if len(set(devs.values())) != len(devs):
        raise Usage("a drive can be attached only once per server")
    for index, nic in nics(config).items():
        if "model" not in nic:
            raise Usage("nic:{i}:model is required for nic:{i}", i=index)
        if "dhcp" in nic and "vlan" in nic:
            raise Usage("nic:{i} is either on the public network (dhcp) or on a VLAN, not both", i=index)
