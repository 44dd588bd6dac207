"""Guest images for sandboxes: built from Debian packages (storage.guest), the root file system kept
as a read-only standard drive of the pool, kernel and boot initramfs beside it."""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path

from sqlalchemy import select

from ..config import Settings
from ..db import Database
from ..models import Drive, Image
from storage.pool import DrivePool

_NAMESPACE = uuidlib.UUID("5d3c1a52-6f0e-4f38-9a7e-0b3f2f1c9a11")


class Images:
    def __init__(self, db: Database, pool: DrivePool, settings: Settings):
        self.db = db
        self.pool = pool
        self.settings = settings

    @property
    def image_dir(self) -> Path:
        return self.settings.state_dir / "images"

    def slugs(self) -> list[str]:
        with self.db.session() as s:
            return list(s.scalars(select(Image.slug).order_by(Image.slug)))

    def get(self, slug: str) -> Image | None:
        with self.db.session() as s:
            return s.get(Image, slug)

    def catalogue(self) -> list[dict]:
        """The manifest's images with whether this installation has built them."""
        from storage.guest import list_images

        built = set(self.slugs())
        return [{**entry, "built": entry["name"] in built} for entry in list_images()]

    def build(self, slug: str, force: bool = False) -> Image:
        """Build image `slug` (idempotent: an installed image is kept unless `force`)."""
        from storage.guest import build_image

        existing = self.get(slug)
        if existing and not force and self.pool.exists(existing.drive) and Path(existing.kernel).exists():
            return existing
        work = self.image_dir / slug
        work.mkdir(parents=True, exist_ok=True)
        built = build_image(slug, work)
        drive_id = str(uuidlib.uuid5(_NAMESPACE, f"{slug}:{uuidlib.uuid4()}"))
        size = self.pool.adopt_file(drive_id, Path(built["rootfs"]))
        with self.db.session() as s:
            old = s.get(Image, slug)
            old_drive = old.drive if old else None
            s.add(Drive(uuid=drive_id, owner=None, name=f"image {slug}", size=size, format="raw", media="disk",
                        standard=True, claim_type="shared", readers=[], tags=["image", slug], meta={}))
            s.flush()
            values = dict(drive=drive_id, kernel=str(built["kernel"]), initramfs=str(built["initramfs"]),
                          cmdline=built["cmdline"], memory_mib=int(built["memory"]),
                          description=built["description"])
            if old:
                for key, value in values.items():
                    setattr(old, key, value)
            else:
                s.add(Image(slug=slug, **values))
            if old_drive:
                # the old base may still back running sandboxes' overlays: keep the file, hide the drive
                drive = s.get(Drive, old_drive)
                if drive:
                    drive.name = f"image {slug} (superseded)"
        return self.get(slug)
