"""The drive pool's file system runs full: a size-limited tmpfs, mounted by the test (as root), holds the
whole state directory (drives and the SQLite database). Writes that do not fit get `507 full`, every
byte stored before is intact, and once a drive is destroyed (space freed) writes work again."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from .conftest import STATE_ROOT, random_pool
from .support import Installation

MiB = 1024**2
FS_SIZE = 48 * MiB
RESERVE = 4 * MiB


@pytest.fixture
def small_fs():
    if os.geteuid() != 0:
        pytest.fail("mounting the small pool needs root (the test suite runs as root here)")
    STATE_ROOT.mkdir(mode=0o711, parents=True, exist_ok=True)
    mount = Path(tempfile.mkdtemp(prefix="full-", dir=STATE_ROOT))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE},mode=0711", "ohfull", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


@pytest.mark.parametrize("reserve", [RESERVE, 0])
def test_pool_file_system_full(small_fs, reserve):
    inst = Installation(state_dir=small_fs, database_url=f"sqlite:///{small_fs}/openhosting.db",
                        env_extra={"OPENHOSTING_IP_POOL": random_pool(), "OPENHOSTING_POOL_RESERVE": str(reserve)})
    inst.start()
    try:
        api = inst.client(inst.create_user("full"))
        # Drives are sparse: creating them takes no space; writing does.
        drives = [api.create_drive(16 * MiB, name=f"d{i}") for i in range(4)]
        stored: dict[tuple[str, int], bytes] = {}
        full = None
        for drive in drives:
            for offset in range(0, 16 * MiB, 2 * MiB):
                data = os.urandom(2 * MiB)
                r = api.post(f"/drives/{drive}/write/{offset}", data)
                if r.status == 507:
                    full = (drive, offset, data)
                    break
                assert r.status == 204, r.text
                stored[(drive, offset)] = data
            if full:
                break
        assert full, "the small file system never filled up"
        drive, offset, data = full
        assert api.post(f"/drives/{drive}/write/{offset}", data).error == "full"
        # gzip chunks and small writes are refused the same way; nothing is half written.
        import gzip
        r = api.post(f"/drives/{drive}/write/{offset}", gzip.compress(data, 1), headers={"Content-Encoding": "gzip"})
        assert (r.status, r.error) == (507, "full"), r.text
        assert api.get(f"/drives/{drive}/read/{offset}/{2 * MiB}").body == bytes(2 * MiB)
        # The rest of the service still answers: metadata changes, reads, listings.
        assert api.post_kv(f"/drives/{drive}/set", {"name": "renamed"}).status == 200
        assert len(api.get("/drives/list").text.split()) == 4
        # Everything stored before is intact, through the API and on disk.
        for (d, off), want in stored.items():
            assert api.get(f"/drives/{d}/read/{off}/{2 * MiB}").body == want, (d, off)
        digests = {k: hashlib.sha256(v).hexdigest() for k, v in stored.items()}
        # Free space: destroy the last full drive written; the refused write then works.
        victim = drives[0] if drive != drives[0] else None
        if victim is None:  # the first drive alone filled it: free it by punching its chunks with zeros
            for (d, off) in list(stored)[:4]:
                assert api.post(f"/drives/{d}/write/{off}", bytes(2 * MiB)).status == 204
                del stored[(d, off)]
        else:
            assert api.post(f"/drives/{victim}/destroy").status == 204
            stored = {k: v for k, v in stored.items() if k[0] != victim}
        r = api.post(f"/drives/{drive}/write/{offset}", data)
        assert r.status == 204, r.text
        assert api.get(f"/drives/{drive}/read/{offset}/{2 * MiB}").body == data
        for (d, off), want in stored.items():
            got = api.get(f"/drives/{d}/read/{off}/{2 * MiB}").body
            assert hashlib.sha256(got).hexdigest() == digests[(d, off)], (d, off)
        # The installation survives a restart on the once-full file system.
        inst.stop_api()
        inst.start_api()
        assert api.get(f"/drives/{drive}/info").kv()["name"] == "renamed"
    finally:
        inst.stop()
        inst.purge_libvirt()
