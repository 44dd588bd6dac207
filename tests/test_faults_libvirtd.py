"""libvirtd restarted under load: the API and the agent reconnect, reconcile, and nothing is stuck.

libvirtd is shared by everything on this host: the test restarts it the way tools/setup.sh starts it
(virtlogd stays; libvirtd under `tini -s`) and, whatever happens, leaves a running libvirtd behind.
During the restart a request may get a clear "try again" error; after it, everything works: the
running server is still running and can be stopped and started, a server cycled through start and stop
during the restart shows what libvirt says, an imaging job finishes, and the agent notices a QEMU that
dies. (Sandboxes across a libvirtd restart: not here; their pool needs minutes of warm-up on a busy
TCG host.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from .faultkit import domains, prefix, qemu_pids, server_status, wait_for

pytestmark = pytest.mark.vm

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
    inst = fresh_installation()
    api = inst.client(inst.create_user("libvirtd"))
    server = {"cpu": "1000", "mem": "128", "persistent": "true"}
    keep = api.post_kv("/servers/create", {"name": "keep", **server}).kv()["server"]
    cycled = api.post_kv("/servers/create/stopped", {"name": "cycled", **server}).kv()["server"]
    assert server_status(api, keep) == "active"
    src = api.create_drive(32 << 20, name="src")
    assert api.post(f"/drives/{src}/write/{16 << 20}", os.urandom(1 << 20)).status == 204
    dst = api.create_drive(32 << 20, name="dst")

    # Load: a server cycling through start and stop, drive writes, list reads, an imaging job; every
    # answer is a status (never a hang), and a 5xx only the clear "try again" (kind system).
    stop = threading.Event()
    statuses: list[tuple[str, int, str | None]] = []
    lock = threading.Lock()

    def note(what, r):
        with lock:
            statuses.append((what, r.status, r.error))

    def cycle():
        while not stop.is_set():
            note("start", api.post(f"/servers/{cycled}/start"))
            time.sleep(0.5)
            note("stop", api.post(f"/servers/{cycled}/stop"))
            time.sleep(0.2)

    def read_and_write():
        drive = api.create_drive(1 << 20)
        while not stop.is_set():
            note("info", api.get("/servers/info"))
            note("list", api.get("/drives/info"))
            note("write", api.post(f"/drives/{drive}/write/0", os.urandom(65536)))
            time.sleep(0.1)

    workers = [threading.Thread(target=cycle), threading.Thread(target=read_and_write)]
    for t in workers:
        t.start()
    try:
        time.sleep(2)
        assert api.post(f"/drives/{dst}/image/{src}").status == 204
        restart_libvirtd()
        time.sleep(5)
    finally:
        stop.set()
        for t in workers:
            t.join(timeout=300)
    assert not any(t.is_alive() for t in workers), "a client hangs"
    assert all(status < 500 or error == "system" for _, status, error in statuses), statuses
    assert any(what == "start" and status == 204 for what, status, _ in statuses)

    # Nothing stuck: the cycled server settles to what libvirt says, the imaging job finishes.
    def consistent():
        status = server_status(api, cycled)
        live = f"{prefix(inst)}{cycled}" in domains(inst, running_only=True)
        return status in ("active", "stopped") and live == (status == "active")

    wait_for(consistent, timeout=60, what="the cycled server to match libvirt")
    wait_for(lambda: "imaging" not in api.get(f"/drives/{dst}/info").kv(), timeout=120, what="imaging")
    assert api.get(f"/drives/{dst}/read/{16 << 20}/{1 << 20}").body == \
        api.get(f"/drives/{src}/read/{16 << 20}/{1 << 20}").body

    # The server outlived the restart, and the API's connection works again: stop, start.
    assert server_status(api, keep) == "active" and qemu_pids(inst, keep)
    assert api.post(f"/servers/{keep}/stop").status == 204
    assert server_status(api, keep) == "stopped" and not qemu_pids(inst, keep)
    assert api.post(f"/servers/{keep}/start").status == 204
    # The agent's reconciliation is connected again: it notices a QEMU that dies.
    (pid,) = qemu_pids(inst, keep)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: server_status(api, keep) == "stopped", timeout=60, what="the agent to see the server stop")
    for sid in (keep, cycled):
        assert api.post(f"/servers/{sid}/destroy").status == 204
    assert not domains(inst)
