"""The command line tools, run as a user runs them: the installed `openhosting`, `openhosting-upload`
and `openhosting-download` commands against a real installation, with OHURI and OHAUTH set.

Where a test must see or disturb the wire (count write requests, fail a chunk, kill a process when
the Nth chunk is acknowledged) the tools talk through `Proxy`, a small recording HTTP proxy.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
KiB, MiB, GiB = 1024, 1024**2, 1024**3
WRITE = re.compile(r"^/drives/([0-9a-f-]{36})/write/(\d+)$")
READ = re.compile(r"^/drives/([0-9a-f-]{36})/read/(\d+)/(\d+)$")
RESUME = re.compile(r"To resume, run:\n  (.+)\n")


# ---- running the tools ------------------------------------------------------------------------------


def tool_env(port: int, user, secret: str | None = None) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["OHURI"] = f"http://127.0.0.1:{port}/"
    env["OHAUTH"] = f"{user.uuid}:{user.secret if secret is None else secret}"
    return env


def run(tool: str, *args, env: dict, cwd: Path | None = None, input: bytes | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / tool), *map(str, args)], env=env, cwd=cwd, input=input,
                          capture_output=True, timeout=timeout)


def sh(script: str, env: dict, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def info(api, drive: str) -> dict:
    r = api.get(f"/drives/{drive}/info")
    assert r.status == 200, r.text
    return r.kv()


def created_drive(stdout: bytes | str) -> str:
    text = stdout.decode() if isinstance(stdout, bytes) else stdout
    return re.search(r"^Created drive ([0-9a-f-]{36}) of size \d+$", text, re.M).group(1)


def download_equals(env: dict, drive: str, expected: bytes, dest: Path, *args) -> Path:
    r = run("openhosting-download", *args, drive, dest, env=env)
    assert r.returncode == 0, r.stderr.decode()
    assert dest.read_bytes() == expected
    return dest


# ---- images -----------------------------------------------------------------------------------------


def random_image(path: Path, size: int) -> bytes:
    """Random bytes with no all-zero byte, so that no chunk (even a 1-byte tail) is skipped as zeros."""
    data = bytes(b or 1 for b in os.urandom(size))
    path.write_bytes(data)
    return data


def zero_heavy_image(path: Path, size: int, islands: list[tuple[int, int]]) -> bytes:
    """Zeros with random islands (offset, length); the file is sparse where it is zero."""
    data = bytearray(size)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length in islands:
            piece = os.urandom(length)
            data[offset:offset + length] = piece
            f.seek(offset)
            f.write(piece)
    return bytes(data)


def nonzero_chunks(data: bytes, chunk: int) -> set[int]:
    return {off for off in range(0, len(data), chunk) if any(data[off:off + chunk])}


def gzip_member_over_4g(path: Path, head: bytes, zero_segments: int, tail: bytes, seg: int = 64 * MiB) -> int:
    """One gzip member holding head + zeros + tail, built from deflate segments that each start from
    a fresh compressor (so repeating one is valid). Its ISIZE trailer wraps at 4 GiB. Returns the size."""
    def deflate(data: bytes, mode: int) -> bytes:
        c = zlib.compressobj(1, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush(mode)

    zero = bytes(seg)
    zero_deflated = deflate(zero, zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(head)
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")
        f.write(deflate(head, zlib.Z_FULL_FLUSH))
        for _ in range(zero_segments):
            f.write(zero_deflated)
            crc = zlib.crc32(zero, crc)
        f.write(deflate(tail, zlib.Z_FINISH))
        total = len(head) + zero_segments * seg + len(tail)
        f.write(struct.pack("<II", zlib.crc32(tail, crc), total & 0xFFFFFFFF))
    return total


# ---- a recording proxy ------------------------------------------------------------------------------


class Proxy:
    """Forwards every request to the API and records (method, path, status) once the answer is
    delivered; status None means the upstream gave no answer and the client's connection was dropped,
    "lost" that the upstream answered but the client was gone.

    `fault(method, path)` may return a status to answer instead of forwarding; `after(method, path,
    status)` runs before an answer is delivered (to kill something at an exact point); `delay` slows
    every write.
    """

    def __init__(self, upstream: int):
        self.upstream = upstream
        self.log: list[tuple[str, str, int | str | None]] = []
        self.lock = threading.Lock()
        self.fault = None
        self.after = None
        self.delay = 0.0
        self.active = self.max_active = self.busy = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                proxy.handle(self)

            do_POST = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        writing = bool(WRITE.match(h.path))
        with self.lock:
            self.busy += 1
            self.active += writing
            self.max_active = max(self.max_active, self.active)
        try:
            length = int(h.headers.get("Content-Length") or 0)
            body = h.rfile.read(length)
            if len(body) < length:  # the client died while sending: nothing reaches the server
                h.close_connection = True
                return
            status = self.fault(h.command, h.path) if self.fault else None
            if status:
                headers, data = {"X-Elastic-Error": "failed"}, b"injected failure\n"
            else:
                if writing and self.delay:
                    time.sleep(self.delay)
                conn = http.client.HTTPConnection("127.0.0.1", self.upstream, timeout=60)
                try:
                    conn.request(h.command, h.path, body, {k: v for k, v in h.headers.items()
                                                           if k.lower() not in ("host", "connection")})
                    resp = conn.getresponse()
                    status, data = resp.status, resp.read()
                    headers = {k: v for k, v in resp.getheaders()
                               if k.lower() not in ("connection", "transfer-encoding", "content-length")}
                except (OSError, http.client.HTTPException):
                    self.record(h.command, h.path, None)
                    h.close_connection = True
                    return
                finally:
                    conn.close()
            if self.after:
                self.after(h.command, h.path, status)
            try:
                h.send_response(status)
                for k, v in headers.items():
                    h.send_header(k, v)
                h.send_header("Content-Length", str(len(data)))
                h.end_headers()
                h.wfile.write(data)
                h.wfile.flush()
            except OSError:  # the client is gone (killed): the answer was not delivered
                self.record(h.command, h.path, "lost")
                h.close_connection = True
                return
            self.record(h.command, h.path, status)
        finally:
            with self.lock:
                self.busy -= 1
                self.active -= writing

    def settle(self, timeout: float = 30) -> None:
        """Wait until no request is being handled (those of a killed client finish late)."""
        deadline = time.monotonic() + timeout
        while self.busy and time.monotonic() < deadline:
            time.sleep(0.01)

    def record(self, method: str, path: str, status: int | None) -> None:
        with self.lock:
            self.log.append((method, path, status))

    def writes(self, status: int | None | str = "any") -> list[int]:
        """Offsets of write requests (answered with `status`, unless "any")."""
        with self.lock:
            return [int(WRITE.match(p).group(2)) for m, p, s in self.log
                    if WRITE.match(p) and (status == "any" or s == status)]

    def reads(self) -> list[int]:
        with self.lock:
            return [int(READ.match(p).group(2)) for m, p, s in self.log if READ.match(p)]

    def reset(self) -> None:
        with self.lock:
            self.log.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy_for():
    made = []

    def make(port: int) -> Proxy:
        made.append(Proxy(port))
        return made[-1]

    yield make
    for p in made:
        p.close()


@pytest.fixture
def env(alice):
    return tool_env(alice.port, alice.user)


# ---- the seed's examples, verbatim ------------------------------------------------------------------


def test_seed_example_create_then_write(alice, env, tmp_path):
    data = random_image(tmp_path / "image.raw", 10_000_000)
    r = sh("openhosting -c drives create << EOF | grep drive\nname TestDrive\nsize 10000000\nEOF\n",
           env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"drive [0-9a-f-]{36}\n", r.stdout)
    drive = r.stdout.split()[1]
    r = sh(f"openhosting -f image.raw drives {drive} write", env, tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert info(alice, drive)["name"] == "TestDrive"
    download_equals(env, drive, data, tmp_path / "back.raw")


def test_seed_example_upload(alice, env, tmp_path):
    data = random_image(tmp_path / "image.raw", 10_000_000)
    r = sh("openhosting-upload image.raw", env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"Created drive [0-9a-f-]{36} of size 10000000\n"
                        r"Uploading 2 chunks of 5242880 bytes: \.\. completed\n", r.stdout)
    drive = created_drive(r.stdout)
    assert info(alice, drive)["name"] == "image.raw"
    assert not (tmp_path / "image.raw.oh-upload").exists()
    download_equals(env, drive, data, tmp_path / "back.raw")


# ---- openhosting ------------------------------------------------------------------------------------


def test_openhosting_bodies_and_json(alice, env, tmp_path):
    r = run("openhosting", "-c", "drives", "create", env=env, input=b"name kv drive\nsize 1M\n")
    assert r.returncode == 0, r.stderr
    out = dict(line.split(" ", 1) for line in r.stdout.decode().splitlines())
    drive = out["drive"]
    assert (out["name"], out["size"]) == ("kv drive", str(MiB))

    (tmp_path / "set.txt").write_text("name renamed\ntags a b\n")
    r = run("openhosting", "-f", tmp_path / "set.txt", "drives", drive, "set", env=env)
    assert r.returncode == 0, r.stderr
    assert b"name renamed\n" in r.stdout and b"tags a b\n" in r.stdout

    r = run("openhosting", "-j", "-c", "drives", "create", env=env,
            input=json.dumps({"name": "json drive", "size": 2 * MiB}).encode())
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert (made["name"], made["size"]) == ("json drive", 2 * MiB)

    r = run("openhosting", "-j", "drives", "list", env=env)
    assert {"drive": made["drive"]} in json.loads(r.stdout)
    r = run("openhosting", "drives", "list", env=env)
    assert {drive, made["drive"]} <= set(r.stdout.decode().split())

    # A raw write with -f, then read back through the tool: output is the server's bytes as they came.
    payload = os.urandom(5000)
    (tmp_path / "raw").write_bytes(payload)
    assert run("openhosting", "-f", tmp_path / "raw", "drives", drive, "write", "4096", env=env).returncode == 0
    r = run("openhosting", "drives", drive, "read", "4096", "5000", env=env)
    assert r.stdout == payload

    # -j errors: the message comes out of the JSON envelope.
    r = run("openhosting", "-j", "drives", str(uuid.uuid4()), "info", env=env)
    assert r.returncode == 1
    assert r.stderr.decode() == "openhosting: missing: drive not found (HTTP 404)\n"


def test_openhosting_verbose_hides_the_secret(alice, env):
    r = run("openhosting", "-v", "drives", "list", env=env)
    assert r.returncode == 0
    err = r.stderr.decode()
    assert "> POST /drives/list HTTP/1.1" in err and "< HTTP/1.1 200" in err
    assert alice.user.secret not in err and "Authorization: Basic ***" in err


def test_openhosting_prompts_for_the_secret(alice):
    env = tool_env(alice.port, alice.user)
    env["OHAUTH"] = alice.user.uuid
    drive = alice.create_drive("1M")
    # No controlling terminal: getpass reads the key from standard input.
    r = subprocess.run([str(BIN / "openhosting"), "drives", "list"], env=env, capture_output=True,
                       input=alice.user.secret.encode() + b"\n", start_new_session=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert drive in r.stdout.decode()
    assert f"Secret API key for {alice.user.uuid}" in r.stderr.decode()


def test_errors_exit_nonzero_with_the_servers_message(alice, env, tmp_path):
    bad = tool_env(alice.port, alice.user, secret="wrong")
    missing = str(uuid.uuid4())
    random_image(tmp_path / "img", 100_000)
    cases = [
        (run("openhosting", "drives", "list", env=bad), "auth: "),
        (run("openhosting-upload", tmp_path / "img", env=bad), "auth: "),
        (run("openhosting-download", missing, tmp_path / "out", env=bad), "auth: "),
        (run("openhosting", "drives", missing, "info", env=env), "missing: drive not found (HTTP 404)"),
        (run("openhosting-upload", "-d", missing, tmp_path / "img", env=env), "missing: drive not found"),
        (run("openhosting-download", missing, tmp_path / "out", env=env), "missing: drive not found"),
        (run("openhosting", "-c", "drives", "create", env=env, input=b"name x\n"),
         "usage: 'size' is required (HTTP 400)"),
        (run("openhosting", "nonsense", env=env), "missing: no such command or object: /nonsense"),
    ]
    for r, message in cases:
        assert r.returncode == 1, (r.args, r.stdout)
        assert message in r.stderr.decode(), (r.args, r.stderr)
    assert not (tmp_path / "out").exists()
    r = run("openhosting", "drives", "list", env={k: v for k, v in env.items() if k != "OHURI"})
    assert r.returncode == 2 and b"OHURI is not set" in r.stderr


def test_full_pool(fresh_installation, tmp_path):
    inst = fresh_installation(OPENHOSTING_POOL_RESERVE="1T", OPENHOSTING_POOL_LIMIT="4M")
    user = inst.create_user("full")
    env = tool_env(inst.port, user)
    data = random_image(tmp_path / "img", 3 * MiB)
    r = run("openhosting-upload", "-c", "1M", "--retries", "3", tmp_path / "img", env=env)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert re.search(r"full: .+ \(HTTP 507\)", err), err
    assert "retry" not in err  # a full pool is not a moment's trouble: no retries
    drive = created_drive(r.stdout)
    assert f"--resume -d {drive} -o 0" in err
    r = run("openhosting", "-f", tmp_path / "img", "drives", drive, "write", env=env)
    assert r.returncode == 1 and b"full: " in r.stderr
    # The drive pool's size limit refuses the drive itself: nothing to resume.
    random_image(tmp_path / "big", 5 * MiB)
    r = run("openhosting-upload", tmp_path / "big", env=env)
    assert r.returncode == 1
    assert b"full: storage pool full" in r.stderr and b"To resume" not in r.stderr
    assert len(data) == 3 * MiB


# ---- upload → download ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["random-odd", "zero-heavy"])
def test_upload_download_roundtrip(alice, env, tmp_path, proxy_for, kind):
    image = tmp_path / "image.raw"
    chunk = 256 * KiB
    if kind == "random-odd":
        data = random_image(image, 3 * MiB + 12345)
    else:
        data = zero_heavy_image(image, 20 * MiB + 77, [(0, 4096), (3 * MiB + 5, 300 * KiB),
                                                       (11 * MiB, 1), (20 * MiB, 77)])
    proxy = proxy_for(alice.port)
    proxy.delay = 0.02
    penv = tool_env(proxy.port, alice.user)
    r = run("openhosting-upload", "-c", "256k", "-j", "4", image, env=penv)
    assert r.returncode == 0, r.stderr
    n = -(-len(data) // chunk)
    assert r.stdout.decode().endswith(f"Uploading {n} chunks of {chunk} bytes: {'.' * n} completed\n")
    drive = created_drive(r.stdout)
    sent = nonzero_chunks(data, chunk)
    # Zero chunks are not sent at all; every other chunk exactly once; several at a time.
    assert sorted(proxy.writes()) == sorted(sent)
    assert int(info(alice, drive)["write:requests"]) == len(sent)
    assert proxy.max_active >= 2
    out = download_equals(env, drive, data, tmp_path / "back.raw", "-c", "256k", "-j", "3")
    if kind == "zero-heavy":  # the download is sparse where the drive is zeros
        assert out.stat().st_blocks * 512 <= 600 * KiB


def test_upload_gzip_image(alice, env, tmp_path, proxy_for):
    data = zero_heavy_image(tmp_path / "disk.raw", 6 * MiB + 3, [(100, 700 * KiB), (5 * MiB, 11)])
    one = gzip.compress(data[:2 * MiB], 6)
    # Two members, as `cat a.gz b.gz` makes, and zero padding after them, as dd makes.
    (tmp_path / "disk.raw.gz").write_bytes(one + gzip.compress(data[2 * MiB:], 1) + bytes(1000))
    r = run("openhosting-upload", "-z", "-c", "512k", "--verify", tmp_path / "disk.raw.gz", env=env)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert f"{len(data)} bytes uncompressed" in out and "Verified: drive" in out
    drive = created_drive(out)
    assert int(info(alice, drive)["size"]) == len(data)
    download_equals(env, drive, data, tmp_path / "back.raw")
    # A truncated gzip file is refused before anything is created.
    (tmp_path / "cut.gz").write_bytes((one + one)[:-100])
    r = run("openhosting-upload", "-z", tmp_path / "cut.gz", env=env)
    assert r.returncode == 1 and b"truncated gzip data" in r.stderr and b"Created" not in r.stdout


def test_upload_gzip_image_over_4gib(alice, env, tmp_path):
    head, tail = os.urandom(MiB), os.urandom(3 * MiB)
    size = gzip_member_over_4g(tmp_path / "big.gz", head, 64, tail)
    assert size == 4 * GiB + 4 * MiB
    r = run("openhosting-upload", "-z", "-c", "16M", tmp_path / "big.gz", env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    drive = created_drive(r.stdout)
    got = info(alice, drive)
    assert int(got["size"]) == size  # not the 4 MiB that the ISIZE trailer says
    assert int(got["write:requests"]) == 2  # the head's chunk and the tail's chunk: the rest is zeros
    assert alice.get(f"/drives/{drive}/read/0/{MiB}").body == head
    assert alice.get(f"/drives/{drive}/read/{size - 3 * MiB}/{3 * MiB}").body == tail
    assert alice.get(f"/drives/{drive}/read/{2 * GiB}/{MiB}").body == bytes(MiB)


def test_upload_into_existing_drive_overwrites_zeros(alice, env, tmp_path):
    drive = alice.create_drive("2M")
    assert alice.post(f"/drives/{drive}/write/0", os.urandom(2 * MiB)).status == 204
    data = zero_heavy_image(tmp_path / "img", 2 * MiB, [(MiB, 10)])
    r = run("openhosting-upload", "-d", drive, "-c", "256k", "--verify", tmp_path / "img", env=env)
    assert r.returncode == 0, r.stderr
    assert "Created" not in r.stdout.decode()
    download_equals(env, drive, data, tmp_path / "back")


# ---- retries and resuming ---------------------------------------------------------------------------


def test_retries_with_backoff(alice, env, tmp_path, proxy_for):
    data = random_image(tmp_path / "img", MiB)
    proxy = proxy_for(alice.port)
    failed: set[str] = set()

    def fault(method, path):
        m = WRITE.match(path)
        if m and int(m.group(2)) % (256 * KiB) == 0 and path not in failed:
            failed.add(path)
            return 503
        return None

    proxy.fault = fault
    r = run("openhosting-upload", "-c", "64k", "--retry-delay", "0.05", tmp_path / "img",
            env=tool_env(proxy.port, alice.user))
    assert r.returncode == 0, r.stderr
    assert r.stderr.decode().count("retry 1 of 6") == 4
    assert len(proxy.writes(503)) == 4 and sorted(proxy.writes(204)) == list(range(0, MiB, 64 * KiB))
    download_equals(env, created_drive(r.stdout), data, tmp_path / "back")


def test_gives_up_with_the_exact_resume_command(alice, env, tmp_path, proxy_for):
    data = random_image(tmp_path / "my image.raw", MiB + 1)
    proxy = proxy_for(alice.port)
    proxy.fault = lambda method, path: 503 if path.endswith(f"/write/{512 * KiB}") else None
    penv = tool_env(proxy.port, alice.user)
    r = run("openhosting-upload", "-c", "64k", "-j", "2", "--retries", "2", "--retry-delay", "0.05",
            "my image.raw", env=penv, cwd=tmp_path)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "failed: injected failure (HTTP 503)" in err and "retry 2 of 2" in err
    drive = created_drive(r.stdout)
    command = RESUME.search(err).group(1)
    assert command.startswith(f"openhosting-upload --resume -d {drive} -o ")
    assert command.endswith(" -c 65536 -j 2 'my image.raw'")
    acked = set(proxy.writes(204))
    proxy.fault = None
    proxy.reset()
    r = sh(command, penv, tmp_path)
    assert r.returncode == 0, r.stderr
    again = proxy.writes()
    assert not acked & set(again)  # nothing acknowledged before is sent again
    assert acked | set(again) == set(range(0, MiB + 1, 64 * KiB))
    download_equals(env, drive, data, tmp_path / "back")


def test_resume_after_the_server_is_killed(fresh_installation, tmp_path, proxy_for):
    inst = fresh_installation()
    user = inst.create_user("resume")
    api = inst.client(user)
    data = random_image(tmp_path / "img", 4 * MiB)
    proxy = proxy_for(inst.port)
    penv = tool_env(proxy.port, user)
    killed = threading.Event()

    lock = threading.Lock()

    def after(method, path, status):
        with lock:
            if status != 204 or len(proxy.writes(204)) < 20 or killed.is_set():
                return
            killed.set()
        inst.stop_api(signal.SIGKILL)

    proxy.after = after
    r = run("openhosting-upload", "-c", "64k", "-j", "4", "--retries", "2", "--retry-delay", "0.1",
            "img", env=penv, cwd=tmp_path)
    assert killed.is_set() and r.returncode == 1
    proxy.settle()
    err = r.stderr.decode()
    assert "no answer from the server" in err
    drive = created_drive(r.stdout)
    command = RESUME.search(err).group(1)
    acked = set(proxy.writes(204))
    assert 20 <= len(acked) < 64
    inst.start_api()
    proxy.after = None
    proxy.reset()
    r = sh(command, penv, tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"{len(acked)} of 64 chunks were uploaded before" in r.stdout
    again = proxy.writes()
    assert not acked & set(again) and len(again) == len(set(again))
    assert acked | set(again) == set(range(0, 4 * MiB, 64 * KiB))
    download_equals(tool_env(inst.port, user), drive, data, tmp_path / "back")
    assert not (tmp_path / "img.oh-upload").exists()
    assert api.get(f"/drives/{drive}/info").status == 200


def _upload_killed_midway(alice, tmp_path, proxy, sig: int, after_acks: int = 16):
    """Start an upload through `proxy` and send it `sig` when the `after_acks`th write is answered
    (before that answer is delivered). Returns (process result, drive, acknowledged offsets, data)."""
    data = random_image(tmp_path / "img", 4 * MiB)
    penv = tool_env(proxy.port, alice.user)
    fired = threading.Event()
    lock = threading.Lock()

    def after(method, path, status):
        with lock:
            if status != 204 or len(proxy.writes(204)) < after_acks - 1 or fired.is_set():
                return
            fired.set()
        proc.send_signal(sig)
        if sig == signal.SIGKILL:
            proc.wait()

    proxy.after = after
    proc = subprocess.Popen([str(BIN / "openhosting-upload"), "-c", "64k", "-j", "4", "img"], env=penv,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    proxy.settle()
    proxy.after = None
    assert fired.is_set()
    return proc.returncode, out.decode(), err.decode(), created_drive(out), set(proxy.writes(204)), data


def test_resume_after_the_upload_is_killed(alice, env, tmp_path, proxy_for):
    proxy = proxy_for(alice.port)
    rc, out, err, drive, acked, data = _upload_killed_midway(alice, tmp_path, proxy, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    state = json.loads((tmp_path / "img.oh-upload").read_text())
    recorded = {off for a, b in state["done"] for off in range(a * 64 * KiB, b * 64 * KiB, 64 * KiB)}
    assert state["drive"] == drive and recorded <= acked
    proxy.reset()
    r = run("openhosting-upload", "--resume", "-c", "64k", "img", env=tool_env(proxy.port, alice.user),
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    again = set(proxy.writes())
    assert not recorded & again  # recorded chunks are never sent again
    assert len(acked & again) <= 4  # at most the answers in flight when the process died
    assert acked | again == set(range(0, 4 * MiB, 64 * KiB))
    download_equals(env, drive, data, tmp_path / "back")


def test_resume_after_sigterm(alice, env, tmp_path, proxy_for):
    proxy = proxy_for(alice.port)
    rc, out, err, drive, acked, data = _upload_killed_midway(alice, tmp_path, proxy, signal.SIGTERM)
    assert rc == 130 and out.endswith(" failed\n")
    command = RESUME.search(err).group(1)
    proxy.reset()
    r = sh(command, tool_env(proxy.port, alice.user), tmp_path)
    assert r.returncode == 0, r.stderr
    again = set(proxy.writes())
    assert not acked & again  # a clean stop records every acknowledged chunk
    assert acked | again == set(range(0, 4 * MiB, 64 * KiB))
    download_equals(env, drive, data, tmp_path / "back")


def test_resume_by_asking_the_server(alice, env, tmp_path, proxy_for):
    proxy = proxy_for(alice.port)
    rc, out, err, drive, acked, data = _upload_killed_midway(alice, tmp_path, proxy, signal.SIGKILL)
    tried = set(proxy.writes())
    (tmp_path / "img.oh-upload").unlink()  # no state file: the drive's content decides
    proxy.reset()
    r = run("openhosting-upload", "--resume", "-c", "64k", "img", env=tool_env(proxy.port, alice.user),
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"Resuming upload to drive {drive}: comparing" in r.stdout.decode()
    again = set(proxy.writes())
    assert not acked & again
    # Chunks the server wrote whose answer never reached the killed process need not be sent either.
    assert (tried | again) == set(range(0, 4 * MiB, 64 * KiB))
    assert set(proxy.reads()) == set(range(0, 4 * MiB, 64 * KiB))
    download_equals(env, drive, data, tmp_path / "back")


def test_verify_detects_a_difference(alice, env, tmp_path):
    data = random_image(tmp_path / "img", MiB)
    drive = alice.create_drive(str(MiB))
    assert run("openhosting-upload", "-d", drive, tmp_path / "img", env=env).returncode == 0
    (tmp_path / "img").write_bytes(data[:5000] + bytes([data[5000] ^ 1]) + data[5001:])
    r = run("openhosting-upload", "-d", drive, "-o", "1M", "--verify", tmp_path / "img", env=env)
    assert r.returncode == 1
    assert b"verification FAILED" in r.stderr and b"the first at offset 0" in r.stderr


# ---- download ---------------------------------------------------------------------------------------


def test_download_resumes_and_stays_sparse(alice, env, tmp_path, proxy_for):
    data = zero_heavy_image(tmp_path / "img", 8 * MiB, [(0, 64 * KiB), (3 * MiB, MiB), (8 * MiB - 5, 5)])
    drive = alice.create_drive(str(8 * MiB))
    assert run("openhosting-upload", "-d", drive, tmp_path / "img", env=env).returncode == 0
    proxy = proxy_for(alice.port)
    proxy.fault = lambda method, path: 503 if path.endswith(f"/read/{5 * MiB}/{256 * KiB}") else None
    penv = tool_env(proxy.port, alice.user)
    out = tmp_path / "out.raw"
    r = run("openhosting-download", "-c", "256k", "-j", "2", "--retries", "1", "--retry-delay", "0.05",
            drive, out, env=penv)
    assert r.returncode == 1
    assert r.stdout.decode().endswith(" failed\n")
    command = RESUME.search(r.stderr.decode()).group(1)
    assert command == f"openhosting-download -c 262144 -j 2 {drive} {out}"
    fetched = {off for off in proxy.reads() if off != 5 * MiB}
    proxy.fault = None
    proxy.reset()
    r = sh(command, penv, tmp_path)
    assert r.returncode == 0, r.stderr
    assert not fetched & set(proxy.reads()) and 5 * MiB in proxy.reads()
    assert out.read_bytes() == data
    assert out.stat().st_blocks * 512 <= 1200 * KiB
    assert not (tmp_path / "out.raw.oh-download").exists()


def test_download_continues_a_partial_file(alice, env, tmp_path, proxy_for):
    data = random_image(tmp_path / "img", 3 * MiB + 1000)
    drive = alice.create_drive(str(len(data)))
    assert run("openhosting-upload", "-d", drive, tmp_path / "img", env=env).returncode == 0
    out = tmp_path / "out"
    out.write_bytes(data[:MiB + 10])  # what an interrupted original tool leaves
    proxy = proxy_for(alice.port)
    r = run("openhosting-download", "-c", "512k", drive, out, env=tool_env(proxy.port, alice.user))
    assert r.returncode == 0, r.stderr
    assert f"Resuming out at offset {MiB + 10}" in r.stdout.decode()
    assert min(proxy.reads()) == MiB + 10
    assert r.stdout.decode().endswith("Downloading 5 chunks of 524288 bytes: ..... completed\n")
    assert out.read_bytes() == data
    r = run("openhosting-download", drive, out, env=env)
    assert r.returncode == 0 and b"complete already" in r.stdout


def test_chunks_too_large_for_the_server(fresh_installation, tmp_path):
    inst = fresh_installation(OPENHOSTING_MAX_BODY="1M")
    user = inst.create_user("small")
    env = tool_env(inst.port, user)
    data = random_image(tmp_path / "img", 3 * MiB + 5)
    r = run("openhosting-upload", "-c", "2M", "img", env=env, cwd=tmp_path)
    assert r.returncode == 1 and b"(HTTP 413)" in r.stderr
    command = RESUME.search(r.stderr.decode()).group(1)
    assert command.endswith(" -c 1048576 img")  # the resume command halves the chunk
    r = sh(command, env, tmp_path)
    assert r.returncode == 0, r.stderr
    download_equals(env, created_drive(r.stdout) if "Created" in r.stdout else command.split()[3],
                    data, tmp_path / "back")


def test_progress_bar_on_a_terminal(alice, env, tmp_path):
    import pty

    random_image(tmp_path / "img", 2 * MiB)
    master, slave = pty.openpty()
    os.set_blocking(master, True)
    proc = subprocess.Popen([str(BIN / "openhosting-upload"), "-c", "64k", "img"], env=env, cwd=tmp_path,
                            stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    out = b""
    while True:
        try:
            piece = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not piece:
            break
        out += piece
    os.close(master)
    assert proc.wait(timeout=60) == 0
    last = out.decode().replace("\r\n", "\n").rstrip("\n").split("\r")[-1]  # the final redraw
    assert re.match(r"Uploading 32 chunks of 65536 bytes: (\[#+\] )?100% 2\.1MB [\d.]+MB/s in 00:\d\d\S* "
                    r"completed", last), out
