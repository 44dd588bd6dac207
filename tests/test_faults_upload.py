"""kill -9 of the API (gunicorn master and workers) in the middle of a chunked gzip upload.

The upload tool talks through the recording proxy of test_tools.py, so the test knows which chunks
reached the API and which answers came back. With the API dead, the drive file itself is read: every
acknowledged chunk is there, whole; no chunk that never reached the API is; a chunk that was in
flight is, block by block, either its data or untouched zeros (the API died inside it). Then the API
starts again and the tool's resume command finishes the drive without sending an acknowledged chunk
again.
"""

from __future__ import annotations

import os
import signal
import threading

from .faultkit import kill9
from .test_tools import RESUME, WRITE, Proxy, created_drive, sh, tool_env

KiB, MiB = 1024, 1024**2
CHUNK = 64 * KiB
BLOCK = 4096


def mixed_image(size: int) -> bytes:
    """Compressible text and incompressible bytes, no all-zero 4 KiB block anywhere."""
    out, i = bytearray(), 0
    while len(out) < size:
        out += os.urandom(8 * KiB) if i % 2 else (f"line {i} of a compressible chunk\n" * 300).encode()[:8 * KiB]
        i += 1
    return bytes(out[:size])


def test_kill9_api_mid_upload(fresh_installation, tmp_path):
    inst = fresh_installation()
    user = inst.create_user("upload")
    size = 8 * MiB
    data = mixed_image(size)
    (tmp_path / "img").write_bytes(data)
    proxy = Proxy(inst.port)
    forwarded: set[int] = set()
    lock = threading.Lock()
    killed = threading.Event()

    def fault(method, path):
        m = WRITE.match(path)
        if m:
            with lock:
                forwarded.add(int(m.group(2)))
        return None  # forward it

    def after(method, path, status):
        with lock:
            if status != 204 or len(proxy.writes(204)) < 30 or killed.is_set():
                return
            killed.set()
        kill9(inst.api)  # master and workers at once, mid-stream

    proxy.fault, proxy.after = fault, after
    try:
        penv = tool_env(proxy.port, user)
        r = sh("openhosting-upload -c 64k -j 4 --retries 1 --retry-delay 0.1 img", penv, tmp_path)
        assert killed.is_set() and r.returncode == 1, r.stderr
        proxy.settle()
        drive = created_drive(r.stdout)
        acked = set(proxy.writes(204))
        with lock:
            sent = set(forwarded)
        assert 30 <= len(acked) < size // CHUNK

        # The API is dead: look at the drive's file itself.
        stored = (inst.state_dir / "drives" / f"{drive}.raw").read_bytes()
        assert len(stored) == size
        for off in range(0, size, CHUNK):
            got, want = stored[off:off + CHUNK], data[off:off + CHUNK]
            if off in acked:
                assert got == want, f"acknowledged chunk at {off} is not on the drive"
            elif off not in sent:
                assert got == bytes(len(got)), f"chunk at {off} never reached the API but is on the drive"
            else:  # in flight when the API died: its blocks are either written or untouched
                for b in range(0, len(got), BLOCK):
                    assert got[b:b + BLOCK] in (want[b:b + BLOCK], bytes(len(got[b:b + BLOCK]))), \
                        f"torn block at {off + b}"

        # The API comes back; the resume command finishes the job, without resending what was acked.
        command = RESUME.search(r.stderr).group(1)
        inst.start_api()
        proxy.upstream = inst.port
        proxy.after = None
        proxy.reset()
        r = sh(command, penv, tmp_path)
        assert r.returncode == 0, r.stderr
        again = set(proxy.writes())
        assert not acked & again
        assert acked | again == set(range(0, size, CHUNK))
        assert (inst.state_dir / "drives" / f"{drive}.raw").read_bytes() == data
        api = inst.client(user)
        assert api.get(f"/drives/{drive}/read/0/{size}").body == data
        assert not (tmp_path / "img.oh-upload").exists()
    finally:
        proxy.close()
        if inst.api and inst.api.poll() is None:
            inst.stop_api(signal.SIGTERM)
