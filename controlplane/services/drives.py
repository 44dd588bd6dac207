"""The drives service: ownership, validation, quotas, imaging jobs. Storage does the bytes."""

from __future__ import annotations

import re
import uuid as uuidlib

from sqlalchemy import func, select, update

from ..config import Settings, parse_size
from ..db import Database
from ..errors import Billing, Busy, Forbidden, Full, NotFound, Usage
from ..jobs import JobQueue
from ..models import Drive, Job
from .accounts import is_uuid
from storage.codec import gunzip_chunk
from storage.pool import DrivePool, RangeReader

EVERYONE = "ffffffff-ffff-ffff-ffff-ffffffffffff"
MAX_DRIVE_SIZE = 16 * 1024**4
IMAGE_MODES = ("", "gzip", "gunzip")
_USER_KEY = re.compile(r"^user:[A-Za-z0-9_.:\-]{1,64}$")
_TAG = re.compile(r"^[^\s]{1,64}$")

SETTABLE = {"name", "size", "claim:type", "readers", "tags", "avoid", "encryption:cipher", "tier"}


def parse_bytes(key: str, text: str, minimum: int = 0) -> int:
    try:
        value = parse_size(text)
    except ValueError:
        raise Usage("{key}: '{value}' is not a size (bytes, or a number with k, M, G or T)",
                    key=key, value=text[:40]) from None
    if value < minimum:
        raise Usage("{key} must be at least {minimum}", key=key, minimum=minimum)
    return value


def validate_fields(fields: dict[str, str], creating: bool) -> dict:
    """Check every key and value of a create/set body; return the parsed changes."""
    changes: dict = {}
    meta: dict[str, str | None] = {}
    for key, value in fields.items():
        if key not in SETTABLE and not _USER_KEY.match(key):
            raise Usage("unknown or read-only key '{key}'", key=key[:64])
        if key == "name":
            if not value.strip() or len(value) > 256:
                raise Usage("name must be 1 to 256 characters")
            changes["name"] = value
        elif key == "size":
            size = parse_bytes("size", value, minimum=1)
            if size > MAX_DRIVE_SIZE:
                raise Usage("size is larger than the largest drive ({max} bytes)", max=MAX_DRIVE_SIZE)
            changes["size"] = size
        elif key == "claim:type":
            if value not in ("exclusive", "shared"):
                raise Usage("claim:type must be 'exclusive' or 'shared'")
            changes["claim_type"] = value
        elif key == "readers":
            readers = value.split()
            if not all(is_uuid(r) for r in readers):
                raise Usage("readers must be user UUIDs separated by spaces")
            changes["readers"] = sorted({r.lower() for r in readers})
        elif key == "tags":
            tags = value.split()
            if len(tags) > 64 or not all(_TAG.match(t) for t in tags):
                raise Usage("tags: at most 64 words of at most 64 characters")
            changes["tags"] = tags
        elif key == "avoid":
            if not all(is_uuid(a) for a in value.split()):
                raise Usage("avoid must be drive UUIDs separated by spaces")
            meta[key] = value or None
        elif key == "encryption:cipher":
            if value not in ("none", ""):
                raise Usage("encryption:cipher: this pool stores drives unencrypted; only 'none' is accepted")
            meta[key] = value or None
        elif key == "tier":
            if value not in ("disk", "ssd"):
                raise Usage("tier must be 'disk' or 'ssd'")
            meta[key] = value
        else:  # user:*
            if len(value) > 1024:
                raise Usage("{key}: value longer than 1024 characters", key=key)
            meta[key] = value or None
    if creating:
        for required in ("name", "size"):
            if required not in changes:
                raise Usage("'{key}' is required", key=required)
    if meta:
        changes["meta"] = meta
    return changes


class NoClaims:
    """Who uses which drive. The servers service supplies the real one; this is the drives-only default."""

    def claimed(self, s, drive_ids: list[str]) -> dict[str, list[str]]:
        """`<server>:<device>` claims per drive id."""
        return {}

    def running(self, s, drive_id: str) -> list[str]:
        """Claims on the drive by servers that are running now (they forbid writes and destroy)."""
        return []

    def release(self, s, drive_id: str) -> None:
        """Forget claims on a drive that is being destroyed."""


class Drives:
    def __init__(self, db: Database, pool: DrivePool, settings: Settings, claims=None):
        self.db = db
        self.pool = pool
        self.settings = settings
        self.claims = claims or NoClaims()

    # ---- lookups -------------------------------------------------------------------------------

    def visible(self, s, user: str, drive_id: str, write: bool = False) -> Drive:
        """A drive the user may read (or, with `write`, change): 403 for read-only, 404 otherwise."""
        drive = s.get(Drive, drive_id.lower()) if is_uuid(drive_id) else None
        if drive is None:
            raise NotFound(what="drive")
        if drive.owner == user and not drive.standard:
            return drive
        if drive.standard or user in drive.readers or EVERYONE in drive.readers:
            if write:
                raise Forbidden("drive {drive} is read-only for you", drive=drive.uuid)
            return drive
        raise NotFound(what="drive")

    def _render(self, s, drives: list[Drive]) -> list[dict]:
        ids = [d.uuid for d in drives]
        jobs = JobQueue.active_for(s, "image", ids)
        claims = self.claims.claimed(s, ids)
        out = []
        for d in drives:
            obj: dict = {"drive": d.uuid, "name": d.name, "size": d.size, "status": "active"}
            if d.owner:
                obj["user"] = d.owner
            obj["claim:type"] = d.claim_type
            if claims.get(d.uuid):
                obj["claimed"] = " ".join(claims[d.uuid])
            if d.readers:
                obj["readers"] = " ".join(d.readers)
            if d.tags:
                obj["tags"] = " ".join(d.tags)
            if d.standard:
                obj["media"] = d.media
                obj["format"] = d.format
            obj["encryption:cipher"] = d.meta.get("encryption:cipher", "none")
            obj["tier"] = d.meta.get("tier", "disk")
            for key in sorted(k for k in d.meta if k.startswith("user:")):
                obj[key] = d.meta[key]
            obj["read:bytes"] = d.read_bytes
            obj["read:requests"] = d.read_requests
            obj["write:bytes"] = d.write_bytes
            obj["write:requests"] = d.write_requests
            job = jobs.get(d.uuid)
            if job is not None:
                obj["imaging"] = "queued" if job.state == "queued" else f"{_percent(job)}%"
            elif d.imaging_error:
                obj["imaging:error"] = d.imaging_error
            out.append(obj)
        return out

    # ---- reads ---------------------------------------------------------------------------------

    def list(self, user: str, standard: bool = False) -> list[str]:
        with self.db.session() as s:
            where = Drive.standard.is_(True) if standard else Drive.owner == user
            return list(s.scalars(select(Drive.uuid).where(where).order_by(Drive.created_at, Drive.uuid)))

    def info_all(self, user: str, standard: bool = False) -> list[dict]:
        with self.db.session() as s:
            where = Drive.standard.is_(True) if standard else Drive.owner == user
            drives = list(s.scalars(select(Drive).where(where).order_by(Drive.created_at, Drive.uuid)))
            return self._render(s, drives)

    def info(self, user: str, drive_id: str) -> dict:
        with self.db.session() as s:
            return self._render(s, [self.visible(s, user, drive_id)])[0]

    # ---- changes -------------------------------------------------------------------------------

    def _check_space(self, s, user: str | None, grow: int) -> None:
        if grow <= 0:
            return
        quota = self.settings.user_drive_quota
        if quota and user:
            used = s.scalar(select(func.coalesce(func.sum(Drive.size), 0)).where(Drive.owner == user))
            if used + grow > quota:
                raise Billing("drive quota of {quota} bytes exceeded ({used} bytes in use)",
                              quota=quota, used=used)
        limit = self.settings.pool_limit
        if limit:
            used = s.scalar(select(func.coalesce(func.sum(Drive.size), 0)))
            if used + grow > limit:
                raise Full("storage pool full: {free} bytes of drive space left", free=max(limit - used, 0))

    def create(self, user: str, fields: dict[str, str]) -> dict:
        changes = validate_fields(fields, creating=True)
        meta = {k: v for k, v in changes.pop("meta", {}).items() if v is not None}
        drive_id = str(uuidlib.uuid4())
        with self.db.session() as s:
            self._check_space(s, user, changes["size"])
            fields = {"readers": [], "tags": [], **changes}
            drive = Drive(uuid=drive_id, owner=user, meta=meta, **fields)
            s.add(drive)
            s.flush()
            self.pool.create(drive_id, drive.size)
            return self._render(s, [drive])[0]

    def set(self, user: str, drive_id: str, fields: dict[str, str]) -> dict:
        changes = validate_fields(fields, creating=False)
        with self.db.session() as s:
            drive = self.visible(s, user, drive_id, write=True)
            meta = changes.pop("meta", None)
            if meta:
                merged = dict(drive.meta)
                for key, value in meta.items():
                    if value is None:
                        merged.pop(key, None)
                    else:
                        merged[key] = value
                drive.meta = merged
            new_size = changes.get("size")
            if new_size is not None and new_size != drive.size:
                self._ensure_idle(s, drive, "resized")
                self._check_space(s, user, new_size - drive.size)
            for key, value in changes.items():
                setattr(drive, key, value)
            s.flush()
            if new_size is not None:
                self.pool.resize(drive.uuid, new_size)
            return self._render(s, [drive])[0]

    def _ensure_idle(self, s, drive: Drive, verb: str) -> None:
        if JobQueue.active_for(s, "image", [drive.uuid]):
            raise Busy("drive is being imaged and cannot be {verb}", verb=verb)
        readers = s.scalar(
            select(func.count()).select_from(Job)
            .where(Job.kind == "image", Job.state.in_(("queued", "running")))
            .where(Job.args["source"].as_string() == drive.uuid)
        )
        if readers:
            raise Busy("drive is the source of an imaging job and cannot be {verb}", verb=verb)
        if self.claims.running(s, drive.uuid):
            raise Busy("drive is in use by a running server and cannot be {verb}", verb=verb)

    def destroy(self, user: str, drive_id: str) -> None:
        with self.db.session() as s:
            drive = self.visible(s, user, drive_id, write=True)
            self._ensure_idle(s, drive, "destroyed")
            self.claims.release(s, drive.uuid)
            s.delete(drive)
            s.flush()
            self.pool.remove(drive.uuid, drive.format)

    def read(self, user: str, drive_id: str, offset: str, size: str) -> tuple[int, RangeReader]:
        start = parse_bytes("offset", offset)
        length = parse_bytes("size", size)
        with self.db.session() as s:
            drive = self.visible(s, user, drive_id)
            stream = self.pool.read(drive.uuid, start, length, drive.format)
            s.execute(update(Drive).where(Drive.uuid == drive.uuid).values(
                read_bytes=Drive.read_bytes + length, read_requests=Drive.read_requests + 1))
        return length, stream

    def write(self, user: str, drive_id: str, offset: str | None, body: bytes, gzip: bool) -> None:
        start = parse_bytes("offset", offset) if offset is not None else 0
        with self.db.session() as s:
            drive = self.visible(s, user, drive_id, write=True)
            if JobQueue.active_for(s, "image", [drive.uuid]):
                raise Busy("drive is being imaged; write after imaging finishes")
            if self.claims.running(s, drive.uuid):
                raise Busy("drive is in use by a running server")
        data = gunzip_chunk(body, self.settings.max_body) if gzip else body
        self.pool.write(drive.uuid, start, data)
        with self.db.session() as s:
            s.execute(update(Drive).where(Drive.uuid == drive.uuid).values(
                write_bytes=Drive.write_bytes + len(data), write_requests=Drive.write_requests + 1))

    def image(self, user: str, drive_id: str, source_id: str, mode: str) -> None:
        if mode not in IMAGE_MODES:
            raise Usage("imaging mode must be 'gzip' or 'gunzip'")
        with self.db.session() as s:
            drive = self.visible(s, user, drive_id, write=True)
            source = self.visible(s, user, source_id)
            if source.uuid == drive.uuid:
                raise Usage("a drive cannot be imaged from itself")
            if JobQueue.active_for(s, "image", [drive.uuid, source.uuid]):
                raise Busy("drive or source is being imaged")
            if self.claims.running(s, drive.uuid):
                raise Busy("drive is in use by a running server")
            stored = self.pool.stored_size(source.uuid, source.format)
            needed = source.size if (mode == "gunzip" and source.format == "gzip") else stored
            if mode != "gzip" and needed > drive.size:
                raise Usage("source ({needed} bytes) is larger than the drive ({size} bytes)",
                            needed=needed, size=drive.size)
            drive.imaging_error = None
            JobQueue.enqueue(s, "image", drive.uuid,
                             {"source": source.uuid, "format": source.format, "mode": mode}, total=stored)


def _percent(job: Job) -> int:
    if not job.total:
        return 0
    return min(99, job.progress * 100 // job.total)
