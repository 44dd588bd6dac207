"""oh-guest in a real VM (TCG here): a pooled clone of the sandbox image has it running on its
``org.openhosting.guest`` virtio-serial port (the template starts every registered guest program);
the host connects to the port's Unix socket and drives exec, files, untar and a PTY through it."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

import hypervisor as hv
from hypervisor.connection import Connection
from hypervisor.microvm import WarmPool, guestd, purge, runport
from hypervisor.microvm.guest_channel import GuestChannel
from hypervisor.microvm.guestd import GuestNoParent, GuestNotFound, GuestOutside, GuestUnsafeArchive

from .conftest import STATE_ROOT
from .microvm_support import base_image, timing
from .guestd_support import make_tar

pytestmark = pytest.mark.vm

INSTALLATION = f"ohg{os.getpid()}"
# Its own work directory: a template's key covers the guest programs, and a pool removes the other
# templates of its image in its work directory; sharing one with pools of other keys would thrash.
WORK = STATE_ROOT / "guestd-work"
WS = "/home/user/workspace"


@pytest.fixture(scope="module")
def vm():
    image = base_image()
    host = hv.Host(INSTALLATION, Connection("qemu:///system"))
    purge(host, WORK)
    pool = WarmPool(host, image, WORK, size=1)
    clone = None
    try:
        pool.start()
        assert pool.wait_ready(900), pool.stats()
        assert "oh-guest" in pool._template.running, "the template started oh-guest"
        clone = pool._acquire(None, None, time.monotonic())
        clone.guest.resume()
        yield clone
    finally:
        if clone is not None:
            pool._retire(clone, wait=True)
        pool.close()
        purge(host, WORK)
        host.connection.close()


@pytest.fixture(scope="module")
def ch(vm):
    path = runport.port_path(vm.guest, guestd.GUEST_CHANNEL)
    assert path, "every micro VM has the org.openhosting.guest port"
    started = time.monotonic()
    channel = GuestChannel.connect(path, hello_timeout=60)
    timing("hello", time.monotonic() - started)
    yield channel
    channel.close()


def test_exec_in_the_vm_as_the_workspace_user(ch):
    assert ch.sync_time()["clock"] == "set"
    result = ch.exec("id -un; id -u; pwd; echo oops >&2; exit 3")
    assert (result.stdout, result.stderr, result.exit_code) == (f"user\n1000\n{WS}\n".encode(), b"oops\n", 3)
    assert abs(int(ch.exec("date +%s").stdout) - time.time()) < 5
    assert ch.exec("sleep 20", timeout=0.5).timed_out


def test_put_get_untar_and_list_through_the_port(ch):
    data = os.urandom(2 << 20)
    started = time.monotonic()
    assert ch.put_file("blob", data, mode=0o600) == len(data)
    timing("put_2MiB", time.monotonic() - started)
    st = ch.stat("blob")
    assert (st.size, st.mode, st.uid) == (len(data), 0o600, 1000)
    started = time.monotonic()
    assert ch.get_file(f"{WS}/blob").read() == data
    timing("get_2MiB", time.monotonic() - started)
    assert ch.exec("sha256sum blob").stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    with pytest.raises(GuestNoParent):
        ch.put_file("no/such/dir/file", b"x")
    with pytest.raises(GuestNotFound):
        ch.get_file("nothing")
    with pytest.raises(GuestOutside):
        ch.get_file("/etc/shadow", beneath=WS)
    assert ch.untar("", make_tar([("app", "dir", None), ("app/main.py", "file", "print(6*7)\n"),
                                  ("app/link", "symlink", "main.py")])) == 3
    assert ch.exec("python3 app/link").stdout == b"42\n"
    names = {e.name: e for e in ch.listdir("app")}
    assert (names["main.py"].type, names["link"].type, names["link"].target_type) == ("f", "l", "f")
    ch.exec("ln -s /etc escape")
    with pytest.raises(GuestUnsafeArchive):
        ch.untar("", make_tar([("escape/planted", "file", "x")]))
    assert ch.exec("test -e /etc/planted || echo clean").stdout == b"clean\n"


def test_pty_round_trip_through_the_port(ch):
    pty = ch.pty_open(rows=40, cols=120)
    pty.write(b"stty size; echo $((6*7))-$USER\n")
    out = pty.read_until(b"42-user", 60)
    assert b"40 120" in out
    pty.resize(20, 60)
    pty.write(b"stty size\n")
    pty.read_until(b"20 60", 60)
    pty.write(b"exit 3\n")
    while pty.read(60):
        pass
    assert pty.exit_code == 3


def test_reconnect_drops_the_old_session_and_serves_the_new(vm, ch):
    path = runport.port_path(vm.guest, guestd.GUEST_CHANNEL)
    spawned = ch.spawn("exec sleep 300")
    pty = ch.pty_open()
    ch.close()
    started = time.monotonic()
    again = GuestChannel.connect(path, hello_timeout=60)
    timing("reconnect_hello", time.monotonic() - started)
    try:
        alive = again.exec(f"kill -0 {spawned} && echo alive; for i in $(seq 300); do "
                           f"kill -0 {pty.pid} 2>/dev/null || {{ echo hung-up; break; }}; sleep 0.1; done")
        assert alive.stdout == b"alive\nhung-up\n"      # spawn outlives channels; the old PTY does not
    finally:
        again.close()
