"""Spare workspace VMs (hypervisor/microvm/spares.py) with real VMs: a create and a resume take a
spare of the template and the workspace is the same as one started the ordinary way (owner, files,
a counting process, the clock); a spare that died is passed over; a new owner process removes the
spares an earlier one left, never a workspace."""

from __future__ import annotations

import json
import os
import time

import pytest

import hypervisor as hv
from hypervisor.connection import Connection
from hypervisor.microvm import purge
from hypervisor.microvm.workspace import KIND, WorkspaceVMs, purge as purge_workspaces

from .conftest import STATE_ROOT
from .microvm_support import base_image
from .test_workspace_vms import COUNTER, counts, wait_counts

pytestmark = pytest.mark.vm

INSTALLATION = f"wss{os.getpid()}"
WORK = STATE_ROOT / "workspace-work"    # shares test_workspace_vms' templates


@pytest.fixture(scope="module")
def image():
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
    vms = WorkspaceVMs(host, WORK, boot_timeout=600, spare_vms=1)
    yield vms
    vms.spares.close()


def domain_of(ws: str) -> str:
    return json.loads((WORK / "ws" / ws / "vm.json").read_text())["domain"]


def wait_spares(vms: WorkspaceVMs, count: int) -> list[str]:
    deadline = time.monotonic() + 300
    while len(vms.spares.ready()) < count:
        assert time.monotonic() < deadline, vms.spares.ready()
        time.sleep(0.2)
    return vms.spares.ready()


def test_create_and_resume_take_spares(vms, host, image):
    first = os.urandom(16).hex()
    vms.create(first, image, image.memory_mib)     # no spare yet: the ordinary start; spares follow
    assert domain_of(first) == f"oh-{INSTALLATION}-ws-{first}"
    spares = wait_spares(vms, 2)                    # one for creates, one for resumes
    assert not set(spares) & {g.name for g in host.guests() if g.config().owner.server in (first,)}
    assert first in vms.known() and not [ws for ws in vms.known() if ws.startswith("spare")]

    ws = os.urandom(16).hex()
    started = time.monotonic()
    vms.create(ws, image, image.memory_mib)
    print(f"TIMING create from a spare {time.monotonic() - started:.3f}")
    name = domain_of(ws)
    assert name in spares and name != f"oh-{INSTALLATION}-ws-{ws}"
    owner = host.guest(name).config().owner
    assert (owner.server, owner.kind) == (ws, KIND)
    assert vms.state(ws) == "running" and ws in vms.known()
    marker = os.urandom(8).hex()
    result = vms.exec(ws, f"echo {marker} > /root/kept; {COUNTER} echo started", timeout=60)
    assert (result.exit_code, result.output) == (0, b"started\n"), result
    before = wait_counts(vms, ws, 3)

    wait_spares(vms, 2)
    vms.stop(ws)
    assert vms.state(ws) == "stopped" and host.find(name) is None
    time.sleep(3)
    spares = vms.spares.ready()
    started = time.monotonic()
    vms.resume(ws)
    print(f"TIMING resume from a spare {time.monotonic() - started:.3f}")
    again = domain_of(ws)
    assert again in spares and again != name
    assert host.guest(again).config().owner.server == ws
    kept, clock = vms.exec(ws, "cat /root/kept; date +%s", timeout=60).output.decode().split()
    assert kept == marker
    assert abs(int(clock) - time.time()) < 30, "the guest clock is set on resume"
    after = counts(vms, ws)
    assert after[:len(before)] == before and after == list(range(len(after))), "the same process went on"
    assert len(wait_counts(vms, ws, len(after) + 2)) >= len(after) + 2

    # stopped and resumed again without a spare ready: the ordinary start, same workspace
    vms.stop(ws)
    for spare in vms.spares.ready():
        host.guest(spare).remove()
    vms.resume(ws)
    assert vms.exec(ws, "cat /root/kept", timeout=60).output == f"{marker}\n".encode()
    for gone in (first, ws):
        vms.remove(gone)
        assert vms.state(gone) == "missing" and gone not in vms.known()
    assert host.find(name) is None and host.find(again) is None


def test_a_dead_spare_is_passed_over(vms, host, image):
    seed = os.urandom(16).hex()
    vms.create(seed, image, image.memory_mib)
    try:
        for spare in wait_spares(vms, 2):
            host.guest(spare).remove()     # behind the spares' back: libvirtd restarted, QEMU killed
        ws = os.urandom(16).hex()
        vms.create(ws, image, image.memory_mib)
        try:
            assert domain_of(ws) == f"oh-{INSTALLATION}-ws-{ws}"
            assert vms.exec(ws, "echo ok", timeout=60).output == b"ok\n"
        finally:
            vms.remove(ws)
    finally:
        vms.remove(seed)


def test_a_new_owner_removes_leftover_spares_not_workspaces(vms, host, image):
    ws = os.urandom(16).hex()
    vms.create(ws, image, image.memory_mib)
    try:
        spares = wait_spares(vms, 2)
        other = WorkspaceVMs(host, WORK, boot_timeout=600, spare_vms=1)    # the agent restarted
        try:
            for spare in spares:
                assert host.find(spare) is None
            assert other.state(ws) == "running" and other.known() == vms.known()
            assert vms.exec(ws, "echo still", timeout=60).output == b"still\n"
        finally:
            other.spares.close()
    finally:
        vms.remove(ws)
