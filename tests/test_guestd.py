"""oh-guest's protocol end to end, without a VM: the real program, built for the host and run as
root against a socketpair, with a temporary workspace and a test uid (tests/guestd_support.py).
test_guestd_vm.py proves the same through a real virtio-serial port."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import tarfile
import threading
import time
from pathlib import Path

import pytest

from hypervisor.microvm import guestd
from hypervisor.microvm.guest_channel import GuestChannel
from hypervisor.microvm.guestd import (GuestBadArchive, GuestBadRequest, GuestGone, GuestNoParent,
                                       GuestNotADirectory, GuestNotAFile, GuestNotFound, GuestOutside,
                                       GuestPermissionDenied, GuestTooLarge, GuestUnsafeArchive)
from hypervisor.microvm import tarcheck
from hypervisor.microvm.tarcheck import Limits

from .guestd_support import GID, UID, make_tar, snapshot, start


@pytest.fixture(scope="module")
def guest():
    g = start()
    yield g
    assert g.stop() == 0                 # the host end closed: oh-guest ends cleanly


@pytest.fixture
def ch(guest) -> GuestChannel:
    return guest.channel


# --- exec ------------------------------------------------------------------------------------

def test_exec_separates_streams_and_reports_status(ch, guest):
    r = ch.exec("id -u; id -g; pwd; echo to-err >&2; printf out; exit 7")
    assert r.stdout == f"{UID}\n{GID}\n{guest.workspace}\nout".encode()
    assert r.stderr == b"to-err\n"
    assert (r.exit_code, r.signal, r.timed_out) == (7, None, False)


def test_exec_signal_env_cwd_and_root(ch, guest):
    assert ch.exec("kill -9 $$").signal == 9
    r = ch.exec(["sh", "-c", 'echo "$GREETING $HOME"; pwd'], env={"GREETING": "hi"}, cwd="/")
    assert r.stdout == f"hi {guest.root / 'home'}\n/\n".encode()
    assert ch.exec("id -u", uid=0).stdout == b"0\n"


def test_exec_missing_program_is_not_found(ch):
    with pytest.raises(GuestNotFound):
        ch.exec(["/no/such/program"])


def test_exec_stdin_streams_a_large_input(ch):
    data = os.urandom(3 << 20)
    r = ch.exec("sha256sum", input=data)
    assert r.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_exec_timeout_terms_then_kills_the_group(ch):
    r = ch.exec("sleep 30 & sleep 30", timeout=0.3)
    assert (r.timed_out, r.signal) == (True, 15)
    stubborn = ch.exec("trap '' TERM; echo ready; sleep 30; echo survived", timeout=0.3, kill_after=0.3)
    assert (stubborn.timed_out, stubborn.signal, stubborn.stdout) == (True, 9, b"ready\n")


def test_exec_host_cancel(ch):
    proc = ch.exec_stream("echo started; exec sleep 30")
    stream = iter(proc)
    assert next(stream) == ("stdout", b"started\n")
    proc.cancel()
    result = proc.wait()
    assert result.cancelled and result.signal == 15


def test_exec_leftovers_in_its_group_are_killed(ch, guest):
    pidfile = guest.workspace / "left.pid"
    assert ch.exec(f"sleep 30 & echo $! > {pidfile}").exit_code == 0
    pid = int(pidfile.read_text())
    _gone(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):   # gone before the open, or reaped between open and read
        return False


def _gone(pid: int) -> None:
    for _ in range(200):                  # reaped by whoever is its parent; not a timing claim
        if not _alive(pid):
            return
        time.sleep(0.02)
    raise AssertionError(f"{pid} still runs")


def _becomes(pid: int, comm: str) -> None:
    for _ in range(500):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == comm:
                    return
        except FileNotFoundError:
            raise AssertionError(f"{pid} ended before it became {comm}") from None
        time.sleep(0.02)
    raise AssertionError(f"{pid} never became {comm}")


# --- spawn -----------------------------------------------------------------------------------

def test_spawn_outlives_the_call(ch, guest):
    log = guest.workspace / "spawned.log"
    pid = ch.spawn("echo begun; id -u; exec sleep 60", stdout=str(log))
    try:
        assert _alive(pid)
        assert ch.exec(f"kill -0 {pid} && echo alive").stdout == b"alive\n"
        deadline = time.monotonic() + 10
        while log.read_text() != f"begun\n{UID}\n" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert log.read_text() == f"begun\n{UID}\n"
        assert os.stat(log).st_uid == UID
        assert os.getsid(pid) == pid      # its own session
    finally:
        os.kill(pid, 9)
    _gone(pid)


# --- files -----------------------------------------------------------------------------------

def test_put_get_stat_round_trip(ch, guest):
    data = os.urandom(5 << 20) + b"end"
    assert ch.put_file("big.bin", iter([data[:100], data[100:]]), mode=0o640) == len(data)
    st = os.stat(guest.workspace / "big.bin")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777, st.st_size) == (UID, GID, 0o640, len(data))
    reader = ch.get_file(str(guest.workspace / "big.bin"))
    assert reader.stat.size == len(data)
    assert reader.read() == data
    gst = ch.stat("big.bin")
    assert (gst.type, gst.size, gst.mode, gst.uid) == ("f", len(data), 0o640, UID)
    assert ch.put_file("big.bin", b"small") == 5           # replaced whole
    assert (guest.workspace / "big.bin").read_bytes() == b"small"
    assert not [p for p in os.listdir(guest.workspace) if p.startswith(".oh-put")]


def test_put_errors_are_distinct(ch, guest):
    (guest.workspace / "a-dir").mkdir(exist_ok=True)
    with pytest.raises(GuestNoParent):
        ch.put_file("missing/x", b"x")
    (guest.workspace / "plain").write_text("")
    with pytest.raises(GuestNoParent):
        ch.put_file("plain/x", b"x")
    with pytest.raises(GuestNotAFile):
        ch.put_file("a-dir", b"x")
    with pytest.raises(GuestPermissionDenied):
        ch.put_file(str(guest.root / "x"), b"x")           # root's directory
    assert not (guest.root / "x").exists()


def test_put_as_root_inside_a_root_directory(ch, guest):
    assert ch.put_file(str(guest.root / "rootfile"), b"r", uid=0) == 1
    assert os.stat(guest.root / "rootfile").st_uid == 0


def test_get_errors_are_distinct(ch, guest):
    secret = guest.workspace / "root-only"
    secret.write_text("x")
    secret.chmod(0o600)
    with pytest.raises(GuestNotFound):
        ch.get_file("nothing-here")
    with pytest.raises(GuestNotAFile):
        ch.get_file(".")
    with pytest.raises(GuestPermissionDenied):
        ch.get_file("root-only")
    assert ch.get_file("root-only", uid=0).read() == b"x"


def test_listdir_types_links_and_errors(ch, guest):
    d = guest.workspace / "listing"
    d.mkdir()
    (d / "f").write_bytes(b"12345")
    (d / "sub").mkdir()
    (d / "to-dir").symlink_to("sub")
    (d / "broken").symlink_to("nowhere")
    (d / ".hidden").write_text("")
    entries = {e.name: e for e in ch.listdir("listing")}
    assert sorted(entries) == [".hidden", "broken", "f", "sub", "to-dir"]
    assert (entries["f"].type, entries["f"].size, entries["f"].target_type) == ("f", 5, "f")
    assert (entries["sub"].type, entries["to-dir"].type, entries["to-dir"].target_type) == ("d", "l", "d")
    assert entries["broken"].target_type == "-"
    with pytest.raises(GuestNotADirectory):
        ch.listdir("listing/f")
    with pytest.raises(GuestNotFound):
        ch.listdir("listing/none")


def test_beneath_refuses_paths_and_links_out(ch, guest):
    ws = str(guest.workspace)
    (guest.workspace / "out-link").symlink_to(guest.outside)
    (guest.workspace / "secret-link").symlink_to(guest.outside / "secret")
    before = snapshot(guest.outside)
    for path in ("../outside/secret", "secret-link", str(guest.outside / "secret"), "out-link/secret"):
        with pytest.raises(GuestOutside):
            ch.get_file(path, beneath=ws)
    for path in ("out-link/new", "../outside/new", "/etc/new"):
        with pytest.raises(GuestOutside):
            ch.put_file(path, b"x", beneath=ws)
    with pytest.raises(GuestOutside):
        ch.listdir("out-link", beneath=ws)
    assert snapshot(guest.outside) == before
    # without beneath the user may follow its own link, with its own rights
    assert ch.get_file("secret-link").read() == b"root's\n"


# --- untar -----------------------------------------------------------------------------------

def test_untar_extracts_as_the_user(ch, guest):
    (guest.workspace / "proj").mkdir()
    os.chown(guest.workspace / "proj", UID, GID)
    data = make_tar([("./", "dir", None), ("src", "dir", None), ("src/main.py", "file", "print(1)\n"),
                     ("src/link", "symlink", "main.py"), ("hard", "hardlink", "src/main.py"),
                     ("docs/a/b.txt", "file", "deep")])
    assert ch.untar("proj", data) == 6
    p = guest.workspace / "proj"
    assert (p / "src" / "main.py").read_text() == "print(1)\n"
    assert os.readlink(p / "src" / "link") == "main.py"
    assert (p / "docs" / "a" / "b.txt").read_text() == "deep"
    assert {os.stat(x).st_uid for x in (p / "src", p / "src" / "main.py", p / "docs" / "a")} == {UID}


@pytest.mark.parametrize("members", [
    [("/etc/evil", "file", "x")],
    [("../evil", "file", "x")],
    [("a/../../evil", "file", "x")],
    [("l", "symlink", "/etc")],
    [("l", "symlink", "../outside")],
    [("d", "dir", None), ("d/l", "symlink", "../..")],
    [("a", "symlink", "."), ("b", "symlink", "a/..")],
    [("l", "symlink", "sub"), ("l/x", "file", "x")],
    [("h", "hardlink", "/etc/passwd")],
    [("h", "hardlink", "../outside/secret")],
    [("f", "fifo", None)],
    [("c", "chr", None)],
])
def test_untar_refuses_unsafe_archives_on_the_host(ch, guest, members):
    before = snapshot(guest.root)
    with pytest.raises(GuestUnsafeArchive):
        ch.untar("", make_tar(members))
    assert snapshot(guest.root) == before


def test_untar_guest_refuses_members_below_an_existing_link(ch, guest):
    (guest.workspace / "escape").symlink_to(guest.outside)
    before = snapshot(guest.outside)
    with pytest.raises(GuestUnsafeArchive):
        ch.untar("", make_tar([("escape/planted", "file", "x")]))
    assert snapshot(guest.outside) == before


def _raw_untar(ch, dest: str, data: bytes) -> dict[str, str]:
    """The guest's side alone: the bytes as they are (no host check, no plain/gzip choice)."""
    chan = ch.open("untar", [("dest", dest), ("limit", 1 << 20)])
    chan.expect_start(30.0)
    chan.write(data)
    ch.send(guestd.EOF, chan.id)
    return chan.finish(30.0)


@pytest.mark.parametrize("packed", ["gzip", "plain"])
def test_untar_reads_gzip_by_its_magic_and_lists_only_into_a_non_empty_destination(ch, guest, packed):
    data = make_tar([("a.txt", "file", "one"), ("d", "dir", None), ("d/b.txt", "file", "two")])
    if packed == "plain":
        data = tarcheck.plain(data)
        assert data is not None and data[:2] != b"\x1f\x8b"
    empty, full, again = (f"{name}-{packed}" for name in ("empty", "full", "again"))
    for name in (empty, full, again):
        (guest.workspace / name).mkdir()
        os.chown(guest.workspace / name, UID, GID)
    (guest.workspace / full / "there").write_text("x")
    # into an empty directory nothing can go below an existing link: no listing, no count
    assert "members" not in _raw_untar(ch, empty, data)
    assert _raw_untar(ch, full, data)["members"] == "3"
    for name in (empty, full):
        assert (guest.workspace / name / "d" / "b.txt").read_text() == "two"
        assert os.stat(guest.workspace / name / "a.txt").st_uid == UID
    # the host's call counts the members either way
    assert ch.untar(again, make_tar([("x", "file", "1"), ("y", "file", "2")])) == 2


def _tree(root) -> dict[str, tuple]:
    """Every name below ``root``: type, permission bits, owner, contents or link target, mtime of
    files and links (what an extraction decides)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(p), st.st_uid, int(st.st_mtime))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", oct(st.st_mode & 0o7777), st.st_uid, int(st.st_mtime))
            else:
                out[rel] = ("f", oct(st.st_mode & 0o7777), st.st_uid, int(st.st_mtime), st.st_nlink,
                            Path(p).read_bytes())
    return out


def _stamped_tar(members) -> bytes:
    """make_tar's members with their own modes and mtimes: (name, kind, data-or-target, mode)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for i, (name, kind, extra, mode) in enumerate(members):
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, 1_600_000_000 + 3600 * i
            data = None
            if kind == "file":
                data = extra.encode()
                info.size = len(data)
            else:
                info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
                info.linkname = extra or ""
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


LONG = "l" * 120 + "/" + "ö" * 70 + ".txt"
LAID = [("./", "dir", None, 0o755), ("ro", "dir", None, 0o555), ("ro/inside.txt", "file", "in a read-only dir", 0o444),
        ("bin/run.sh", "file", "#!/bin/sh\n", 0o775), ("secret", "file", "0600", 0o600), ("odd", "file", "x", 0o4777),
        (LONG, "file", "long name", 0o644), ("to-long", "symlink", LONG, 0o777), ("hard", "hardlink", "./secret", 0o600),
        ("bin/run.sh", "file", "replaced by a later member\n", 0o700), ("sub/", "dir", None, 0o750),
        ("sub/deep/er/f", "file", "", 0o644), ("sub/deep", "dir", None, 0o700), ("sub", "dir", None, 0o711)]


def test_a_canonical_archive_is_laid_by_the_guest_as_tar_would_extract_it(ch, guest):
    data = _stamped_tar(LAID)
    plain = tarcheck.canonical(data)
    assert plain is not None and plain[:2] != b"\x1f\x8b"
    assert tarfile.open(fileobj=io.BytesIO(plain)).getnames()[:2] == ["ro", "ro/inside.txt"]   # "./" left out
    laid, by_tar = guest.workspace / "laid", guest.workspace / "by-tar"
    for d in (laid, by_tar):
        d.mkdir()
        os.chown(d, UID, GID)
    (by_tar / "marker").write_text("not empty: the guest lists, then runs tar")
    # laid by oh-guest itself: it counts what it laid (tar into an empty directory does not count)
    chan = ch.open("untar", [("dest", "laid"), ("limit", 1 << 20), ("lay", 1)])
    chan.expect_start(30.0)
    chan.write(plain)
    ch.send(guestd.EOF, chan.id)
    assert chan.finish(30.0)["members"] == str(len(LAID) - 1)
    assert ch.untar("by-tar", data) == len(LAID)
    os.remove(by_tar / "marker")
    mine, tars = _tree(laid), _tree(by_tar)
    assert mine == tars
    assert mine["ro"][1] == "0o555" and mine["odd"][1] == "0o755"       # the umask (022) applies, set-id goes
    assert mine["bin/run.sh"][-1] == b"replaced by a later member\n" and mine["hard"][4] == 2
    assert mine[LONG][-1] == b"long name" and mine["to-long"][1] == LONG
    assert {v[2] for v in mine.values()} == {UID}


@pytest.mark.parametrize("member, why", [
    (dict(name="../escape"), "with .."),
    (dict(name="/tmp/escape"), "absolute"),
    (dict(name="f", type=tarfile.FIFOTYPE), "type"),
    (dict(name="f", checksum=True), "checksum"),
    (dict(name="f", cut=True), "ends inside"),
])
def test_the_guest_lays_only_what_it_can_check(ch, guest, member, why):
    """The guest does not trust the archive it is sent to lay: a bad one ends in badarchive with
    nothing written outside the destination."""
    info = tarfile.TarInfo(member["name"])
    info.type = member.get("type", tarfile.REGTYPE)
    info.size = 5 if info.type == tarfile.REGTYPE else 0
    raw = bytearray(info.tobuf(tarfile.GNU_FORMAT) + (b"hello".ljust(512, b"\0") if info.size else b"") + b"\0" * 1024)
    if member.get("checksum"):
        raw[0:1] = b"g"
    if member.get("cut"):
        raw = raw[:512 + 3]           # inside the file's five bytes
    dest = guest.workspace / f"bad-{why.replace(' ', '-')}"
    dest.mkdir()
    os.chown(dest, UID, GID)
    before = snapshot(guest.root)
    chan = ch.open("untar", [("dest", dest.name), ("limit", 1 << 20), ("lay", 1)])
    chan.expect_start(30.0)
    chan.write(bytes(raw))
    ch.send(guestd.EOF, chan.id)
    with pytest.raises(GuestBadArchive, match=why):
        chan.finish(30.0)
    after = snapshot(guest.root)
    assert {k for k in after if not k.startswith(str(dest))} == {k for k in before if not k.startswith(str(dest))}


def test_plain_is_for_small_single_member_archives():
    small = make_tar([("f", "file", "hello")])
    assert tarfile.open(fileobj=io.BytesIO(tarcheck.plain(small))).getnames() == ["f"]
    assert tarcheck.plain(make_tar([("big", "file", os.urandom(3000))]), most=2000) is None
    assert tarcheck.plain(small + small) is None          # two gzip members: sent as they are
    assert tarcheck.plain(b"not gzip") is None


def test_untar_limits_and_garbage(ch):
    with pytest.raises(GuestBadArchive):
        ch.untar("", b"not a tar.gz at all")
    with pytest.raises(GuestTooLarge):
        ch.untar("", make_tar([("big", "file", b"\0" * 200_000)]), limits=Limits(unpacked=100_000))
    with pytest.raises(GuestTooLarge):
        ch.untar("", make_tar([(f"f{i}", "file", "") for i in range(20)]), limits=Limits(members=10))
    with pytest.raises(GuestTooLarge):
        ch.untar("", make_tar([("x", "file", os.urandom(3000))]), limits=Limits(compressed=1000))


# --- pty -------------------------------------------------------------------------------------

def test_pty_round_trip_resize_and_exit(ch, guest):
    pty = ch.pty_open(rows=30, cols=100)
    pty.write(b"stty size; id -u; pwd\n")
    out = pty.read_until(str(guest.workspace).encode(), 10)
    assert b"30 100" in out and str(UID).encode() in out
    pty.resize(50, 132)
    pty.write(b"stty size\n")
    pty.read_until(b"50 132", 10)
    pty.write(b"exit 4\n")
    while pty.read(10):
        pass
    assert (pty.ended, pty.exit_code) == (True, 4)


def test_pty_close_hangs_up_but_nohup_and_setsid_survive(ch, guest):
    pty = ch.pty_open()
    pty.write(b"nohup sleep 60 >/dev/null 2>&1 & echo N=$!; sleep 62 & echo J=$!; "
              b"setsid sh -c 'echo S=$$; exec sleep 61 </dev/null >/dev/null 2>&1' &\n")
    out = ""
    while not re.search(r"S=\d+\r", out):      # printed once it is in its own session
        out += pty.read_until(b"\n", 10).decode()
    nohup_pid = int(re.search(r"N=(\d+)", out).group(1))      # (the terminal echoes N=$! first)
    job_pid = int(re.search(r"J=(\d+)", out).group(1))
    setsid_pid = int(re.search(r"S=(\d+)", out).group(1))
    shell = pty.pid
    # nohup ignores SIGHUP only once it runs, and then execs sleep: a hangup before that kills it.
    # Wait until both are `sleep` (on a loaded host that can come after the shell's echo).
    _becomes(nohup_pid, "sleep")
    _becomes(setsid_pid, "sleep")
    pty.close()
    _gone(shell)
    _gone(job_pid)                        # a plain job got the shell's SIGHUP
    assert _alive(nohup_pid) and _alive(setsid_pid)
    os.kill(nohup_pid, 9)
    os.kill(setsid_pid, 9)


def test_terminal_port_serves_only_pty_and_exec():
    """The terminal port's instance (``--only pty,exec``, as the template starts it) opens shells and
    runs commands, and refuses files, spawn and the clock with a clear error."""
    g = start(args=("--only", guestd.PTY_OPS))
    try:
        ch = g.channel
        assert ch.exec("echo $((6*7))").stdout == b"42\n"
        pty = ch.pty_open(rows=20, cols=70)
        pty.write(b"stty size\n")
        pty.read_until(b"20 70", 10)
        pty.close()
        for call in (lambda: ch.put_file("x", b"data"), lambda: ch.get_file("x"), lambda: ch.stat("."),
                     lambda: ch.listdir(""), lambda: ch.spawn("true"), lambda: ch.sync_time()):
            with pytest.raises(GuestBadRequest, match="not served on this port"):
                call()
        assert not (g.workspace / "x").exists()
    finally:
        assert g.stop() == 0


def test_several_ptys_at_once(ch):
    ptys = [ch.pty_open() for _ in range(4)]
    for i, pty in enumerate(ptys):
        pty.write(f"echo tty-$((100+{i}))\n".encode())
    for i, pty in enumerate(ptys):
        pty.read_until(f"tty-{100 + i}".encode(), 10)
    for pty in ptys:
        pty.close()


# --- concurrency and flow control ------------------------------------------------------------

def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_unread_flood_does_not_block_others_or_grow_the_guest(ch, guest):
    flood = ch.exec_stream("head -c 100000000 /dev/zero; echo tail >&2")
    # nobody reads the flood yet: other channels still work, and oh-guest holds a bounded buffer
    assert ch.exec("echo quick").stdout == b"quick\n"
    assert ch.put_file("during-flood", os.urandom(1 << 20)) == 1 << 20
    pty = ch.pty_open()
    pty.write(b"echo pty-ok\n")
    pty.read_until(b"pty-ok", 10)
    pty.close()
    assert _rss_kib(guest.process.pid) < 16 * 1024
    total = 0
    for stream, data in flood:
        if stream == "stdout":
            total += len(data)
    assert total == 100_000_000 and flood.result.exit_code == 0


def test_exec_pty_and_put_at_once(ch):
    errors, results = [], {}

    def run(name, fn):
        try:
            results[name] = fn()
        except Exception as exc:      # noqa: BLE001 - reported below
            errors.append((name, exc))

    def pty_session():
        pty = ch.pty_open()
        for i in range(20):
            pty.write(f"echo line-{i}-$((i=1))\n".encode())
            pty.read_until(f"line-{i}-1".encode(), 20)
        pty.close()
        return True

    blob = os.urandom(4 << 20)
    jobs = {
        "exec": lambda: ch.exec("for i in $(seq 2000); do echo out $i; echo err $i >&2; done"),
        "pty": pty_session,
        "put": lambda: ch.put_file("concurrent.bin", blob),
        "get": lambda: ch.exec("sha256sum concurrent.bin || true"),
    }
    threads = [threading.Thread(target=run, args=item) for item in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results["exec"].stdout.count(b"\n") == 2000 and results["exec"].stderr.count(b"\n") == 2000
    assert results["put"] == len(blob) and results["pty"]
    assert ch.get_file("concurrent.bin").read() == blob


def test_slow_reader_gets_everything_in_order(ch):
    proc = ch.exec_stream("seq 1 200000")
    got = []
    for i, (stream, data) in enumerate(proc):
        got.append(data)
        if i % 8 == 0:
            time.sleep(0.005)             # a slow consumer; correctness only
    assert b"".join(got) == b"".join(b"%d\n" % i for i in range(1, 200001))


# --- the channel itself ----------------------------------------------------------------------

def test_sync_time_seeds_and_skips_the_clock_in_tests(ch):
    assert ch.sync_time() == {"clock": "skipped", "seeded": "64"}


def test_unknown_operation_and_nul_in_a_request(ch):
    with pytest.raises(GuestBadRequest):
        ch.open("frobnicate", []).expect_start(10)
    with pytest.raises(GuestBadRequest):
        ch.exec(["echo", "a\0b"])


def _read_frame(sock) -> tuple[int, int, bytes]:
    head = b""
    while len(head) < guestd.HEAD.size:
        head += sock.recv(guestd.HEAD.size - len(head))
    kind, cid, n = guestd.HEAD.unpack(head)
    payload = b""
    while len(payload) < n:
        payload += sock.recv(n - len(payload))
    return kind, cid, payload


def test_a_new_hello_resynchronises_after_a_half_sent_frame():
    g = start(raw=True)
    try:
        sock = g.sock
        # an earlier host: HELLO, a PTY open, then half a frame and gone
        sock.sendall(guestd.frame(guestd.HELLO, 0, guestd.MAGIC + b"12345678"))
        assert _read_frame(sock) == (guestd.HELLO, 0, guestd.MAGIC + b"12345678")
        sock.sendall(guestd.frame(guestd.OPEN, 1, guestd.records([("op", "pty")])))
        kind, cid, payload = _read_frame(sock)
        assert (kind, cid) == (guestd.OK, 1)
        shell = int(guestd.parse_records(payload)["pid"])
        sock.sendall(guestd.HEAD.pack(guestd.DATA, 1, 60000) + b"x" * 100)
        # a new host on the same stream: NOPs + HELLO bring it back in step and drop the old channels
        ch = GuestChannel(sock)
        assert ch.exec("echo again").stdout == b"again\n"
        _gone(shell)                      # the old session's shell was hung up
        g.channel = ch
    finally:
        g.stop()


def test_garbage_puts_the_guest_out_of_step_until_the_next_hello():
    g = start(raw=True)
    try:
        g.sock.sendall(bytes([200]) + os.urandom(5000))
        g.channel = GuestChannel(g.sock)
        assert g.channel.exec("echo fine").stdout == b"fine\n"
    finally:
        g.stop()


def test_guest_exit_fails_waiters_with_gone():
    g = start()
    proc = g.channel.exec_stream("sleep 30")
    g.process.kill()
    g.process.wait()
    with pytest.raises(GuestGone):
        proc.wait()
    with pytest.raises(GuestGone):
        g.channel.exec("true")
    g.stop()
