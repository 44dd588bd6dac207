"""oh-guest run on the host, as root, against a socketpair standing in for the VM's port.

The workspace user is a uid with no passwd entry (setuid does not need one); the workspace is a
temporary directory that user owns, beside an ``outside`` directory the tests watch for writes.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypervisor.microvm import guestd
from hypervisor.microvm.guest_channel import GuestChannel, socketpair

UID = GID = 64123
CACHE = Path(os.environ.get("OPENHOSTING_TEST_STATE_ROOT", "/var/tmp/openhosting-tests")) / "oh-guest-build"


@dataclass
class HostGuest:
    channel: GuestChannel | None
    process: subprocess.Popen
    root: Path
    sock: object = None                          # the host end, when started raw

    @property
    def workspace(self) -> Path:
        return self.root / "home" / "workspace"

    @property
    def outside(self) -> Path:
        return self.root / "outside"

    def stop(self) -> int:
        if self.channel is not None:
            self.channel.close()
        else:
            self.sock.close()
        try:
            return self.process.wait(timeout=10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            shutil.rmtree(self.root, ignore_errors=True)


def start(raw: bool = False, args: tuple[str, ...] = (), **kw) -> HostGuest:
    """oh-guest on a socketpair; ``raw``: no GuestChannel yet (the test speaks on ``sock``); ``args``:
    more of oh-guest's options (e.g. ``--only``)."""
    binary = guestd.build(CACHE, static=False)
    root = Path(tempfile.mkdtemp(prefix="oh-guest-"))
    root.chmod(0o755)
    (root / "outside").mkdir(mode=0o777)
    (root / "outside").chmod(0o777)            # the user could write here if the guest let it
    (root / "outside" / "secret").write_text("root's\n")
    host_end, guest_end = socketpair()
    process = subprocess.Popen([str(binary), "--fd", str(guest_end.fileno()), "--uid", str(UID), "--gid", str(GID),
                                "--home", str(root / "home"), "--no-clock", *args], pass_fds=[guest_end.fileno()])
    guest_end.close()
    if raw:
        return HostGuest(None, process, root, host_end)
    try:
        channel = GuestChannel(host_end, **kw)
    except BaseException:
        process.kill()
        raise
    return HostGuest(channel, process, root)


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    """Every name below ``path`` with its size and mtime (to prove nothing was written there)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def make_tar(members) -> bytes:
    """A tar.gz of (name, kind, data-or-target) with kind in file, dir, symlink, hardlink, fifo, chr."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == "dir" else 0o644
            data = None
            if kind == "file":
                data = extra if isinstance(extra, bytes) else str(extra or "").encode()
                info.size = len(data)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, extra
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, extra
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()
