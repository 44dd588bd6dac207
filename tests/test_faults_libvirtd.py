"""libvirtd restarted under load: the API and the agent reconnect, reconcile, and nothing is stuck.

libvirtd is shared by everything on this host: the test restarts it the way tools/setup.sh starts it
(virtlogd stays; libvirtd under `tini -s`) and, whatever happens, leaves a running libvirtd behind.
During the restart a request may get a clear "try again" error; after it, everything works: the
running server is still running and can be stopped and started, the agent notices a QEMU that dies,
sandboxes run, every sandbox started under load ended, and the pool is back to its size.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from .faultkit import (clone_overlays, domains, prefix, qemu_pids, sandbox_body, sandbox_result, server_status,
                       wait_for, warm_pool)

pytestmark = pytest.mark.vm

POOL = 2
LOG = "/var/log/openhosting/libvirtd.log"


def libvirtd_pid() -> int | None:
    out = subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


def libvirtd_answers() -> bool:
    return subprocess.run(["virsh", "version"], capture_output=True, timeout=30).returncode == 0


def start_libvirtd() -> None:
    os.makedirs(os.path.dirname(LOG), exist_ok=True)
    subprocess.run(["bash", "-c", f"setsid tini -s -- libvirtd >>{LOG} 2>&1 </dev/null &"], check=True)


def restart_libvirtd() -> None:
    pid = libvirtd_pid()
    assert pid, "no libvirtd to restart"
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: libvirtd_pid() != pid, timeout=60, interval=0.1, what="libvirtd to exit")
    start_libvirtd()
    wait_for(libvirtd_answers, timeout=60, what="libvirtd to answer again")


@pytest.fixture
def restore_libvirtd():
    yield
    if libvirtd_pid() is None:
        start_libvirtd()
    wait_for(libvirtd_answers, timeout=60, what="libvirtd to answer (restored)")


def test_libvirtd_restart_under_load(fresh_installation, restore_libvirtd):
    inst = fresh_installation(OPENHOSTING_SANDBOX_POOL_SIZE=str(POOL), OPENHOSTING_SANDBOX_USER_LIMIT="16")
    inst.admin("image", "build", "base")
    inst.stop_agent()
    inst.start_agent()
    api = inst.client(inst.create_user("libvirtd"))

    def sandbox(word: str):
        body, ctype = sandbox_body(f"echo {word}")
        return api.post("/api/sandboxes", body, headers={"Content-Type": ctype})

    warm_pool(api)
    sid = api.post_kv("/servers/create", {"name": "s", "cpu": "1000", "mem": "128", "persistent": "true"}).kv()["server"]
    assert server_status(api, sid) == "active"

    # Load: sandbox submitters, list readers, drive writers; every answer is a status, never a hang.
    stop = threading.Event()
    boxes: list[str] = []
    statuses: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def submit():
        i = 0
        while not stop.is_set():
            r = sandbox(f"load{i}")
            with lock:
                statuses.append((r.status, r.error))
                if r.status == 201:
                    boxes.append(r.json())
            i += 1
            time.sleep(0.3)

    def read_and_write():
        drive = api.create_drive(1 << 20)
        while not stop.is_set():
            for r in (api.get("/servers/info"), api.get("/api/sandboxes"),
                      api.post(f"/drives/{drive}/write/0", os.urandom(65536))):
                with lock:
                    statuses.append((r.status, r.error))
            time.sleep(0.1)

    workers = [threading.Thread(target=submit) for _ in range(2)] + [threading.Thread(target=read_and_write)]
    for t in workers:
        t.start()
    try:
        time.sleep(3)
        restart_libvirtd()
        time.sleep(5)
    finally:
        stop.set()
        for t in workers:
            t.join(timeout=300)
    # A 5xx only as the clear "the hypervisor is not reachable right now; try again" (kind system).
    assert all(status < 500 or error == "system" for status, error in statuses), statuses
    assert boxes, "no sandbox was submitted under load"

    # The server outlived the restart, and the API's connection works again: stop, start.
    wait_for(lambda: server_status(api, sid) == "active" and qemu_pids(inst, sid), timeout=30,
             what="the server to show active")
    assert api.post(f"/servers/{sid}/stop").status == 204
    assert server_status(api, sid) == "stopped"
    assert api.post(f"/servers/{sid}/start").status == 204
    # The agent's reconciliation is connected again: it notices a QEMU that dies.
    (pid,) = qemu_pids(inst, sid)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: server_status(api, sid) == "stopped", timeout=60, what="the agent to see the server stop")

    # Nothing stuck: every sandbox ended (a result or a clear error), new ones run, the pool settles.
    for box in boxes:
        got = sandbox_result(api, box)
        assert got["return_code"] == 0 or "openhosting:" in (got["logs"] or "") or got["timed_out"], got
    after = sandbox_result(api, sandbox("after").json())
    assert after["logs"] == "after\n", after

    def settled():
        vms = set(domains(inst, running_only=True)) - {f"{prefix(inst)}{sid}"}
        return vms == set(clone_overlays(inst)) and len(vms) <= POOL

    wait_for(settled, timeout=180, what="the sandbox pool to settle to its size")
    assert api.post(f"/servers/{sid}/destroy").status == 204
