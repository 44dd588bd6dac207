"""openhosting-upload against the plain API loop, in one run, on the same image and installation.

    .venv/bin/python -m bench.upload_tool [--size 1G] [--block 4M]

Image: half random, half zeros, alternating blocks of --block bytes (a typical disk image is mostly
empty; half is a conservative mix). Baseline, the plain API loop a script would write: every 4 MiB
chunk gzip -1'd and POSTed to /drives/<D>/write/<offset> with Content-Encoding: gzip, one at a time,
zero chunks included, over one keep-alive connection. Then the installed `openhosting-upload`
command, as a user runs it: with -c 4M (the loop's chunk), with its defaults, and with -j 1 (to tell
parallelism from the rest). Every contender starts by creating its drive; the timed span ends when
the last chunk is acknowledged. Each drive is compared byte for byte with the image afterwards.
"""

from __future__ import annotations

import argparse
import base64
import filecmp
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controlplane.config import parse_size  # noqa: E402
from tests.support import Installation  # noqa: E402

BIN = Path(sys.executable).parent
LOOP_CHUNK = 4 * 1024**2


def make_image(path: Path, size: int, block: int) -> None:
    """Random blocks at even positions, holes at odd ones."""
    with open(path, "wb") as f:
        f.truncate(size)
        for i, offset in enumerate(range(0, size, block)):
            if i % 2 == 0:
                f.seek(offset)
                f.write(os.urandom(min(block, size - offset)))


class KeepAlive:
    """The loop's HTTP: one persistent connection, Basic auth."""

    def __init__(self, port: int, user, secret: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self.auth = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()

    def post(self, path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
        self.conn.request("POST", path, body, {"Authorization": self.auth, **headers})
        resp = self.conn.getresponse()
        return resp.status, resp.read()


def plain_loop(port: int, user, image: Path, size: int) -> str:
    http_ = KeepAlive(port, user.uuid, user.secret)
    status, body = http_.post("/drives/create", json.dumps({"name": "loop", "size": size}).encode(),
                              {"Content-Type": "application/json", "Accept": "application/json"})
    assert status == 200, body
    drive = json.loads(body)["drive"]
    with open(image, "rb") as f:
        offset = 0
        while data := f.read(LOOP_CHUNK):
            c = zlib.compressobj(1, zlib.DEFLATED, 31)
            packed = c.compress(data) + c.flush()
            status, body = http_.post(f"/drives/{drive}/write/{offset}", packed,
                                      {"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"})
            assert status == 204, body
            offset += len(data)
    http_.conn.close()
    return drive


def tool(port: int, user, image: Path, *args: str) -> str:
    env = dict(os.environ, OHURI=f"http://127.0.0.1:{port}/", OHAUTH=f"{user.uuid}:{user.secret}")
    r = subprocess.run([str(BIN / "openhosting-upload"), *args, str(image)], env=env, capture_output=True,
                       text=True, timeout=1800)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()[2]  # "Created drive <uuid> of size <n>"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="1G")
    parser.add_argument("--block", default="4M", help="size of the alternating random and zero blocks")
    args = parser.parse_args()
    size, block = parse_size(args.size), parse_size(args.block)
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        tmp = Path(tmp)
        image = tmp / "half-zero.raw"
        make_image(image, size, block)
        inst = Installation(state_dir=tmp / "state", database_url=f"sqlite:///{tmp}/state/openhosting.db")
        inst.start()
        try:
            user = inst.create_user("bench")
            api = inst.client(user)
            contenders = [
                ("plain API loop (4 MiB, gzip -1, sequential)", lambda: plain_loop(inst.port, user, image, size)),
                ("openhosting-upload -c 4M", lambda: tool(inst.port, user, image, "-c", "4M")),
                ("openhosting-upload (defaults)", lambda: tool(inst.port, user, image)),
                ("openhosting-upload -c 4M -j 1", lambda: tool(inst.port, user, image, "-c", "4M", "-j", "1")),
            ]
            for name, run in contenders:
                t0 = time.perf_counter()
                drive = run()
                seconds = time.perf_counter() - t0
                stored = inst.state_dir / "drives" / f"{drive}.raw"
                assert filecmp.cmp(image, stored, shallow=False), f"{name}: drive differs from the image"
                requests = int(api.get(f"/drives/{drive}/info").kv()["write:requests"])
                rows.append((name, seconds, requests))
                assert api.post(f"/drives/{drive}/destroy").status == 204
        finally:
            inst.stop()
            inst.purge_libvirt()   # the public network it reserved at start
    mb = size / 1e6
    base = rows[0][1]
    print(f"image {size} bytes: random and zero blocks of {block} bytes alternating (half zeros); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'':46}{'seconds':>9}{'MB/s':>9}{'writes':>8}{'speed-up':>10}")
    for name, seconds, requests in rows:
        print(f"{name:46}{seconds:9.2f}{mb / seconds:9.1f}{requests:8d}{base / seconds:9.1f}x")


if __name__ == "__main__":
    main()
