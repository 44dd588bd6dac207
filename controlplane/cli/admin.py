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


def _check_ip_pool(settings: Settings) -> str:
    """The public network's range, checked against the host (and picked once when not set); a
    clash stops the command with the message (see services/ippool.py)."""
    from ..services.ippool import PoolConflict, ensure

    try:
        return ensure(settings)
    except PoolConflict as exc:
        sys.exit(f"openhosting-admin: refusing to start: {exc}")


def _tokens(settings: Settings):
    from ..db import Database
    from ..services.tokens import Tokens

    return Tokens(Database(settings))


def _fail(exc) -> None:
    sys.exit(f"openhosting-admin: {exc.message}")


def cmd_token_create(args, settings: Settings) -> None:
    from ..errors import DomainError

    try:
        token_id, token = _tokens(settings).create(args.user.lower(), args.kind, args.label or "")
    except DomainError as exc:
        _fail(exc)
    print(f"token {token}")
    print(f"id {token_id}")


def cmd_token_list(args, settings: Settings) -> None:
    for t in _tokens(settings).list(args.user.lower() if args.user else None, args.kind):
        print(f"{t.id} {t.kind} {t.owner} {t.hint}… {t.created_at:%Y-%m-%d %H:%M:%S} {t.label}".rstrip())


def cmd_token_revoke(args, settings: Settings) -> None:
    from ..errors import DomainError

    try:
        _tokens(settings).revoke(args.id, args.user.lower() if args.user else None)
    except DomainError as exc:
        _fail(exc)
    print(f"revoked {args.id}")


def _projects(settings: Settings):
    from ..db import Database
    from ..services.projects import Projects
    from storage.projects import ProjectFiles

    return Projects(Database(settings), ProjectFiles(settings.state_dir / "projects"))


def cmd_project_create(args, settings: Settings) -> None:
    from ..errors import DomainError

    if not args.user and not args.template:
        sys.exit("openhosting-admin: give --user (the owner) or --template (every account sees it)")
    try:
        project_id = _projects(settings).create(
            name=args.name, image=args.image, source=Path(args.source), owner=args.user.lower() if args.user else None,
            template=args.template, project_id=args.id, slots=args.slots, description=args.description,
            stack=args.stack)
    except DomainError as exc:
        _fail(exc)
    print(f"project {project_id}")


def cmd_project_list(args, settings: Settings) -> None:
    for p in _projects(settings).all():
        owner = p.owner or "template"
        print(f"{p.id} {p.image} {owner} {p.name}")


def cmd_project_show(args, settings: Settings) -> None:
    from ..errors import DomainError

    try:
        p = _projects(settings).show(args.id)
    except DomainError as exc:
        _fail(exc)
    rows = [("project", p.id), ("name", p.name), ("image", p.image), ("owner", p.owner or ""),
            ("template", str(p.template).lower()), ("slots", p.slots), ("files", f"{p.files_bytes} bytes"),
            ("created", f"{p.created_at:%Y-%m-%d %H:%M:%S}")]
    for key, value in rows:
        print(f"{key} {value}")
    print("config " + " ".join(p.config.split()))


def cmd_project_remove(args, settings: Settings) -> None:
    from ..errors import DomainError

    try:
        _projects(settings).remove(args.id)
    except DomainError as exc:
        _fail(exc)
    print(f"removed {args.id}")


def cmd_serve(args, settings: Settings) -> None:
    from ..server import serve

    _check_ip_pool(settings)
    serve(args.bind, args.workers, args.threads)


def cmd_console_proxy(args, settings: Settings) -> None:
    import os

    from ..proxy.serve import serve

    # The proxy's own origin (for the WebSocket Origin check) follows --bind unless a public
    # OPENHOSTING_CONSOLE_URL says otherwise; the workers read the settings from the environment.
    os.environ["OPENHOSTING_CONSOLE_BIND"] = args.bind or settings.console_bind
    serve(args.bind or settings.console_bind, args.workers)


def cmd_agent(args, settings: Settings) -> None:
    from ..agent import main

    _check_ip_pool(settings)
    main(settings)


def cmd_host_pool(args, settings: Settings) -> None:
    print(f"ip-pool {_check_ip_pool(settings)}")


def _agent_running(settings: Settings) -> bool:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(b"!", str(settings.run_dir / "agent.sock"))   # a nudge: harmless to a live agent
            return True
        except OSError:
            return False


def cmd_host_purge(args, settings: Settings) -> None:
    from hypervisor.host import Host
    from hypervisor.purge import owned_objects, purge

    host = Host(settings.installation_id, uri=settings.libvirt_uri)
    if _agent_running(settings):
        sys.exit("openhosting-admin: the agent of this installation is running; stop it (and the API) first")
    domains, networks = owned_objects(host)
    sandbox_root = settings.state_dir / "sandbox-vms"
    if not args.yes:
        if not sys.stdin.isatty():
            sys.exit("openhosting-admin: host purge asks first; not on a terminal, pass --yes")
        print(f"installation {settings.installation_id} ({settings.state_dir}) owns on {settings.libvirt_uri}:")
        print(f"  {len(domains)} domain(s): {' '.join(domains) or '-'}")
        print(f"  {len(networks)} network(s): {' '.join(networks) or '-'}")
        print(f"  sandbox templates and overlays under {sandbox_root}")
        if input("stop and remove all of them? [y/N] ").strip().lower() not in ("y", "yes"):
            sys.exit("openhosting-admin: nothing removed")
    done = purge(host, sandbox_root)
    removed = _remove_run_files(settings)
    print(f"domains {len(done.domains) + done.sandboxes}")
    print(f"networks {len(done.networks)}")
    print(f"files {len(done.files) + removed}")


def _remove_run_files(settings: Settings) -> int:
    """Console logs and doorbell sockets the stopped processes left in the run directory."""
    removed = 0
    run = settings.run_dir
    for pattern in ("console-*.log", "agent.sock", "waiters/*.sock"):
        for path in run.glob(pattern) if run.is_dir() else ():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


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
    from .termadmin import add_commands as add_terminal_commands

    add_terminal_commands(sub)

    serve = sub.add_parser("serve", help="serve the HTTP API with gunicorn")
    serve.add_argument("--bind", default="127.0.0.1:8080")
    serve.add_argument("--workers", type=int, default=2)
    serve.add_argument("--threads", type=int, default=8)
    serve.set_defaults(func=cmd_serve)

    proxy = sub.add_parser("console-proxy", help="serve the browser consoles (pages and WebSockets) with gunicorn's "
                                                 "asgi worker")
    proxy.add_argument("--bind", default="", help="HOST:PORT (default: OPENHOSTING_CONSOLE_BIND or 127.0.0.1:8081)")
    proxy.add_argument("--workers", type=int, default=1)
    proxy.set_defaults(func=cmd_console_proxy)

    sub.add_parser("agent", help="run this host's agent (jobs, reconciliation)").set_defaults(func=cmd_agent)

    host = sub.add_parser("host", help="this hypervisor host").add_subparsers(dest="cmd", required=True)
    host.add_parser("info", help="versions, accelerator, CPUs, memory, pool space").set_defaults(func=cmd_host_info)
    host.add_parser("pool", help="the public network's IP range (checked; picked once when not set)").set_defaults(
        func=cmd_host_pool)
    purge = host.add_parser("purge", help="stop and remove every domain, network, overlay and saved state "
                                          "this installation owns on the host (asks first)")
    purge.add_argument("--yes", action="store_true", help="do not ask")
    purge.set_defaults(func=cmd_host_purge)

    image = sub.add_parser("image", help="guest images for sandboxes").add_subparsers(dest="cmd", required=True)
    build = image.add_parser("build", help="build an image from Debian packages (idempotent)")
    build.add_argument("name")
    build.add_argument("--force", action="store_true", help="rebuild even when installed")
    build.set_defaults(func=cmd_image_build)
    image.add_parser("list", help="the manifest's images and whether they are built").set_defaults(func=cmd_image_list)

    token = sub.add_parser("token", help="API tokens of the token faces (workspaces)").add_subparsers(
        dest="cmd", required=True)
    create = token.add_parser("create", help="issue a token and print it (shown once; stored hashed)")
    create.add_argument("--user", required=True)
    create.add_argument("--kind", default="workspaces")
    create.add_argument("--label", default="")
    create.set_defaults(func=cmd_token_create)
    listing = token.add_parser("list", help="list tokens (id, kind, owner, first characters, created)")
    listing.add_argument("--user")
    listing.add_argument("--kind")
    listing.set_defaults(func=cmd_token_list)
    revoke = token.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("id", type=int)
    revoke.add_argument("--user")
    revoke.set_defaults(func=cmd_token_revoke)

    project = sub.add_parser("project", help="workspace projects").add_subparsers(dest="cmd", required=True)
    create = project.add_parser("create", help="create a project from a directory or tar.gz")
    create.add_argument("--name", required=True)
    create.add_argument("--image", required=True, help="the guest image its workspaces run (image list)")
    create.add_argument("--from", dest="source", required=True,
                        help="directory or tar.gz with config.json, optional workspace_init, workspace/")
    create.add_argument("--id", help="keep this 32-hex id (a client moving from a hosted service)")
    create.add_argument("--user", help="the owning account (omit with --template)")
    create.add_argument("--template", action="store_true", help="every account sees it")
    create.add_argument("--slots", type=int, default=1, help="slots one workspace of it occupies")
    create.add_argument("--description", default="")
    create.add_argument("--stack", default="")
    create.set_defaults(func=cmd_project_create)
    project.add_parser("list", help="list projects").set_defaults(func=cmd_project_list)
    for verb, func, text in (("show", cmd_project_show, "show a project"),
                             ("remove", cmd_project_remove, "remove a project without live workspaces")):
        cmd = project.add_parser(verb, help=text)
        cmd.add_argument("id")
        cmd.set_defaults(func=func)

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
