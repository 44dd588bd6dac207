"""kill -9 of the agent while an imaging job runs, a server starts and 4 sandboxes run.

After the agent starts again: the imaging job finishes with the right bytes, the server is running or
stopped (what the API says matches libvirt), every sandbox ends with a result or a clear error, and no
sandbox domain, clone overlay, saved state or socket is left behind (once the agent stops cleanly,
none of its VMs remain at all).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from .faultkit import (channel_sockets, clone_overlays, domains, kill9, post_sandbox, prefix, sandbox_result,
                       saved_states, server_status, state_sockets, upload_gzip, wait_for, warm_pool)
from .guestkit import build_test_disk

pytestmark = pytest.mark.vm

MiB = 1024**2
POOL = 2


def file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(4 * MiB):
            h.update(piece)
    return h.hexdigest()


def test_kill9_agent_mid_work(fresh_installation):
    inst = fresh_installation(OPENHOSTING_SANDBOX_POOL_SIZE=str(POOL), OPENHOSTING_IMAGING_RATE="12M",
                              OPENHOSTING_SANDBOX_USER_LIMIT="8")
    inst.admin("image", "build", "base")
    inst.stop_agent()
    inst.start_agent()  # with the image installed: its pool starts at once
    api = inst.client(inst.create_user("agentkill"))

    # A warm pool first (one run proves it), a source drive to image, a bootable disk for the server.
    warm_pool(api)
    src = api.create_drive(48 * MiB, name="src")
    for i in range(0, 48, 6):
        assert api.post(f"/drives/{src}/write/{i * MiB}", os.urandom(MiB)).status == 204
    dst = api.create_drive(48 * MiB, name="dst")
    disk = upload_gzip(api, build_test_disk().read_bytes(), name="boot")

    # Work in flight: 4 sandboxes, an imaging job (about 4 s at 12 MB/s), a server being started.
    boxes = [post_sandbox(api, f"sleep 3; echo done-{i}") for i in range(4)]
    assert api.post(f"/drives/{dst}/image/{src}").status == 204
    started: dict = {}

    def start_server():
        started["r"] = api.post_kv("/servers/create", {"name": "s", "cpu": "2000", "mem": "128",
                                                       "block:0": disk, "persistent": "true"})

    t = threading.Thread(target=start_server)
    wait_for(lambda: "%" in api.get(f"/drives/{dst}/info").kv().get("imaging", ""), timeout=60,
             interval=0.05, what="the imaging job to make progress")
    t.start()
    time.sleep(0.3)
    running_before = [n for n in domains(inst) if n in clone_overlays(inst)]
    kill9(inst.agent)
    t.join(timeout=120)
    inst.start_agent()

    # The server: created (the API starts it) and, either way, not stuck between states.
    r = started["r"]
    assert r.status in (200, 409, 500), r.text
    if r.status == 200:
        sid = r.kv()["server"]
        time.sleep(2 * 1 + 1)  # two reconciliation passes of the new agent (interval 1 s)
        status = server_status(api, sid)
        assert status in ("active", "stopped")
        live = f"{prefix(inst)}{sid}" in domains(inst, running_only=True)
        assert live == (status == "active"), (status, live)
        claimed = api.get(f"/drives/{disk}/info").kv().get("claimed", "")
        assert (sid in claimed) == (status == "active")

    # The imaging job finishes with the right bytes.
    def imaged():
        kv = api.get(f"/drives/{dst}/info").kv()
        assert "imaging:error" not in kv, kv
        return "imaging" not in kv

    wait_for(imaged, timeout=120, what="the imaging job to finish after the restart")
    drives = inst.state_dir / "drives"
    assert file_digest(drives / f"{dst}.raw") == file_digest(drives / f"{src}.raw")

    # Every sandbox ends: its result, or a clear error.
    for i, sid in enumerate(boxes):
        box = sandbox_result(api, sid)
        if box["return_code"] == 0:
            assert box["logs"] == f"done-{i}\n", box
        else:  # a clear error, not silence: the VM was lost, or the run's time was up
            assert "openhosting:" in box["logs"] or box["timed_out"], box

    # Nothing of the killed agent is left: the VMs it had (idle or running the 4) are gone, every
    # sandbox domain now has its overlay and every overlay its domain, at most a pool's worth of them.
    assert running_before, "the old agent had sandbox VMs"

    def settled():
        sandbox_domains = set(domains(inst)) - {f"{prefix(inst)}{started['r'].kv().get('server', '')}"}
        return sandbox_domains == set(clone_overlays(inst)) and len(sandbox_domains) <= POOL and sandbox_domains

    wait_for(settled, timeout=120, what="the sandbox pool to be back to its size")
    assert not set(running_before) & set(domains(inst))
    assert not saved_states(inst)
    # A clean stop takes every sandbox VM, overlay and socket with it.
    inst.stop_agent()
    if r.status == 200:
        api.post(f"/servers/{r.kv()['server']}/destroy")
    code = inst.agent.returncode  # -9: it did not stop within tests/support.py's 20 s and was killed
    try:
        wait_for(lambda: not domains(inst), timeout=120, what="no domain of this installation")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {domains(inst)} left; the agent exited with {code}") from None
    assert not clone_overlays(inst)
    assert not channel_sockets(inst)
    assert not state_sockets(inst)
