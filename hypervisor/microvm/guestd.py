"""``oh-guest``: the workspace guest program, its wire protocol and how it is built.

oh-guest (C, ``guest/oh-guest.c``) runs in every workspace VM as root and serves the virtio-serial
port ``org.openhosting.guest`` (``/dev/virtio-ports/org.openhosting.guest``; libvirt exposes the host
end as a Unix socket). The host side is `guest_channel.GuestChannel`.

Wire format: one byte stream in each direction, carrying frames

    type (u8) | channel (u32, big endian) | length (u32, big endian) | payload (length ≤ 65536 bytes)

plus the one-byte NOP (type 0, no header), which the host sends in a run of MAX_PAYLOAD + 9 bytes
before every HELLO: whatever frame an earlier connection left half-read in the guest is completed by
NOPs, and the HELLO is read in step. A frame that cannot be (type unknown, payload too long) puts the
guest out of step: it drops every channel and looks for the next HELLO.

Connection: the host sends NOPs + HELLO(chan 0, ``OHGUEST1`` + 8 random bytes); the guest drops
every open channel (their processes are killed, PTY shells hung up, partial uploads removed), throws
away whatever it had queued, and echoes the HELLO. The host ignores every byte before that echo.

Channels: the host picks a fresh channel id and sends OPEN with ``key=value\\0`` records, the first
being ``op=…``; every channel ends with exactly one END (``key=value\\0`` records) or ERROR (``kind``,
``errno``, ``message``), after which the guest ignores frames for it. Host → guest: DATA (input),
EOF, WINDOW (u32 credit), RESIZE (u16 rows, u16 cols), CLOSE (cancel). Guest → host: OK (the
operation started; records), DATA (stdout, file content, PTY output, list entries), STDERR,
WINDOW, END, ERROR.

Flow control: each direction of each channel starts with WINDOW (256 KiB) bytes of credit; a side
sends DATA/STDERR only against credit and returns credit (WINDOW frames) as it consumes. The guest
reads a child's pipe only while it has credit and its outgoing buffer holds less than 1 MiB, so a
slow reader stalls that one producer (its pipe fills) and nothing else; the guest's memory stays
bounded whatever the host or the programs do.

Operations (records of OPEN; every op takes ``uid``/``gid``, default the workspace user, uid 1000;
file ops take ``beneath=DIR``: paths are then resolved inside DIR and may not leave it, not even
through symbolic links: kind ``outside``):

=========  ===============================================  ==========================================
op         OPEN records                                     then
=========  ===============================================  ==========================================
exec       argv (repeated), env NAME=VALUE (repeated),      OK pid; DATA/STDERR; END exit | signal,
           clearenv, cwd, stdin=1, timeout_ms,              timed_out, cancelled. The process runs in
           kill_after_ms (default 2000)                     its own session; on timeout or CLOSE its
                                                            group gets SIGTERM, kill_after_ms later
                                                            SIGKILL; when it exits, what it left in
                                                            its group is killed
spawn      argv, env, cwd, stdout=PATH, stderr=PATH         END pid; the process (own session)
                                                            outlives the channel
put        path, mode (octal), limit                        OK; DATA…, EOF; END size. Written to a
                                                            temporary file in the directory as the
                                                            user, renamed over the target at EOF
get        path                                             OK type size mode mtime; DATA…; END size
stat       path, follow (default 1)                         END type size mode mtime uid gid
list       path                                             OK; DATA entries; END. Entry: name, type,
                                                            type followed (links), size, mode, mtime,
                                                            each NUL-ended
untar      dest, limit (bytes, default 16 MiB)              OK; DATA (tar.gz or tar)…, EOF; END
                                                            [members]. Unless dest is empty, the guest
                                                            lists the archive (tar -t, as the user;
                                                            END has the count) and refuses members
                                                            under an existing symbolic link; then it
                                                            extracts (tar -x; gzip by the magic)
pty        rows, cols, cwd, env, argv (default the          OK pid; DATA both ways, RESIZE; END exit |
           user's login shell)                              signal when the shell ends; CLOSE hangs
                                                            the terminal up (END cancelled)
sync-time  sec, nsec, seed (hex)                            END clock, seeded
=========  ===============================================  ==========================================

Error kinds: notfound, noparent (put: the parent directory is missing), access (EACCES, EPERM,
EROFS), outside (beneath), notfile, notdir, exists, nospace, toolarge, badarchive, unsafe, busy,
badrequest, io.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from ..errors import HypervisorError
from . import build as guest_build
from .image import GUEST_CONTROL

#: The virtio-serial port oh-guest serves.
PORT_NAME = GUEST_CHANNEL = "org.openhosting.guest"
#: The terminal port: a second oh-guest serves only PTY sessions and commands on it (``--only``), held by
#: the terminal service (controlplane/terminal), while API workers and the agent take turns on the first.
PTY_CHANNEL = "org.openhosting.pty"
PTY_OPS = "pty,exec"
#: Where templates put the binary in the guest (tmpfs: the image does not carry it).
GUEST_PATH = f"{GUEST_CONTROL}/oh-guest"
SOURCE_PATH = guest_build.SOURCES / "oh-guest.c"

MAGIC = b"OHGUEST1"
MAX_PAYLOAD = 65536
HEAD = struct.Struct(">BII")
WINDOW = 256 * 1024

NOP, HELLO, OPEN, DATA, STDERR, EOF, CREDIT, RESIZE, CLOSE, OK, END, ERROR = range(12)


def frame(kind: int, channel: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload of {len(payload)} bytes")
    return HEAD.pack(kind, channel, len(payload)) + payload


def records(pairs) -> bytes:
    """``key=value\\0`` records; refuses a NUL in a key or value (paths and argv cannot hold one)."""
    out = []
    for key, value in pairs:
        item = f"{key}={value}".encode() if not isinstance(value, bytes) else key.encode() + b"=" + value
        if b"\0" in item:
            raise GuestBadRequest(reason=f"a NUL byte in {key}")
        out.append(item + b"\0")
    return b"".join(out)


def parse_records(payload: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in payload.split(b"\0"):
        if b"=" in item:
            key, _, value = item.partition(b"=")
            out[key.decode()] = value.decode(errors="surrogateescape")
    return out


# --- errors ------------------------------------------------------------------------------------

class GuestError(HypervisorError):
    """Anything oh-guest or its channel reported. ``kind`` is the guest's error kind."""
    template = "guest: {reason}"
    kind = "io"


class GuestGone(GuestError):
    template = "the guest channel is closed: {reason}"


class GuestTimeout(GuestError):
    template = "the guest did not answer within {timeout} s ({what})"


class GuestProtocolError(GuestError):
    template = "the guest channel is out of step: {reason}"


class GuestNotFound(GuestError):
    kind = "notfound"


class GuestNoParent(GuestError):
    kind = "noparent"


class GuestPermissionDenied(GuestError):
    kind = "access"


class GuestOutside(GuestPermissionDenied):
    kind = "outside"


class GuestNotAFile(GuestError):
    kind = "notfile"


class GuestNotADirectory(GuestError):
    kind = "notdir"


class GuestTooLarge(GuestError):
    kind = "toolarge"


class GuestBadArchive(GuestError):
    kind = "badarchive"


class GuestUnsafeArchive(GuestError):
    kind = "unsafe"
    template = "archive refused: {reason}"


class GuestBusy(GuestError):
    kind = "busy"


class GuestBadRequest(GuestError):
    kind = "badrequest"


KINDS = {cls.kind: cls for cls in (GuestNotFound, GuestNoParent, GuestPermissionDenied, GuestOutside,
                                   GuestNotAFile, GuestNotADirectory, GuestTooLarge, GuestBadArchive,
                                   GuestUnsafeArchive, GuestBusy, GuestBadRequest)}


def error_from(payload: bytes) -> GuestError:
    fields = parse_records(payload)
    kind = fields.get("kind", "io")
    cls = KINDS.get(kind, GuestError)
    exc = cls("guest: {reason}", reason=fields.get("message", kind), errno=int(fields.get("errno", "0") or 0))
    exc.kind = kind
    return exc


# --- the binary --------------------------------------------------------------------------------

def build(cache_dir: Path, *, static: bool = True, compiler: str | None = None) -> Path:
    """The ``oh-guest`` binary for this source, compiled into ``cache_dir`` once (static for guests,
    by `build.compile_static`; tests that run it on the host may build it dynamic). Raises
    GuestError when it cannot be built."""
    if static:
        made = guest_build.compile_static(SOURCE_PATH, cache_dir, compiler=compiler)
        if made is None:
            raise GuestError(reason="oh-guest cannot be built (no C compiler or static libc)")
        return made
    target = Path(cache_dir) / f"oh-guest-{guest_build.digest(SOURCE_PATH)}-dyn"
    if target.exists():
        return target
    cc = compiler or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise GuestError(reason="no C compiler to build oh-guest")
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        out = Path(tmp) / "oh-guest"
        done = subprocess.run([cc, "-g", "-O2", "-Wall", "-o", str(out), str(SOURCE_PATH)],
                              capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            raise GuestError(reason=f"building oh-guest failed: {done.stderr[-2000:]}")
        out.replace(target)
    return target


def guest_argv(path: str = GUEST_PATH) -> list[str]:
    """How a template starts oh-guest in the guest (as root; the template runs it in its own session)."""
    return [path, "--port", PORT_NAME]


def program(cache_dir: Path) -> tuple[Path, list[str]] | None:
    """The registry's build hook (`programs.GuestProgram`): the static binary and its argv, or None
    when it cannot be built here (the template then leaves oh-guest out)."""
    try:
        return build(cache_dir), guest_argv()
    except GuestError:
        return None


def pty_argv(path: str = GUEST_PATH) -> list[str]:
    """How a template starts the terminal port's oh-guest: the same binary, PTY sessions and commands
    only, no user set-up (the first instance makes the user)."""
    return [path, "--port", PTY_CHANNEL, "--only", PTY_OPS, "--no-user-setup"]


def pty_program(cache_dir: Path) -> tuple[Path, list[str]] | None:
    """The registry's build hook for the terminal port (`programs.GuestProgram`)."""
    try:
        return build(cache_dir), pty_argv()
    except GuestError:
        return None
