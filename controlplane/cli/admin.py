"""openhosting-admin: the operator's command (database, users, serving, the agent, standard drives)."""

from __future__ import annotations

import argparse
import sys
import uuid as uuidlib
from pathlib import Path

from ..config import Settings


def cmd_db_upgrade(args, settings: Settings) -> None:
    from ..db import upgrade

    upgrade(settings)
    print("database at head")


def cmd_db_check(args, settings: Settings) -> None:
    from alembic import command

    from ..db import alembic_config

    command.check(alembic_config(settings.database_url))


def cmd_user_create(args, settings: Settings) -> None:
    from ..db import Database
    from ..services.accounts import Accounts

    if args.email or args.org:
        from ..errors import DomainError
        from .padadmin import pad_accounts

        try:
            user, secret = pad_accounts(settings).user_create(args.name or "", args.email, args.org, args.role)
        except DomainError as exc:
            sys.exit(f"openhosting-admin: {exc.message}")
    else:
        user, secret = Accounts(Database(settings)).create(args.name or "")
    print(f"user {user}")
    print(f"secret {secret}")


def cmd_user_list(args, settings: Settings) -> None:
    from ..db import Database
    from ..services.accounts import Accounts

    for user in Accounts(Database(settings)).list():
        print(f"{user.uuid} {user.name}".rstrip())


def cmd_serve(args, settings: Settings) -> None:
    from ..server import serve

    serve(args.bind, args.workers, args.threads)


def cmd_agent(args, settings: Settings) -> None:
    from ..agent import main

    main(settings)


def cmd_host_info(args, settings: Settings) -> None:
    from hypervisor.host import Host
    from storage.pool import DrivePool

    info = Host(settings.installation_id, uri=settings.libvirt_uri).info()
    pool = DrivePool(settings.drive_dir, reserve=settings.pool_reserve)
    rows = [
        ("hostname", info.hostname), ("libvirt", info.libvirt_version), ("qemu", info.qemu_version),
        ("uri", info.uri), ("accelerator", str(info.accelerator)), ("cpus", info.cpus),
        ("cpu:mhz", info.cpu_mhz), ("mem", f"{info.memory_mib} MiB"), ("mem:free", f"{info.free_memory_mib} MiB"),
        ("pool", settings.drive_dir), ("pool:capacity", f"{pool.capacity()} bytes"),
        ("pool:free", f"{max(pool.free_bytes(), 0)} bytes"), ("installation", settings.installation_id),
    ]
    for key, value in rows:
        print(f"{key} {value}")


def _images(settings: Settings):
    from ..db import Database
    from ..services.images import Images
    from storage.pool import DrivePool

    return Images(Database(settings), DrivePool(settings.drive_dir, reserve=settings.pool_reserve), settings)


def cmd_image_build(args, settings: Settings) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    image = _images(settings).build(args.name, force=args.force)
    print(f"image {image.slug}")
    print(f"drive {image.drive}")
    print(f"memory {image.memory_mib}")


def cmd_image_list(args, settings: Settings) -> None:
    for entry in _images(settings).catalogue():
        state = "built" if entry["built"] else "not-built"
        print(f"{entry['name']} {state} {entry['memory']}MiB {entry['description']}")


def cmd_drive_import_standard(args, settings: Settings) -> None:
    from ..db import Database
    from ..models import Drive
    from storage.pool import DrivePool, import_gzip

    source = Path(args.file)
    if not source.is_file():
        sys.exit(f"openhosting-admin: {source}: no such file")
    drive_id = str(uuidlib.UUID(args.uuid)) if args.uuid else str(uuidlib.uuid4())
    db = Database(settings)
    pool = DrivePool(settings.drive_dir, reserve=settings.pool_reserve)
    with db.session() as s:
        if s.get(Drive, drive_id) is not None:
            sys.exit(f"openhosting-admin: drive {drive_id} exists already")
    if args.gzip:
        _, size = import_gzip(pool, drive_id, source)
        fmt = "gzip"
    else:
        size = pool.import_file(drive_id, source, "raw")
        fmt = "raw"
    with db.session() as s:
        s.add(Drive(uuid=drive_id, owner=None, name=args.name, size=size, format=fmt, media=args.media,
                    standard=True, claim_type="shared", readers=[], tags=[], meta={}))
    print(f"drive {drive_id}")
    print(f"size {size}")
    print(f"format {fmt}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openhosting-admin", description=__doc__)
    sub = parser.add_subparsers(dest="group", required=True)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="cmd", required=True)
    db.add_parser("upgrade", help="migrate the database to the newest schema").set_defaults(func=cmd_db_upgrade)
    db.add_parser("check", help="fail when models and migrations differ").set_defaults(func=cmd_db_check)

    user = sub.add_parser("user", help="accounts").add_subparsers(dest="cmd", required=True)
    create = user.add_parser("create", help="create a user and print its uuid and secret")
    create.add_argument("--name", default="")
    create.add_argument("--email", default=None, help="the pads face's login and owner_email")
    create.add_argument("--org", default=None, help="a pads organization (name or id) to join")
    create.add_argument("--role", choices=["owner", "member"], default="member", help="role in --org")
    create.set_defaults(func=cmd_user_create)
    user.add_parser("list", help="list users").set_defaults(func=cmd_user_list)

    from .padadmin import add_commands

    add_commands(sub)

    serve = sub.add_parser("serve", help="serve the HTTP API with gunicorn")
    serve.add_argument("--bind", default="127.0.0.1:8080")
    serve.add_argument("--workers", type=int, default=2)
    serve.add_argument("--threads", type=int, default=8)
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("agent", help="run this host's agent (jobs, reconciliation)").set_defaults(func=cmd_agent)

    host = sub.add_parser("host", help="this hypervisor host").add_subparsers(dest="cmd", required=True)
    host.add_parser("info", help="versions, accelerator, CPUs, memory, pool space").set_defaults(func=cmd_host_info)

    image = sub.add_parser("image", help="guest images for sandboxes").add_subparsers(dest="cmd", required=True)
    build = image.add_parser("build", help="build an image from Debian packages (idempotent)")
    build.add_argument("name")
    build.add_argument("--force", action="store_true", help="rebuild even when installed")
    build.set_defaults(func=cmd_image_build)
    image.add_parser("list", help="the manifest's images and whether they are built").set_defaults(func=cmd_image_list)

    drive = sub.add_parser("drive", help="standard drives").add_subparsers(dest="cmd", required=True)
    imp = drive.add_parser("import-standard", help="add a file to the standard drive library")
    imp.add_argument("file")
    imp.add_argument("--name", required=True)
    imp.add_argument("--uuid")
    imp.add_argument("--media", choices=["disk", "cdrom"], default="disk")
    imp.add_argument("--gzip", action="store_true", help="store compressed (format gzip)")
    imp.set_defaults(func=cmd_drive_import_standard)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args, Settings.from_env())


if __name__ == "__main__":
    main()
