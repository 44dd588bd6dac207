"""RFB (VNC) for the proxy: log in to QEMU's VNC server with the server's password, and speak the
"no authentication" handshake to the browser, so the password never leaves the host.

VNC authentication (RFC 6143 7.2.2): the server sends 16 random bytes, the client answers them
encrypted with DES (ECB, two blocks) keyed by the password's first 8 bytes with each byte's bits
mirrored. DES is written out below from the tables of FIPS 46-3 (the same standard tables as the
tests' own client; no crypto package for one cipher that modern libraries keep only as "decrepit").
"""

from __future__ import annotations

import asyncio
import struct

VERSION_38 = b"RFB 003.008\n"
SEC_NONE, SEC_VNC = 1, 2
PASSWORD_MAX = 8


class RfbError(Exception):
    """The VNC server refused us or spoke something else; the message is safe to show."""


# ---- DES (FIPS 46-3): one block, encryption only ---------------------------------------------------

_IP = [58, 50, 42, 34, 26, 18, 10, 2, 60, 52, 44, 36, 28, 20, 12, 4, 62, 54, 46, 38, 30, 22, 14, 6,
       64, 56, 48, 40, 32, 24, 16, 8, 57, 49, 41, 33, 25, 17, 9, 1, 59, 51, 43, 35, 27, 19, 11, 3,
       61, 53, 45, 37, 29, 21, 13, 5, 63, 55, 47, 39, 31, 23, 15, 7]
_FP = [40, 8, 48, 16, 56, 24, 64, 32, 39, 7, 47, 15, 55, 23, 63, 31, 38, 6, 46, 14, 54, 22, 62, 30,
       37, 5, 45, 13, 53, 21, 61, 29, 36, 4, 44, 12, 52, 20, 60, 28, 35, 3, 43, 11, 51, 19, 59, 27,
       34, 2, 42, 10, 50, 18, 58, 26, 33, 1, 41, 9, 49, 17, 57, 25]
_E = [32, 1, 2, 3, 4, 5, 4, 5, 6, 7, 8, 9, 8, 9, 10, 11, 12, 13, 12, 13, 14, 15, 16, 17,
      16, 17, 18, 19, 20, 21, 20, 21, 22, 23, 24, 25, 24, 25, 26, 27, 28, 29, 28, 29, 30, 31, 32, 1]
_P = [16, 7, 20, 21, 29, 12, 28, 17, 1, 15, 23, 26, 5, 18, 31, 10,
      2, 8, 24, 14, 32, 27, 3, 9, 19, 13, 30, 6, 22, 11, 4, 25]
_PC1 = [57, 49, 41, 33, 25, 17, 9, 1, 58, 50, 42, 34, 26, 18, 10, 2, 59, 51, 43, 35, 27, 19, 11, 3,
        60, 52, 44, 36, 63, 55, 47, 39, 31, 23, 15, 7, 62, 54, 46, 38, 30, 22, 14, 6, 61, 53, 45, 37,
        29, 21, 13, 5, 28, 20, 12, 4]
_PC2 = [14, 17, 11, 24, 1, 5, 3, 28, 15, 6, 21, 10, 23, 19, 12, 4, 26, 8, 16, 7, 27, 20, 13, 2,
        41, 52, 31, 37, 47, 55, 30, 40, 51, 45, 33, 48, 44, 49, 39, 56, 34, 53, 46, 42, 50, 36, 29, 32]
_SHIFTS = [1, 1, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2, 2, 2, 1]
_S = [
    [14, 4, 13, 1, 2, 15, 11, 8, 3, 10, 6, 12, 5, 9, 0, 7, 0, 15, 7, 4, 14, 2, 13, 1, 10, 6, 12, 11, 9, 5, 3, 8,
     4, 1, 14, 8, 13, 6, 2, 11, 15, 12, 9, 7, 3, 10, 5, 0, 15, 12, 8, 2, 4, 9, 1, 7, 5, 11, 3, 14, 10, 0, 6, 13],
    [15, 1, 8, 14, 6, 11, 3, 4, 9, 7, 2, 13, 12, 0, 5, 10, 3, 13, 4, 7, 15, 2, 8, 14, 12, 0, 1, 10, 6, 9, 11, 5,
     0, 14, 7, 11, 10, 4, 13, 1, 5, 8, 12, 6, 9, 3, 2, 15, 13, 8, 10, 1, 3, 15, 4, 2, 11, 6, 7, 12, 0, 5, 14, 9],
    [10, 0, 9, 14, 6, 3, 15, 5, 1, 13, 12, 7, 11, 4, 2, 8, 13, 7, 0, 9, 3, 4, 6, 10, 2, 8, 5, 14, 12, 11, 15, 1,
     13, 6, 4, 9, 8, 15, 3, 0, 11, 1, 2, 12, 5, 10, 14, 7, 1, 10, 13, 0, 6, 9, 8, 7, 4, 15, 14, 3, 11, 5, 2, 12],
    [7, 13, 14, 3, 0, 6, 9, 10, 1, 2, 8, 5, 11, 12, 4, 15, 13, 8, 11, 5, 6, 15, 0, 3, 4, 7, 2, 12, 1, 10, 14, 9,
     10, 6, 9, 0, 12, 11, 7, 13, 15, 1, 3, 14, 5, 2, 8, 4, 3, 15, 0, 6, 10, 1, 13, 8, 9, 4, 5, 11, 12, 7, 2, 14],
    [2, 12, 4, 1, 7, 10, 11, 6, 8, 5, 3, 15, 13, 0, 14, 9, 14, 11, 2, 12, 4, 7, 13, 1, 5, 0, 15, 10, 3, 9, 8, 6,
     4, 2, 1, 11, 10, 13, 7, 8, 15, 9, 12, 5, 6, 3, 0, 14, 11, 8, 12, 7, 1, 14, 2, 13, 6, 15, 0, 9, 10, 4, 5, 3],
    [12, 1, 10, 15, 9, 2, 6, 8, 0, 13, 3, 4, 14, 7, 5, 11, 10, 15, 4, 2, 7, 12, 9, 5, 6, 1, 13, 14, 0, 11, 3, 8,
     9, 14, 15, 5, 2, 8, 12, 3, 7, 0, 4, 10, 1, 13, 11, 6, 4, 3, 2, 12, 9, 5, 15, 10, 11, 14, 1, 7, 6, 0, 8, 13],
    [4, 11, 2, 14, 15, 0, 8, 13, 3, 12, 9, 7, 5, 10, 6, 1, 13, 0, 11, 7, 4, 9, 1, 10, 14, 3, 5, 12, 2, 15, 8, 6,
     1, 4, 11, 13, 12, 3, 7, 14, 10, 15, 6, 8, 0, 5, 9, 2, 6, 11, 13, 8, 1, 4, 10, 7, 9, 5, 0, 15, 14, 2, 3, 12],
    [13, 2, 8, 4, 6, 15, 11, 1, 10, 9, 3, 14, 5, 0, 12, 7, 1, 15, 13, 8, 10, 3, 7, 4, 12, 5, 6, 11, 0, 14, 9, 2,
     7, 11, 4, 1, 9, 12, 14, 2, 0, 6, 10, 13, 15, 3, 5, 8, 2, 1, 14, 7, 4, 10, 8, 13, 15, 12, 9, 0, 3, 5, 6, 11],
]


def _permute(value: int, table: list[int], width: int) -> int:
    out = 0
    for position in table:
        out = (out << 1) | ((value >> (width - position)) & 1)
    return out


def _subkeys(key: bytes) -> list[int]:
    cd = _permute(int.from_bytes(key, "big"), _PC1, 64)
    c, d = cd >> 28, cd & 0xFFFFFFF
    keys = []
    for shift in _SHIFTS:
        c = ((c << shift) | (c >> (28 - shift))) & 0xFFFFFFF
        d = ((d << shift) | (d >> (28 - shift))) & 0xFFFFFFF
        keys.append(_permute((c << 28) | d, _PC2, 56))
    return keys


def _des_block(subkeys: list[int], block: bytes) -> bytes:
    data = _permute(int.from_bytes(block, "big"), _IP, 64)
    left, right = data >> 32, data & 0xFFFFFFFF
    for subkey in subkeys:
        x = _permute(right, _E, 32) ^ subkey
        s_out = 0
        for i in range(8):
            six = (x >> (42 - 6 * i)) & 0x3F
            s_out = (s_out << 4) | _S[i][(((six & 0x20) >> 4) | (six & 1)) * 16 + ((six >> 1) & 0xF)]
        left, right = right, left ^ _permute(s_out, _P, 32)
    return _permute((right << 32) | left, _FP, 64).to_bytes(8, "big")


def vnc_response(password: str, challenge: bytes) -> bytes:
    """The 16-byte answer to a VNC authentication challenge."""
    key = password.encode("latin-1", "replace")[:PASSWORD_MAX].ljust(PASSWORD_MAX, b"\0")
    subkeys = _subkeys(bytes(int(f"{b:08b}"[::-1], 2) for b in key))
    return _des_block(subkeys, challenge[:8]) + _des_block(subkeys, challenge[8:16])


# ---- the QEMU side -------------------------------------------------------------------------------

async def _read(reader: asyncio.StreamReader, n: int) -> bytes:
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        raise RfbError("the VNC server closed the connection during the handshake") from None


async def login(host: str, port: int, password: str, timeout: float = 30.0
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a VNC server and authenticate (RFB 3.8, VNC authentication, or none when the server
    asks for none); returns the streams positioned where the client sends ClientInit."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise RfbError(f"cannot reach the VNC server: {exc.__class__.__name__}") from None
    try:
        await asyncio.wait_for(_authenticate(reader, writer, password), timeout)
    except BaseException as exc:
        writer.close()
        if isinstance(exc, asyncio.TimeoutError):
            raise RfbError("the VNC server did not finish the handshake in time") from None
        raise
    return reader, writer


async def _authenticate(reader, writer, password: str) -> None:
    version = await _read(reader, 12)
    if not version.startswith(b"RFB 003."):
        raise RfbError("not an RFB server")
    writer.write(VERSION_38)
    count = (await _read(reader, 1))[0]
    if count == 0:
        length = struct.unpack(">I", await _read(reader, 4))[0]
        reason = (await _read(reader, min(length, 1024))).decode(errors="replace")
        raise RfbError(f"the VNC server refused the connection: {reason}")
    types = await _read(reader, count)
    if SEC_VNC in types:
        writer.write(bytes([SEC_VNC]))
        challenge = await _read(reader, 16)
        writer.write(vnc_response(password, challenge))
    elif SEC_NONE in types:
        writer.write(bytes([SEC_NONE]))
    else:
        raise RfbError(f"the VNC server offers no known security type ({list(types)})")
    await writer.drain()
    if struct.unpack(">I", await _read(reader, 4))[0] != 0:
        raise RfbError("the VNC server refused the password")


# ---- the browser side ----------------------------------------------------------------------------

def offer_none() -> bytes:
    """What the proxy sends the browser first: its version."""
    return VERSION_38


def answer_none(client_version: bytes) -> tuple[bytes, int]:
    """After the browser's 12-byte version: (bytes to send, how many bytes the browser will answer
    before ClientInit). 3.7 and 3.8 get the list [None] (and the browser picks it: 1 byte); 3.3 is
    told the type outright."""
    if not client_version.startswith(b"RFB 003."):
        raise RfbError("the browser is not an RFB client")
    minor = int(client_version[8:11]) if client_version[8:11].isdigit() else 0
    if minor >= 7:
        return bytes([1, SEC_NONE]), 1
    return struct.pack(">I", SEC_NONE), 0


def security_result(client_version: bytes) -> bytes:
    """3.8 sends a SecurityResult even for None; older versions do not."""
    minor = int(client_version[8:11]) if client_version[8:11].isdigit() else 0
    return struct.pack(">I", 0) if minor >= 8 else b""
