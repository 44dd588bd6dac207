#!/usr/bin/env python3
"""openhosting: one cloud API call from the command line.

    openhosting [-c | -f FILE] [-j] [-v] CMD ARG…

The URL is $OHURI followed by the arguments joined by '/'; every call is a POST, authenticated with
$OHAUTH (<user uuid>:<secret API key>, or only the uuid to be asked for the key). The server's
answer is printed as it came; an error prints its X-Elastic-Error type and message on standard
error and exits 1.

    openhosting console SERVER

prints a one-time link to the server's console page (POST /servers/SERVER/console): open it in a
browser within a minute.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from pathlib import Path

if __package__ in (None, ""):  # run as tools/openhosting.py from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools._client import (EXIT_FAILED, EXIT_OK, EXIT_USAGE, ApiError, Client, Endpoint, TransportError,
                           UsageError, describe)

PROG = "openhosting"
# Characters left as they are in a path segment; everything else is percent-encoded.
_SAFE = "-._~!$&'()*+,;=:@"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage="%(prog)s [-c | -f FILE] [-j] [-v] CMD ARG...",
        description="Call the cloud API at $OHURI: the URL is $OHURI plus the arguments joined by '/'. "
                    "Authentication from $OHAUTH=<user uuid>:<secret API key>.",
        epilog="examples:\n"
               "  openhosting drives list\n"
               "  openhosting -c drives create <<EOF\n  name TestDrive\n  size 10G\n  EOF\n"
               "  openhosting -f image.raw drives <DRIVE> write\n"
               "  openhosting -j servers <SERVER> info\n"
               "  openhosting console <SERVER>      (a one-time browser link to its VNC console)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    body = parser.add_mutually_exclusive_group()
    body.add_argument("-c", dest="stdin", action="store_true",
                      help="send standard input as the request body (key value lines)")
    body.add_argument("-f", dest="file", metavar="FILE",
                      help="send FILE as the request body (key value lines, or raw data for write)")
    parser.add_argument("-j", dest="json", action="store_true", help="JSON in and out instead of text")
    parser.add_argument("-v", dest="verbose", action="store_true",
                        help="show the HTTP exchange on standard error")
    parser.add_argument("command", metavar="CMD", help="drives, servers, resources…")
    parser.add_argument("args", metavar="ARG", nargs=argparse.REMAINDER)
    return parser.parse_args(argv)


def request_path(words: list[str]) -> str:
    return "/" + "/".join(urllib.parse.quote(w, safe=_SAFE) for w in words)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    words = [args.command, *args.args]
    console = args.command == "console" and not (args.file or args.stdin)
    if console:
        if len(args.args) != 1:
            print(f"{PROG}: usage: {PROG} console SERVER", file=sys.stderr)
            return EXIT_USAGE
        words = ["servers", args.args[0], "console"]
    data_call = "write" in words  # the body is drive data, not key/value text
    headers = {}
    if args.json or console:
        headers["Accept"] = "application/json"
    try:
        endpoint = Endpoint.from_env()
        if args.file:
            try:
                body = open(args.file, "rb")
            except OSError as exc:
                raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
        elif args.stdin:
            body = sys.stdin.buffer.read()
        else:
            body = b""
        if args.file or args.stdin:
            headers["Content-Type"] = ("application/json" if args.json and not data_call
                                       else "application/octet-stream")
        client = Client(endpoint, trace=sys.stderr if args.verbose else None)
        try:
            resp = client.call("POST", request_path(words), body, headers)
        finally:
            client.close()
            if hasattr(body, "close"):
                body.close()
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ApiError, TransportError) as exc:
        print(f"{PROG}: {describe(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    out = sys.stdout.buffer
    if console and not args.json:
        import json

        out.write(json.loads(resp.body)["url"].encode() + b"\n")
        out.flush()
        return EXIT_OK
    out.write(resp.body)
    if sys.stdout.isatty() and resp.body and not resp.body.endswith(b"\n"):
        out.write(b"\n")  # JSON answers carry no final newline; keep the prompt on its own line
    out.flush()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
