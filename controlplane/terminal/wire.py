"""The local protocol between the console proxy and the terminal service (a Unix socket under the
run directory, 0600: only this installation's processes reach it).

Frames both ways: ``kind (1 byte) | length (u32, big endian) | payload`` (length ≤ 1 MiB).

- proxy → service: ``O`` open, JSON ``{"owner", "workspace", "rows", "cols", "auto_resume"}`` (first
  frame, once); ``D`` keys; ``R`` resize, JSON ``{"rows", "cols"}``.
- service → proxy: ``A`` answer to the open, JSON ``{"ok": true, "resumed": bool}`` or ``{"ok": false,
  "reason": "…"}`` (then the service closes); ``D`` terminal output; ``E`` end, JSON ``{"reason": "…",
  "exit": int | null}`` (then the service closes).

The proxy checks the Origin and claims the ticket; the service trusts the owner it is told (the
socket's permissions are the boundary) and checks everything about the workspace itself.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct

HEAD = struct.Struct(">BI")
MAX = 1 << 20
OPEN, ANSWER, DATA, RESIZE, END = (ord(c) for c in "OADRE")


class WireError(Exception):
    pass


def pack(kind: int, payload: bytes | dict) -> bytes:
    if isinstance(payload, dict):
        payload = json.dumps(payload).encode()
    if len(payload) > MAX:
        raise WireError(f"frame of {len(payload)} bytes")
    return HEAD.pack(kind, len(payload)) + payload


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        got = sock.recv(n - len(buf))
        if not got:
            return None
        buf += got
    return bytes(buf)


def recv(sock: socket.socket) -> tuple[int, bytes] | None:
    """The next frame, None at the end of the stream."""
    head = _recv_exact(sock, HEAD.size)
    if head is None:
        return None
    kind, n = HEAD.unpack(head)
    if n > MAX:
        raise WireError(f"frame of {n} bytes")
    payload = _recv_exact(sock, n) if n else b""
    if payload is None:
        return None
    return kind, payload


async def read(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
    """The next frame from an asyncio stream (the proxy side), None at the end."""
    try:
        kind, n = HEAD.unpack(await reader.readexactly(HEAD.size))
        if n > MAX:
            raise WireError(f"frame of {n} bytes")
        return kind, await reader.readexactly(n) if n else b""
    except asyncio.IncompleteReadError:
        return None


def as_json(payload: bytes) -> dict:
    try:
        value = json.loads(payload)
    except ValueError as exc:
        raise WireError("a frame that is not JSON") from exc
    if not isinstance(value, dict):
        raise WireError("a JSON frame that is not an object")
    return value
