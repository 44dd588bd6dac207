"""openhosting-admin commands of the pads face: organizations and API keys (user creation with an
email and organization lives in `user create`)."""

from __future__ import annotations

import sys

from ..config import Settings


def pad_accounts(settings: Settings):
    from ..db import Database
    from ..services.accounts import Accounts
    from ..services.pad_accounts import PadAccounts
    from ..services.tokens import Tokens

    db = Database(settings)
    return PadAccounts(db, settings, Accounts(db), Tokens(db))


def _fail(exc) -> None:
    sys.exit(f"openhosting-admin: {getattr(exc, 'message', exc)}")


def cmd_org_create(args, settings: Settings) -> None:
    from ..errors import DomainError

    try:
        org = pad_accounts(settings).org_create(
            args.name, monthly_pad_limit=args.monthly_pad_limit, email_domains=args.email_domains or "",
            default_language=args.default_language, default_private=args.default_private,
            default_execution_enabled=not args.no_execution, pads_visible_to_members=not args.hide_pads)
    except DomainError as exc:
        _fail(exc)
    print(f"organization {org.id}")
    print(f"name {org.name}")


def cmd_org_list(args, settings: Settings) -> None:
    for org in pad_accounts(settings).orgs():
        limit = org.monthly_pad_limit if org.monthly_pad_limit is not None else "unlimited"
        print(f"{org.id} {org.name} limit:{limit}")


def cmd_org_show(args, settings: Settings) -> None:
    from ..errors import DomainError

    try:
        org, users = pad_accounts(settings).org(args.name)
    except DomainError as exc:
        _fail(exc)
    rows = [("organization", org.id), ("name", org.name), ("default_language", org.default_language),
            ("default_private", str(org.default_private).lower()),
            ("default_execution_enabled", str(org.default_execution_enabled).lower()),
            ("pads_visible_to_members", str(org.pads_visible_to_members).lower()),
            ("monthly_pad_limit", org.monthly_pad_limit if org.monthly_pad_limit is not None else "unlimited"),
            ("email_domains", org.email_domains)]
    for key, value in rows:
        print(f"{key} {value}".rstrip())
    for user in users:
        print(f"user {user.uuid} {user.org_role} {user.email or '-'} {user.name}".rstrip())


def cmd_apikey_create(args, settings: Settings) -> None:
    from ..errors import DomainError

    ref = args.user or args.user_pos
    if not ref:
        sys.exit("openhosting-admin: apikey create needs --user <uuid or email>")
    try:
        key = pad_accounts(settings).apikey_create(ref)
    except DomainError as exc:
        _fail(exc)
    print(f"key {key}")


def cmd_apikey_revoke(args, settings: Settings) -> None:
    from ..errors import DomainError

    try:
        pad_accounts(settings).apikey_revoke(args.key)
    except DomainError as exc:
        _fail(exc)
    print("revoked")


def add_commands(sub) -> None:
    org = sub.add_parser("org", help="pads organizations").add_subparsers(dest="cmd", required=True)
    create = org.add_parser("create", help="create an organization")
    create.add_argument("--name", required=True)
    create.add_argument("--monthly-pad-limit", type=int, default=None, help="pads per calendar month (default: none)")
    create.add_argument("--email-domains", default="", help="comma-separated domains user_email may create")
    create.add_argument("--default-language", default="plaintext")
    create.add_argument("--default-private", action="store_true")
    create.add_argument("--no-execution", action="store_true", help="new pads have execution disabled")
    create.add_argument("--hide-pads", action="store_true", help="members do not see each other's pads")
    create.set_defaults(func=cmd_org_create)
    org.add_parser("list", help="list organizations").set_defaults(func=cmd_org_list)
    show = org.add_parser("show", help="an organization and its users")
    show.add_argument("name")
    show.set_defaults(func=cmd_org_show)

    apikey = sub.add_parser("apikey", help="pads API keys").add_subparsers(dest="cmd", required=True)
    create = apikey.add_parser("create", help="issue a pads API key (printed once as `key <value>`)")
    create.add_argument("user_pos", nargs="?", metavar="USER")
    create.add_argument("--user", help="the user's uuid or email")
    create.set_defaults(func=cmd_apikey_create)
    revoke = apikey.add_parser("revoke", help="revoke a pads API key")
    revoke.add_argument("key")
    revoke.set_defaults(func=cmd_apikey_revoke)
