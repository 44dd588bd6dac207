"""IP and VLAN resources a user holds; IPs come from the operator's pool (OPENHOSTING_IP_POOL)."""

from __future__ import annotations

import ipaddress
import re
import uuid as uuidlib

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..db import Database
from ..errors import Busy, Full, NotFound, Usage
from ..models import Resource, Server

TYPES = ("ip", "vlan")
_USER_KEY = re.compile(r"^user:[A-Za-z0-9_.:\-]{1,64}$")


class PublicNetwork:
    """The addressing plan of the public network, derived from one CIDR."""

    def __init__(self, cidr: str):
        try:
            self.net = ipaddress.IPv4Network(cidr)
        except ValueError:
            raise ValueError(f"OPENHOSTING_IP_POOL: {cidr!r} is not an IPv4 network") from None
        if self.net.num_addresses < 16:
            raise ValueError("OPENHOSTING_IP_POOL: use a /28 or larger")
        hosts = list(self.net.hosts())
        self.gateway = str(hosts[0])
        half = len(hosts) // 2
        self.static = [str(h) for h in hosts[1:half]]
        self.dhcp_start, self.dhcp_end = str(hosts[half]), str(hosts[-1])

    @property
    def netmask(self) -> str:
        return str(self.net.netmask)

    @property
    def prefix(self) -> int:
        return self.net.prefixlen


class Resources:
    def __init__(self, db: Database, public: PublicNetwork):
        self.db = db
        self.public = public

    def _check_type(self, kind: str) -> None:
        if kind not in TYPES:
            raise NotFound("no resource type '{kind}'", kind=kind[:32])

    def _get(self, s, user: str, kind: str, name: str) -> Resource:
        self._check_type(kind)
        res = s.scalar(select(Resource).where(Resource.type == kind, Resource.resource == name.lower()))
        if res is None or res.owner != user:
            raise NotFound(what="resource")
        return res

    def get(self, s, user: str, kind: str, name: str) -> Resource:
        return self._get(s, user, kind, name)

    def render(self, res: Resource) -> dict:
        obj: dict = {"type": res.type, "resource": res.resource, "user": res.owner}
        if res.name:
            obj["name"] = res.name
        if res.type == "ip":
            obj.update(netmask=self.public.netmask, gateway=self.public.gateway, nameserver=self.public.gateway)
        if res.tags:
            obj["tags"] = " ".join(res.tags)
        obj.update(sorted(res.meta.items()))
        return obj

    def _apply(self, res: Resource, fields: dict[str, str]) -> None:
        meta = dict(res.meta)
        for key, value in fields.items():
            if key == "name":
                if len(value) > 256:
                    raise Usage("name is at most 256 characters")
                res.name = value
            elif key == "tags":
                res.tags = value.split()
            elif _USER_KEY.match(key):
                if value:
                    meta[key] = value[:1024]
                else:
                    meta.pop(key, None)
            else:
                raise Usage("unknown or read-only key '{key}'", key=key[:64])
        res.meta = meta

    def list(self, user: str, kind: str | None = None) -> list[Resource]:
        if kind:
            self._check_type(kind)
        with self.db.session() as s:
            q = select(Resource).where(Resource.owner == user)
            if kind:
                q = q.where(Resource.type == kind)
            return list(s.scalars(q.order_by(Resource.type, Resource.id)))

    def info(self, user: str, kind: str, name: str) -> dict:
        with self.db.session() as s:
            return self.render(self._get(s, user, kind, name))

    def create(self, user: str, kind: str, fields: dict[str, str]) -> dict:
        self._check_type(kind)
        for _ in range(3):  # two users racing for the same free address: retry with the next one
            try:
                with self.db.session() as s:
                    res = Resource(type=kind, owner=user, resource=self._next(s, kind), tags=[], meta={})
                    self._apply(res, fields)
                    s.add(res)
                    s.flush()
                    return self.render(res)
            except IntegrityError:
                continue
        raise Busy("could not allocate an address; try again")

    def _next(self, s, kind: str) -> str:
        if kind == "vlan":
            return str(uuidlib.uuid4())
        taken = set(s.scalars(select(Resource.resource).where(Resource.type == "ip")))
        free = next((ip for ip in self.public.static if ip not in taken), None)
        if free is None:
            raise Full("the IP pool is exhausted")
        return free

    def set(self, user: str, kind: str, name: str, fields: dict[str, str]) -> dict:
        with self.db.session() as s:
            res = self._get(s, user, kind, name)
            self._apply(res, fields)
            return self.render(res)

    def destroy(self, user: str, kind: str, name: str) -> None:
        with self.db.session() as s:
            res = self._get(s, user, kind, name)
            field = "dhcp" if kind == "ip" else "vlan"
            for server in s.scalars(select(Server).where(Server.owner == user)):
                if any(k.startswith("nic:") and k.endswith(f":{field}") and v == res.resource
                       for k, v in server.config.items()):
                    raise Busy("resource is used by server {server}", server=server.uuid)
            s.delete(res)
