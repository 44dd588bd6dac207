"""The sandbox substrate with real VMs (TCG here): template, clones, runs, limits, cleanup.

One pool serves most tests (module fixture, lifecycle order: image → template → pool → runs).
Its work directory lives under /var/tmp (QEMU must traverse to the overlays) and is kept between
sessions, so the template is normally reused; delete it to measure a fresh one. Timings print as
"TIMING name seconds" (run with -s).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import libvirt
import pytest

import hypervisor as hv
from hypervisor.connection import Connection
from hypervisor.microvm import (RUN_CHANNEL, INLINE_FILES, KIND, PoolBroken, PoolTimeout, SandboxImage,
                                 WarmPool, purge)

from .conftest import STATE_ROOT
from .microvm_support import base_image, timing

pytestmark = pytest.mark.vm

INSTALLATION = f"sbx{os.getpid()}"
OTHER = f"sbx{os.getpid()}b"
WORK = STATE_ROOT / "sandbox-work"
PY = "python3 -c 'print(1+1)'"


def running_names(conn: libvirt.virConnect) -> set[str]:
    return {d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}


def overlays(installation: str) -> list[Path]:
    return sorted(WORK.rglob(f"oh-{installation}-*.qcow2"))


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image() -> SandboxImage:
    return base_image()


@pytest.fixture(scope="module")
def host(image):
    host = hv.Host(INSTALLATION, Connection("qemu:///system"))
    purge(host, WORK)
    yield host
    purge(host, WORK)
    host.connection.close()


@pytest.fixture(scope="module")
def pool(host, image):
    pool = WarmPool(host, image, WORK, size=2)
    started = time.monotonic()
    pool.start()
    assert time.monotonic() - started < 1, "start() returns at once"
    assert pool.wait_ready(600), pool.stats()
    timing("pool_first_ready", time.monotonic() - started)
    stats = pool.stats()
    timing("template_seconds", stats["template_seconds"])
    print("template reused:", stats["template_reused"])
    yield pool
    pool.close()
    assert overlays(INSTALLATION) == []


def run(pool: WarmPool, command: str, files: dict[str, bytes] | None = None, **kw):
    kw.setdefault("timeout", 60)
    kw.setdefault("output_cap", 64 * 1024)
    started = time.monotonic()
    result = pool.run(files or {}, command, **kw)
    timing("run", time.monotonic() - started)
    return result


# --- runs --------------------------------------------------------------------------------------

def test_python_prints(pool):
    result = run(pool, PY)
    assert (result.exit_code, result.output, result.timed_out, result.truncated, result.killed) == \
        (0, b"2\n", False, False, False)
    assert result.error is None and result.vm.startswith(f"oh-{INSTALLATION}-")


def test_exit_code_is_kept(pool):
    assert run(pool, "echo bye; exit 42").exit_code == 42
    assert run(pool, "no-such-program").exit_code == 127


def test_files_are_in_the_working_directory(pool):
    code = b"import sys\nprint(open('data.txt').read().strip(), sys.argv[1])\n"
    data = os.urandom(150_000)     # more than one guest-file-write slice
    # small files travel with the command on oh-run's stdin; past INLINE_FILES in all, the
    # largest go through the guest agent: both ways land byte for byte
    big = os.urandom(INLINE_FILES - 100_000)
    result = run(pool, "python3 main.py arg && ls && sha256sum blob big && stat -c %s empty",
                 {"main.py": code, "data.txt": b"hello\n", "blob": data, "big": big, "empty": b""})
    import hashlib
    assert result.exit_code == 0, result
    lines = result.output.decode().splitlines()
    assert lines[0] == "hello arg"
    assert lines[1:6] == ["big", "blob", "data.txt", "empty", "main.py"]
    assert lines[6].split()[0] == hashlib.sha256(data).hexdigest()
    assert lines[7].split()[0] == hashlib.sha256(big).hexdigest()
    assert lines[8] == "0"


def test_runs_are_served_on_a_port_the_program_cannot_touch(pool):
    result = run(pool, PY)
    assert result.rang and result.exit_code == 0     # oh-run reported the end itself: no polling
    # the port belongs to oh-run for the whole run: the program cannot open it to forge a reply
    probe = ("import errno, glob\n"
             "for name in glob.glob('/sys/class/virtio-ports/*/name'):\n"
             f"    if open(name).read().strip() == {RUN_CHANNEL!r}:\n"
             "        try:\n"
             "            open('/dev/' + name.split('/')[-2], 'wb').write(b'X0\\n')\n"
             "            print('opened')\n"
             "        except OSError as exc:\n"
             "            print(errno.errorcode[exc.errno])\n"
             "print('after')\n"
             "raise SystemExit(3)\n")
    result = run(pool, "python3 probe.py", {"probe.py": probe.encode()})
    assert (result.exit_code, result.output) == (3, b"EBUSY\nafter\n")


def test_a_program_that_kills_oh_run_loses_only_its_own_result(pool, host):
    started = time.monotonic()
    result = run(pool, "echo before; kill -9 $(cat /run/oh/oh-run.pid); echo after", timeout=3)
    assert result.exit_code == 137 and result.timed_out, result       # no status: it ends at its timeout
    assert time.monotonic() - started < 30
    assert result.vm not in running_names(host.connection.get())
    assert run(pool, PY).output == b"2\n"                               # the next run is normal


def test_bad_file_names_are_refused(pool):
    for name in ("../x", "a/b", "", ".", ".."):
        with pytest.raises(ValueError):
            pool.run({name: b""}, "true", timeout=5, output_cap=10)


def test_stdout_and_stderr_interleave(pool):
    result = run(pool, "echo one; echo two >&2; echo three; python3 -c 'import sys; print(4); "
                       "print(5, file=sys.stderr); print(6)'")
    assert result.output == b"one\ntwo\nthree\n4\n5\n6\n"


def test_guest_has_no_network_and_fresh_clock_and_entropy(pool):
    first = run(pool, "ls /sys/class/net; date +%s; python3 -c 'import os; print(os.urandom(16).hex())'")
    second = run(pool, "python3 -c 'import os; print(os.urandom(16).hex())'")
    net, clock, random1 = first.output.decode().split("\n")[:3]
    assert net == "lo"
    assert abs(int(clock) - time.time()) < 5, "the guest clock is set at every run"
    assert random1 != second.output.decode().strip(), "clones of one state must not share their RNG"


def test_memory_written_in_one_run_stays_in_its_vm(pool):
    """Clones map the template's RAM copy-on-write: what a run writes to guest RAM (a tmpfs file)
    reaches neither the template's RAM file nor the next run."""
    ram = pool._template.ram
    assert ram is not None and ram.exists()
    assert pool._template.state.stat().st_size < 16 << 20, "the state holds the devices, not the RAM"
    before = hashlib.sha256(ram.read_bytes()).hexdigest()
    marker = os.urandom(8).hex()
    first = run(pool, f"echo {marker} > /dev/shm/marker; head -c 8M /dev/urandom > /dev/shm/noise; "
                      "cat /dev/shm/marker")
    assert first.output == f"{marker}\n".encode()
    second = run(pool, "ls -A /dev/shm; echo end")
    assert second.output == b"end\n"
    assert hashlib.sha256(ram.read_bytes()).hexdigest() == before


def test_timeout_destroys_the_vm(pool, host):
    started = time.monotonic()
    result = run(pool, "echo started; while :; do :; done", timeout=3)
    elapsed = time.monotonic() - started
    assert result.timed_out and result.exit_code == 137 and not result.killed
    assert result.output == b"started\n", "what was written before the timeout is kept"
    assert elapsed < 3 + 5
    assert result.vm not in running_names(host.connection.get())


def test_output_flood_is_capped(pool):
    result = run(pool, "yes flood | head -c 20000000; echo done; exit 3", output_cap=10_000, timeout=60)
    assert result.truncated and len(result.output) == 10_000
    assert result.output.startswith(b"flood\nflood\n")
    assert result.exit_code == 3, "the program ran to its end"
    result = run(pool, "head -c 10000 /dev/zero", output_cap=10_000)
    assert not result.truncated and len(result.output) == 10_000


def test_memory_hog_and_fork_bomb_stay_inside(pool, host):
    hog = run(pool, "python3 -c 'a = []\nwhile True: a.append(bytearray(8 << 20))'", timeout=60)
    assert hog.exit_code == 137 and not hog.timed_out, hog     # the guest's OOM killer, not the host's
    bomb = run(pool, "bomb() { bomb | bomb & }; bomb; sleep 100", timeout=5)
    assert bomb.timed_out and bomb.exit_code == 137
    assert bomb.vm not in running_names(host.connection.get())
    assert run(pool, PY).output == b"2\n"


def test_more_runs_than_vms_all_finish(pool):
    results: list = [None] * 6
    def client(i):
        results[i] = pool.run({"n": str(i).encode()}, "cat n", timeout=60, output_cap=100)
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    timing("six_concurrent_runs", time.monotonic() - started)
    assert [r.output for r in results] == [str(i).encode() for i in range(len(results))]
    assert {r.exit_code for r in results} == {0}
    assert max(r.wait_seconds for r in results) > 0, "some had to wait for a VM"


def test_cancel_kills_a_run(pool, host):
    cancel = threading.Event()
    threading.Timer(1.5, cancel.set).start()
    started = time.monotonic()
    result = run(pool, "echo waiting; sleep 60", cancel=cancel)
    assert result.killed and not result.timed_out and result.exit_code == 137
    assert time.monotonic() - started < 10
    assert result.output == b"waiting\n"
    assert result.vm not in running_names(host.connection.get())


def test_acquire_timeout(pool):
    wait_until(lambda: pool.stats()["idle"] == pool.size, 120, "pool full again")
    # both VMs taken; a refill takes far longer than a millisecond
    threads = [threading.Thread(target=pool.run, args=({}, "sleep 2"), kwargs={"timeout": 10, "output_cap": 10})
               for _ in range(pool.size)]
    for t in threads:
        t.start()
    wait_until(lambda: pool.stats()["idle"] == 0, 10, "both VMs taken")
    try:
        with pytest.raises(PoolTimeout):
            pool.run({}, "true", timeout=5, output_cap=10, acquire_timeout=0.001)
    finally:
        for t in threads:
            t.join(60)
    assert pool.stats()["waiting"] == 0


def test_stats(pool):
    wait_until(lambda: pool.stats()["idle"] == pool.size, 120, "pool full again")
    stats = pool.stats()
    assert stats["accelerator"] in ("tcg", "kvm")
    assert stats["run_path"] == "served"
    assert len(stats["rss"]) == pool.size and all(v and v > 32 << 20 for v in stats["rss"].values())
    # clones map the template's RAM file: part of what is resident is shared, not their own
    assert stats["ram"] == "shared"
    assert 0 < stats["private_mib_avg"] < stats["rss_mib_avg"]
    print("RSS per pooled VM (MiB):", stats["rss_mib_avg"], "private:", stats["private_mib_avg"],
          "restore seconds:", stats["restore_seconds"])
    # every pooled VM is a sandbox of this installation, with no NIC, under a memory bound
    conn = pool.host.connection.get()
    for name in stats["rss"]:
        dom = conn.lookupByName(name)
        assert pool.host.guest(name).config().owner.kind == KIND
        assert "<interface" not in dom.XMLDesc(0)
        assert dom.memoryParameters(0)["hard_limit"] < 2 << 20    # KiB


def test_cold_run(pool):
    result = pool.cold_run({"m.py": b"print(6 * 7)\n"}, "python3 m.py", timeout=60, output_cap=100)
    timing("cold_run", result.seconds)
    assert (result.exit_code, result.output) == (0, b"42\n")
    assert result.vm not in running_names(pool.host.connection.get())
    assert not (WORK / "vms" / f"{result.vm}.qcow2").exists()


def test_floor_run(pool):
    timing("floor_run", pool.floor_run(PY))


def test_pool_vms_map_programs_at_fixed_addresses(pool):
    """Pool templates turn the guest's address randomisation off (QEMU's translations from a clone's
    warm-up then serve its run): the setting, and the same stack top for two processes."""
    result = pool.run({}, "cat /proc/sys/kernel/randomize_va_space; grep stack /proc/self/maps; "
                          "grep stack /proc/self/maps", timeout=60, output_cap=4096)
    setting, first, second = result.output.decode().splitlines()
    assert setting == "0" and first == second, result


def test_a_template_that_lived_long_after_oh_run_started_serves_its_first_run(host, image):
    """oh-run in a template with no host connected once took the port's readable end-of-file for a
    request and, 2 s later, left a reply in the port that the first clone's host read as its own
    ("oh-run: the host went away", then the next run desynced). A warm-up of 4 s (longer than that)
    made every first run of a clone fail that way; each run, warmed clone or not, is right now."""
    from dataclasses import replace
    slow = replace(image, warmup="sleep 4", clone_warmup="true")
    for warm in (False, True):
        long_lived = WarmPool(host, slow, WORK / "long-lived", size=1, warm_clones=warm)
        try:
            for n in range(2):
                result = long_lived.run({}, f"echo run{n}", timeout=60, output_cap=4096)
                assert (result.exit_code, result.output) == (0, f"run{n}\n".encode()), (warm, result)
        finally:
            long_lived.close()


def test_a_pool_that_cannot_make_vms_says_so(host, image, tmp_path):
    from dataclasses import replace
    broken = WarmPool(host, replace(image, kernel=Path("/nonexistent/vmlinux")), WORK / "broken", size=1)
    try:
        started = time.monotonic()
        with pytest.raises(PoolBroken):
            broken.run({}, "true", timeout=5, output_cap=10)
        assert time.monotonic() - started < 30
        assert "nonexistent" in broken.stats()["error"]
    finally:
        broken.close()


def test_runs_through_the_guest_agent_when_oh_run_does_not_serve(host, image):
    """The fallback path (a template whose oh-run does not serve): oh-run started by guest-exec,
    ringing the host on the port when done, output and status from qemu-ga."""
    agent_pool = WarmPool(host, image, WORK / "agent-path", size=1, serve=False)
    try:
        result = agent_pool.run({"m.py": b"import sys\nprint(6 * 7)\nsys.exit(4)\n"}, "python3 m.py",
                                timeout=60, output_cap=100)
        assert (result.exit_code, result.output, result.rang) == (4, b"42\n", True)
        assert agent_pool.stats()["run_path"] == "agent"
        result = agent_pool.run({}, "echo started; sleep 30", timeout=2, output_cap=100)
        assert (result.exit_code, result.timed_out, result.output) == (137, True, b"started\n")
    finally:
        agent_pool.close()


def test_clones_copy_their_ram_when_qemu_cannot_open_the_ram_file(host, image, monkeypatch):
    """A template whose QEMU cannot open the RAM file (here: the file is given to root, not to
    QEMU's user; elsewhere e.g. a security driver) is made again with its RAM in the state, and
    every clone restores a copy of it: the same path as ``shared_ram=False``."""
    monkeypatch.setattr(host, "qemu_user", lambda: (0, 0))
    copying = WarmPool(host, image, WORK / "copied-ram", size=1)
    try:
        result = copying.run({"m.py": b"print(6 * 7)\n"}, "python3 m.py", timeout=60, output_cap=100)
        assert (result.exit_code, result.output) == (0, b"42\n")
        assert copying.stats()["ram"] == "copied"
        template = copying._template
        assert template.ram is None and not list(template.directory.glob("*.ram"))
        assert template.state.stat().st_size > 16 << 20, "the state holds the guest's RAM"
    finally:
        copying.close()


# --- several pools and cleanup -----------------------------------------------------------------

def test_template_is_reused_and_pools_of_two_installations_are_apart(pool, host, image):
    other_host = hv.Host(OTHER, host.connection)
    other = WarmPool(other_host, image, WORK, size=1)
    try:
        other.start()
        assert other.wait_ready(300)
        assert other.stats()["template_reused"] is True
        wait_until(lambda: pool.stats()["idle"] == pool.size, 120, "first pool full again")
        ours = set(pool.stats()["rss"])
        theirs = set(other.stats()["rss"])
        assert ours and theirs and not ours & theirs
        assert all(n.startswith(f"oh-{OTHER}-") for n in theirs)

        assert purge(other_host, WORK) == 1
        live = running_names(host.connection.get())
        assert ours <= live and not theirs & live
        assert overlays(OTHER) == []
        assert run(pool, PY).output == b"2\n"
    finally:
        other.close()
    assert set(pool.stats()["rss"]) <= running_names(host.connection.get())


def test_purge_removes_leftovers(pool, host, image):
    """A pool whose process died (never closed): purge at the next start removes it all."""
    wait_until(lambda: pool.stats()["idle"] == pool.size and not pool.stats()["preparing"], 120, "pool full")
    leftover = WarmPool(host, image, WORK, size=1)
    try:
        leftover.start()
        assert leftover.wait_ready(300)
        name = next(iter(leftover.stats()["rss"]))
        assert (WORK / "vms" / f"{name}.qcow2").exists()
        assert purge(host, WORK) == 1 + pool.size
        assert name not in running_names(host.connection.get())
        assert overlays(INSTALLATION) == []
        assert host.guests() == []
    finally:
        leftover.close()
