"""A server's QEMU process killed from outside (as the OOM killer or an operator would): the server
shows stopped (persistent) or is gone (not persistent), its drive claims are released (the drive can be
written and claimed again), and the next start works."""

from __future__ import annotations

import os
import signal

import pytest

from .faultkit import domains, prefix, qemu_pids, server_status, upload_gzip, wait_for
from .guestkit import build_test_disk

pytestmark = pytest.mark.vm


def test_qemu_killed_from_outside(fresh_installation):
    inst = fresh_installation()
    api = inst.client(inst.create_user("qemukill"))
    image = build_test_disk().read_bytes()
    keep_disk = upload_gzip(api, image, name="keep")
    gone_disk = upload_gzip(api, image, name="gone")
    create = {"name": "vm", "cpu": "2000", "mem": "128"}
    keep = api.post_kv("/servers/create", {**create, "block:0": keep_disk, "persistent": "true"}).kv()["server"]
    gone = api.post_kv("/servers/create", {**create, "block:0": gone_disk}).kv()["server"]
    for sid, disk in ((keep, keep_disk), (gone, gone_disk)):
        assert server_status(api, sid) == "active"
        assert f"{sid}:block:0" in api.get(f"/drives/{disk}/info").kv()["claimed"]
        assert api.post(f"/drives/{disk}/write/0", b"x").status == 409  # claimed: no writes

    for sid in (keep, gone):
        (pid,) = qemu_pids(inst, sid)
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: server_status(api, keep) == "stopped", what="the persistent server to show stopped")
    wait_for(lambda: server_status(api, gone) is None, what="the other server to be destroyed")
    # No VM runs; a stopped persistent server keeps its (shut off) definition, the other has none.
    assert not domains(inst, running_only=True) and not qemu_pids(inst)
    assert domains(inst) in ([], [f"{prefix(inst)}{keep}"])
    for disk in (keep_disk, gone_disk):
        info = api.get(f"/drives/{disk}/info").kv()
        assert "claimed" not in info, info
    # Released for real: the drive can be written (then put back) and claimed by another server.
    assert api.post(f"/drives/{gone_disk}/write/0", image[:512]).status == 204
    other = api.post_kv("/servers/create/stopped", {**create, "block:0": gone_disk}).kv()["server"]
    assert api.post(f"/servers/{other}/start").status == 204
    assert api.post(f"/servers/{other}/destroy").status == 204

    # The next start works.
    assert api.post(f"/servers/{keep}/start").status == 204
    assert server_status(api, keep) == "active"
    assert domains(inst, running_only=True) == [f"{prefix(inst)}{keep}"]
    assert len(qemu_pids(inst, keep)) == 1
    assert api.post(f"/servers/{keep}/stop").status == 204
    assert "claimed" not in api.get(f"/drives/{keep_disk}/info").kv()
    assert api.post(f"/servers/{keep}/destroy").status == 204
    assert not domains(inst)
