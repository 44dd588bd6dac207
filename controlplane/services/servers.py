"""The servers service: configuration, ownership, drive claims, lifecycle. The hypervisor does the VMs.

Servers live in the database; libvirt holds only the running ones, as transient domains built from the
stored configuration at every start. So the database is the truth about what exists and libvirt the
truth about what runs: the agent reconciles the two (guest power-off, a QEMU that died, a libvirtd
restart) and applies `persistent`.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid as uuidlib

from sqlalchemy import delete, select

from ..config import Settings
from ..db import Database
from ..errors import Busy, NotFound, Usage
from ..jobs import JobQueue
from ..models import Drive, DriveClaim, Resource, Server, utcnow
from . import serverconfig
from .accounts import is_uuid
from .drives import Drives
from .resources import Resources

log = logging.getLogger("openhosting.servers")

ACTIVE = "active"
STOPPED = "stopped"


class Claims:
    """Drive claims of running servers, for the drives service (claimed, busy rules)."""

    def claimed(self, s, drive_ids: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        if drive_ids:
            for c in s.scalars(select(DriveClaim).where(DriveClaim.drive.in_(drive_ids)).order_by(DriveClaim.id)):
                out.setdefault(c.drive, []).append(f"{c.server}:{c.device}")
        return out

    def running(self, s, drive_id: str) -> list[str]:
        return self.claimed(s, [drive_id]).get(drive_id, [])

    def release(self, s, drive_id: str) -> None:
        s.execute(delete(DriveClaim).where(DriveClaim.drive == drive_id))


class Servers:
    def __init__(self, db: Database, settings: Settings, drives: Drives, resources: Resources, substrate):
        self.db = db
        self.settings = settings
        self.drives = drives
        self.resources = resources
        self.substrate = substrate  # hypervisor.servers.Substrate: the VMs and networks

    # ---- lookups and rendering ----------------------------------------------------------------

    def _get(self, s, user: str, server_id: str) -> Server:
        server = s.get(Server, server_id.lower()) if is_uuid(server_id) else None
        if server is None or server.owner != user:
            raise NotFound(what="server")
        return server

    def _render(self, server: Server, live: bool = True) -> dict:
        cfg = server.config
        obj: dict = {"server": server.uuid, "user": server.owner, "status": server.status}
        for key in ("name", "cpu", "smp", "mem", "persistent"):
            obj[key] = int(cfg[key]) if key in ("cpu", "mem") else cfg[key]
        for dev, drive in serverconfig.devices(cfg).items():
            obj[dev] = drive
            if f"{dev}:media" in cfg:
                obj[f"{dev}:media"] = cfg[f"{dev}:media"]
        obj["boot"] = " ".join(serverconfig.boot_order(cfg))
        for index, nic in serverconfig.nics(cfg).items():
            for key in ("model", "dhcp", "vlan"):
                if key in nic:
                    obj[f"nic:{index}:{key}"] = nic[key]
            obj[f"nic:{index}:mac"] = nic.get("mac") or server.macs.get(str(index), "")
        for key in ("vnc", "password", "tags", "avoid:drives", "avoid:servers"):
            if cfg.get(key):
                obj[key] = cfg[key]
        for key in sorted(k for k in cfg if k.startswith("user:")):
            obj[key] = cfg[key]
        if server.status == ACTIVE and live:
            obj.update(self._live(server))
        return obj

    def _live(self, server: Server) -> dict:
        out: dict = {}
        if server.started_at:
            started = server.started_at
            if started.tzinfo is None:
                started = started.replace(tzinfo=dt.timezone.utc)
            out["started"] = int(started.timestamp())
        try:
            live = self.substrate.live(server.uuid)
        except Exception:  # the VM may vanish between the query and now; the agent reconciles
            log.exception("live stats of %s", server.uuid)
            return out
        if live is None:
            return out
        out.update(rx=live.rx, tx=live.tx)
        out["rx:packets"] = live.rx_packets
        out["tx:packets"] = live.tx_packets
        for dev, counters in sorted(live.block.items()):
            for key, value in counters.items():
                out[f"{dev}:{key}"] = value
        for index, mac in sorted(server.macs.items()):
            ip = live.addresses.get(mac)
            if ip:
                out[f"nic:{index}:dhcp"] = ip
                out[f"nic:{index}:dhcp:ip"] = ip
        if live.vnc_port:
            out["vnc:ip"] = self.settings.console_address
            out["vnc:port"] = live.vnc_port
        return out

    # ---- reads ----------------------------------------------------------------------------------

    def list(self, user: str) -> list[str]:
        with self.db.session() as s:
            return list(s.scalars(select(Server.uuid).where(Server.owner == user)
                                  .order_by(Server.created_at, Server.uuid)))

    def info_all(self, user: str) -> list[dict]:
        with self.db.session() as s:
            servers = list(s.scalars(select(Server).where(Server.owner == user)
                                     .order_by(Server.created_at, Server.uuid)))
        return [self._render(server) for server in servers]

    def info(self, user: str, server_id: str) -> dict:
        with self.db.session() as s:
            server = self._get(s, user, server_id)
        return self._render(server)

    # ---- configuration --------------------------------------------------------------------------

    def _check_references(self, s, user: str, config: dict[str, str]) -> None:
        """Every drive, IP and VLAN a configuration names must be the user's to use."""
        for dev, drive_id in serverconfig.devices(config).items():
            self.drives.visible(s, user, drive_id)
        for index, nic in serverconfig.nics(config).items():
            if nic.get("dhcp", "auto") != "auto":
                self._resource(s, user, "ip", nic["dhcp"], f"nic:{index}:dhcp")
            if "vlan" in nic:
                self._resource(s, user, "vlan", nic["vlan"], f"nic:{index}:vlan")

    def _resource(self, s, user, kind, name, key) -> Resource:
        try:
            return self.resources.get(s, user, kind, name)
        except NotFound:
            raise Usage("{key}: {name} is not one of your {kind} resources", key=key, name=name,
                        kind=kind) from None

    def create(self, user: str, fields: dict[str, str], start: bool = True) -> dict:
        config = serverconfig.apply({}, fields, creating=True)
        server_id = str(uuidlib.uuid4())
        with self.db.session() as s:
            self._check_references(s, user, config)
            macs = {str(i): nic.get("mac") or self.substrate.mac_for(server_id, i)
                    for i, nic in serverconfig.nics(config).items()}
            s.add(Server(uuid=server_id, owner=user, config=config, macs=macs, status=STOPPED,
                         desired=STOPPED))
        if start:
            try:
                self._start(user, server_id)
            except Exception:
                with self.db.session() as s:  # creation and start are one step for the client
                    s.execute(delete(DriveClaim).where(DriveClaim.server == server_id))
                    s.execute(delete(Server).where(Server.uuid == server_id))
                raise
        return self.info(user, server_id)

    def set(self, user: str, server_id: str, fields: dict[str, str]) -> dict:
        with self.db.session() as s:
            server = self._get(s, user, server_id)
            keys = {serverconfig.canonical_key(k) for k in fields}
            if server.status != STOPPED:
                live_only = {k for k in keys if k not in serverconfig.LIVE_KEYS and not k.startswith("user:")}
                if live_only:
                    raise Busy("server is {status}: only name, cpu, persistent, tags, user:* and "
                               "password can change until it is stopped (not: {keys})",
                               status=server.status, keys=" ".join(sorted(live_only)))
            config = serverconfig.apply(server.config, fields, creating=False)
            self._check_references(s, user, config)
            macs = dict(server.macs)
            for i, nic in serverconfig.nics(config).items():
                macs[str(i)] = nic.get("mac") or macs.get(str(i)) or self.substrate.mac_for(server.uuid, i)
            server.config, server.macs = config, {k: v for k, v in macs.items()
                                                  if int(k) in serverconfig.nics(config)}
        return self.info(user, server_id)

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self, user: str, server_id: str) -> None:
        self._start(user, server_id)

    def _start(self, user: str, server_id: str) -> None:
        with self.db.session() as s:
            server = self._get(s, user, server_id)
            if server.status == ACTIVE:
                raise Busy("server is already active")
            attach = self._claim(s, server)
            server.desired = ACTIVE
            config = dict(server.config)
            macs = dict(server.macs)
            networks = self._networks(s, server)
        try:
            self.substrate.start(server_id, config, attach, macs, networks)
        except Exception:
            with self.db.session() as s:
                s.execute(delete(DriveClaim).where(DriveClaim.server == server_id))
                server = s.get(Server, server_id)
                server.desired = STOPPED
            raise
        with self.db.session() as s:
            server = s.get(Server, server_id)
            server.status, server.started_at = ACTIVE, utcnow()

    def _claim(self, s, server: Server) -> dict[str, dict]:
        """Claim every drive of the server (409 when an exclusive one is in use); return the attach
        plan: device → {path, format, media, readonly}."""
        plan: dict[str, dict] = {}
        s.execute(delete(DriveClaim).where(DriveClaim.server == server.uuid))
        for dev, drive_id in serverconfig.devices(server.config).items():
            drive = s.scalar(select(Drive).where(Drive.uuid == drive_id).with_for_update())
            if drive is None:
                raise Usage("{dev}: drive {drive} no longer exists", dev=dev, drive=drive_id)
            if drive.format != "raw":
                raise Usage("{dev}: a gzip standard drive cannot be attached; image it into a drive first",
                            dev=dev)
            if JobQueue.active_for(s, "image", [drive.uuid]):
                raise Busy("{dev}: drive {drive} is being imaged", dev=dev, drive=drive.uuid)
            own = drive.owner == server.owner and not drive.standard
            readonly = not own or drive.claim_type == "shared"
            others = list(s.scalars(select(DriveClaim).where(DriveClaim.drive == drive.uuid)))
            if others and (not readonly or any(not c.readonly for c in others)):
                raise Busy("{dev}: drive {drive} is in use by server {other}", dev=dev, drive=drive.uuid,
                           other=others[0].server)
            s.add(DriveClaim(drive=drive.uuid, server=server.uuid, device=dev, readonly=readonly))
            media = server.config.get(f"{dev}:media") or drive.media or "disk"
            plan[dev] = {"path": str(self.drives.pool.path(drive.uuid)), "media": media,
                         "readonly": readonly or media == "cdrom", "shareable": readonly}
        s.flush()
        return plan

    def _networks(self, s, server: Server) -> dict[int, dict]:
        """Per NIC: which network it joins and, for a pinned address, which IP."""
        out: dict[int, dict] = {}
        for index, nic in serverconfig.nics(server.config).items():
            if "vlan" in nic:
                out[index] = {"vlan": nic["vlan"]}
            elif "dhcp" in nic:
                out[index] = {"public": True, "ip": None if nic["dhcp"] == "auto" else nic["dhcp"]}
            else:
                out[index] = {"public": True, "ip": None}
        return out

    def _require_active(self, user: str, server_id: str, desired: str | None = None) -> None:
        with self.db.session() as s:
            server = self._get(s, user, server_id)
            if server.status != ACTIVE:
                raise Busy("server is not active")
            if desired:
                server.desired = desired

    def stop(self, user: str, server_id: str) -> None:
        self._require_active(user, server_id, desired=STOPPED)
        self.substrate.poweroff(server_id)
        if self.stopped(server_id) == "destroyed":
            self.substrate.forget(server_id)

    def shutdown(self, user: str, server_id: str) -> None:
        self._require_active(user, server_id, desired=STOPPED)
        # The guest decides when to power off; the agent sees the domain end and calls stopped().
        self.substrate.acpi_shutdown(server_id)

    def reset(self, user: str, server_id: str) -> None:
        self._require_active(user, server_id)
        self.substrate.reset(server_id)

    def destroy(self, user: str, server_id: str) -> None:
        with self.db.session() as s:
            server = self._get(s, user, server_id)
            server.desired = "destroyed"
        self.substrate.forget(server_id)
        with self.db.session() as s:
            s.execute(delete(DriveClaim).where(DriveClaim.server == server_id))
            s.execute(delete(Server).where(Server.uuid == server_id))

    # ---- called by the agent --------------------------------------------------------------------

    def stopped(self, server_id: str) -> str:
        """The server's VM is gone: release its claims; destroy it unless persistent. Idempotent.

        Returns what became of it: "stopped", "destroyed" or "gone" (already absent).
        """
        with self.db.session() as s:
            server = s.get(Server, server_id)
            if server is None:
                return "gone"
            s.execute(delete(DriveClaim).where(DriveClaim.server == server_id))
            if server.config.get("persistent") != "true" or server.desired == "destroyed":
                s.delete(server)
                return "destroyed"
            server.status, server.desired, server.started_at = STOPPED, STOPPED, None
            return "stopped"

    def adopt(self, server_id: str) -> None:
        """A VM of ours runs although the database says stopped (started behind our back)."""
        with self.db.session() as s:
            server = s.get(Server, server_id)
            if server is not None and server.status != ACTIVE:
                server.status, server.desired, server.started_at = ACTIVE, ACTIVE, utcnow()

    def active_ids(self) -> set[str]:
        with self.db.session() as s:
            return set(s.scalars(select(Server.uuid).where(Server.status == ACTIVE)))

    def all_ids(self) -> set[str]:
        with self.db.session() as s:
            return set(s.scalars(select(Server.uuid)))
