"""A minimal RFB (VNC) client for tests: version handshake, VNC authentication, one framebuffer update.

VNC authentication's answer to the challenge is the console proxy's own (`controlplane.proxy.rfb`:
DES from FIPS 46-3's tables, checked there against a worked example), so there is one DES here.
"""

from __future__ import annotations

import socket
import struct

from controlplane.proxy.rfb import vnc_response


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        piece = sock.recv(n - len(buf))
        if not piece:
            raise ConnectionError(f"VNC server closed the connection after {len(buf)} of {n} bytes")
        buf += piece
    return buf


def handshake(host: str, port: int, password: str, timeout: float = 20) -> dict:
    """RFB 3.8 with VNC authentication; returns the server's size/name and the first update's header.

    Raises PermissionError when the server refuses the password.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        version = _recv(sock, 12)
        if not version.startswith(b"RFB "):
            raise ConnectionError(f"not an RFB server: {version!r}")
        sock.sendall(b"RFB 003.008\n")
        count = _recv(sock, 1)[0]
        if count == 0:
            reason_len = struct.unpack(">I", _recv(sock, 4))[0]
            raise ConnectionError(_recv(sock, reason_len).decode(errors="replace"))
        types = _recv(sock, count)
        if 2 not in types:
            raise ConnectionError(f"server offers no VNC authentication: {list(types)}")
        sock.sendall(bytes([2]))
        sock.sendall(vnc_response(password, _recv(sock, 16)))
        if struct.unpack(">I", _recv(sock, 4))[0] != 0:
            raise PermissionError("VNC authentication failed")
        sock.sendall(b"\x01")  # ClientInit: shared
        width, height = struct.unpack(">HH", _recv(sock, 4))
        _recv(sock, 16)  # pixel format
        name = _recv(sock, struct.unpack(">I", _recv(sock, 4))[0]).decode(errors="replace")
        # FramebufferUpdateRequest, not incremental, whole screen
        sock.sendall(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
        while True:
            kind = _recv(sock, 1)[0]
            if kind == 0:  # FramebufferUpdate
                _pad, rects = struct.unpack(">BH", _recv(sock, 3))
                return {"width": width, "height": height, "name": name, "rectangles": rects}
            if kind == 2:  # Bell
                continue
            raise ConnectionError(f"unexpected server message {kind}")
