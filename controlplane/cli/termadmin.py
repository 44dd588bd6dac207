"""openhosting-admin commands of the workspace terminal: users' SSH keys (`key add|list|remove`) and
the terminal service (`terminal-service`: the SSH gateway and the local socket the console proxy's
terminal pages use; see controlplane/terminal)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import Settings


def _keys(settings: Settings):
    from ..db import Database
    from ..services.ssh_keys import SshKeys

    return SshKeys(Database(settings))


def _fail(exc) -> None:
    sys.exit(f"openhosting-admin: {getattr(exc, 'message', exc)}")


def cmd_key_add(args, settings: Settings) -> None:
    from ..errors import DomainError

    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(errors="replace")
    except OSError as exc:
        sys.exit(f"openhosting-admin: cannot read {args.file}: {exc.strerror}")
    try:
        key = _keys(settings).add(args.user.lower(), text.strip(), args.comment)
    except DomainError as exc:
        _fail(exc)
    print(f"key {key['id']}")
    print(f"fingerprint {key['fingerprint']}")


def cmd_key_list(args, settings: Settings) -> None:
    for key in _keys(settings).list(args.user.lower()):
        print(f"{key['id']} {key['type']} {key['fingerprint']} {key['created_at']} {key['comment']}".rstrip())


def cmd_key_remove(args, settings: Settings) -> None:
    from ..errors import DomainError

    try:
        _keys(settings).remove(args.user.lower(), args.key)
    except DomainError as exc:
        _fail(exc)
    print(f"removed {args.key}")


def cmd_terminal_service(args, settings: Settings) -> None:
    from ..terminal.service import serve

    serve(settings, ssh_bind=args.ssh_bind or settings.ssh_bind, socket_path=args.socket)


def add_commands(sub) -> None:
    key = sub.add_parser("key", help="users' SSH public keys (SSH gateway to workspaces)").add_subparsers(
        dest="cmd", required=True)
    add = key.add_parser("add", help="register a public key (one OpenSSH line; FILE '-' reads stdin)")
    add.add_argument("--user", required=True)
    add.add_argument("--comment", default=None, help="instead of the key line's own comment")
    add.add_argument("file")
    add.set_defaults(func=cmd_key_add)
    listing = key.add_parser("list", help="a user's keys (id, type, fingerprint, created, comment)")
    listing.add_argument("--user", required=True)
    listing.set_defaults(func=cmd_key_list)
    remove = key.add_parser("remove", help="remove a key by its id or SHA256:… fingerprint")
    remove.add_argument("--user", required=True)
    remove.add_argument("key")
    remove.set_defaults(func=cmd_key_remove)

    service = sub.add_parser("terminal-service", help="hold workspaces' terminal ports: the SSH gateway and "
                                                      "the console proxy's terminal sessions")
    service.add_argument("--ssh-bind", default=None, help="HOST:PORT (default $OPENHOSTING_SSH_BIND, "
                                                          "127.0.0.1:2222; 'none': no SSH)")
    service.add_argument("--socket", default=None, help="the Unix socket for the proxy (default "
                                                        "RUN_DIR/terminal.sock)")
    service.set_defaults(func=cmd_terminal_service)
