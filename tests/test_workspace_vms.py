"""Long-lived workspace VMs with real VMs (TCG here): create by the warm path, stop to disk (no QEMU
left), resume where it was (files, a counting background process, the clock), remove; a template
rebuild and a new `WorkspaceVMs` (an agent restart) do not lose them; the sandbox purge leaves them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import hypervisor as hv
from hypervisor.connection import Connection
from hypervisor.errors import DomainNotFound
from hypervisor.microvm import SandboxImage, purge, qemu
from hypervisor.microvm.workspace import KIND, WorkspaceVMs, purge as purge_workspaces

from .conftest import STATE_ROOT
from .microvm_support import base_image

pytestmark = pytest.mark.vm

INSTALLATION = f"wsv{os.getpid()}"
WORK = STATE_ROOT / "workspace-work"
# sleep processes still alive: a killed one may linger as a zombie until the guest's init reaps it;
# one that ends during the scan must not print (dash reports a failed `<` before a 2>/dev/null after it)
SLEEPERS = ('for p in /proc/[0-9]*; do { read -r c < $p/comm; read -r _ _ st _ < $p/stat; } 2>/dev/null; '
            '[ "$c" = sleep ] && [ "$st" != Z ] && echo $p; done; echo end')
COUNTER = ("setsid sh -c 'i=0; while :; do echo $i >> /tmp/count; i=$((i+1)); sleep 1; done' "
           "</dev/null >/dev/null 2>&1 &")


def qemu_processes(name: str) -> list[int]:
    """Pids of processes whose command line names the domain (its QEMU)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if f"guest={name}".encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


def counts(vms: WorkspaceVMs, ws: str) -> list[int]:
    result = vms.exec(ws, "cat /tmp/count 2>/dev/null; true", timeout=60)
    assert result.exit_code == 0, result
    return [int(line) for line in result.output.decode().split()]


def wait_counts(vms: WorkspaceVMs, ws: str, at_least: int) -> list[int]:
    deadline = time.monotonic() + 120
    while True:
        values = counts(vms, ws)
        if len(values) >= at_least:
            return values
        assert time.monotonic() < deadline, values
        time.sleep(1)


@pytest.fixture(scope="module")
def image() -> SandboxImage:
    return base_image()


@pytest.fixture(scope="module")
def host(image):
    host = hv.Host(INSTALLATION, Connection("qemu:///system"))
    yield host
    purge_workspaces(host, WORK)
    purge(host)
    host.connection.close()


@pytest.fixture(scope="module")
def vms(host, image):
    vms = WorkspaceVMs(host, WORK, boot_timeout=600)   # template boots: TCG on a shared host
    started = time.monotonic()
    vms.prepare(image, image.memory_mib)
    print(f"TIMING template {time.monotonic() - started:.3f}")
    return vms


def test_life_cycle(vms, host, image):
    ws = os.urandom(16).hex()
    assert vms.state(ws) == "missing"
    started = time.monotonic()
    vms.create(ws, image, image.memory_mib)
    print(f"TIMING create {time.monotonic() - started:.3f}")
    assert vms.state(ws) == "running" and ws in vms.known()
    name = f"oh-{INSTALLATION}-ws-{ws}"
    assert host.guest(name).config().owner.kind == KIND

    marker = os.urandom(8).hex()
    result = vms.exec(ws, f"echo {marker} > /root/kept; {COUNTER} echo started", timeout=60)
    assert (result.exit_code, result.output) == (0, b"started\n"), result
    before = wait_counts(vms, ws, 3)

    started = time.monotonic()
    vms.stop(ws)
    print(f"TIMING stop {time.monotonic() - started:.3f}")
    assert vms.state(ws) == "stopped"
    assert qemu_processes(name) == [] and host.find(name) is None, "no QEMU once stopped"
    state = WORK / "ws" / ws / "state"
    assert state.stat().st_size > 1 << 20, "the RAM is in the saved state"
    print(f"saved state {state.stat().st_size >> 20} MiB")
    with pytest.raises(DomainNotFound):
        vms.exec(ws, "true", timeout=5)
    vms.stop(ws)     # idempotent
    time.sleep(4)    # a counter that followed host time would jump by this much

    started = time.monotonic()
    vms.resume(ws)
    print(f"TIMING resume {time.monotonic() - started:.3f}")
    assert vms.state(ws) == "running" and not state.exists()
    result = vms.exec(ws, "cat /root/kept; date +%s", timeout=60)
    kept, clock = result.output.decode().split()
    assert kept == marker
    assert abs(int(clock) - time.time()) < 30, "the guest clock is set on resume"
    after = counts(vms, ws)
    assert after[:len(before)] == before, "the same process, the same file"
    assert after == list(range(len(after))), "counting went on without a restart"
    assert len(after) - len(before) < 4 + 3, "it did not count while stopped"
    assert len(wait_counts(vms, ws, len(after) + 2)) >= len(after) + 2, "and it is still counting"

    vms.resume(ws)   # idempotent
    vms.remove(ws)
    assert vms.state(ws) == "missing" and ws not in vms.known()
    assert not (WORK / "ws" / ws).exists() and host.find(name) is None
    vms.remove(ws)   # idempotent


@pytest.mark.parametrize("finished", [True, False], ids=["saved", "saving"])
def test_stop_uses_the_save_a_dead_process_began(vms, host, image, finished):
    """A stop whose process died after it asked QEMU to save: QEMU finishes that save on its own
    and then refuses a second one. The next stop waits for it (``saving``) or finds it whole
    (``saved``), and uses its file: the workspace resumes where it was."""
    ws = os.urandom(16).hex()
    vms.create(ws, image, image.memory_mib)
    assert vms.exec(ws, COUNTER, timeout=60).exit_code == 0
    before = wait_counts(vms, ws, 2)
    name = f"oh-{INSTALLATION}-ws-{ws}"
    dom = host.connection.get().lookupByName(name)
    host.guest(name).suspend()
    partial = WORK / "ws" / ws / "state.partial"
    if finished:
        qemu.save_state(dom, partial, ignore_shared=False)
    else:       # at 8 MiB/s, so that it is still writing when stop comes
        qemu.begin_save(dom, partial, ignore_shared=False, bandwidth=8 << 20)
        assert qemu.monitor(dom, {"execute": "query-migrate"})["status"] in ("setup", "active")
    vms.stop(ws)
    assert vms.state(ws) == "stopped" and not partial.exists()
    assert qemu_processes(name) == []
    vms.resume(ws)
    after = wait_counts(vms, ws, len(before) + 2)
    assert after[:len(before)] == before and after == list(range(len(after))), after
    vms.remove(ws)


def test_timeout_kills_the_command_not_the_vm(vms, image):
    ws = os.urandom(16).hex()
    vms.create(ws, image, image.memory_mib)
    try:
        before = vms.exec(ws, SLEEPERS, timeout=60).output  # the guest's own sleepers, if any
        result = vms.exec(ws, "echo going; sleep 600", timeout=5)
        assert (result.exit_code, result.timed_out) == (137, True)
        assert result.output in (b"", b"going\n")    # a host at load 40 may not get to the echo in 5 s
        assert vms.exec(ws, SLEEPERS, timeout=60).output == before  # the command's sleep is gone
        assert vms.state(ws) == "running"
    finally:
        vms.remove(ws)


def test_restart_purge_and_template_rebuild_leave_workspaces_alone(vms, host, image):
    ws = os.urandom(16).hex()
    vms.create(ws, image, image.memory_mib)
    try:
        assert vms.exec(ws, "echo one > /root/f", timeout=60).exit_code == 0
        # the sandbox pool's purge (agent start) and a new WorkspaceVMs (agent restart)
        assert purge(host) == 0
        again = WorkspaceVMs(host, WORK, boot_timeout=600)
        assert again.state(ws) == "running" and ws in again.known()
        again.stop(ws)
        # the template is made again (what a changed image or a broken template does)
        templates = again._templates_of(image, image.memory_mib)
        old = templates.ensure()
        templates.discard(old)
        new = templates.ensure()
        assert new.directory.exists() and not new.reused
        vms.resume(ws)
        assert vms.exec(ws, "cat /root/f", timeout=60).output == b"one\n"
        vms.stop(ws)
        vms.resume(ws)
        assert vms.exec(ws, "cat /root/f", timeout=60).output == b"one\n"
    finally:
        vms.remove(ws)
    assert vms.state(ws) == "missing"
