"""Drive upload/download throughput through the API, beside a no-HTTP baseline on the same data.

    .venv/bin/python -m bench.upload [--size 1G] [--chunk 4M] [--jobs 2]

Image: half zeros, half random bytes (alternating chunks). Upload: every chunk gzip -1'd and POSTed to
/drives/<D>/write/<offset> with Content-Encoding: gzip. Download: /drives/<D>/read/<offset>/<chunk>.
Baseline, same run, same data, no HTTP: gzip -1 each chunk and write it to a file (upload); read the
image file chunk by chunk into another file (download). Both downloads write the same way: zero chunks
left as holes, data chunks written, fsync at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controlplane.config import parse_size  # noqa: E402
from tests.support import Installation  # noqa: E402


def gzip1(data: bytes) -> bytes:
    c = zlib.compressobj(1, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def make_image(path: Path, size: int, chunk: int) -> None:
    with open(path, "wb") as f:
        for i in range(0, size, chunk):
            n = min(chunk, size - i)
            f.write(os.urandom(n) if (i // chunk) % 2 == 0 else bytes(n))


def chunks(path: Path, chunk: int):
    with open(path, "rb") as f:
        offset = 0
        while data := f.read(chunk):
            yield offset, data
            offset += len(data)


def baseline(image: Path, out: Path, chunk: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    for offset, data in chunks(image, chunk):
        os.pwrite(fd, gzip1(data), offset)
    os.fsync(fd)
    os.close(fd)
    up = time.perf_counter() - t0
    t0 = time.perf_counter()
    with open(image, "rb") as f:
        save_sparse(out, os.path.getsize(image), chunk, 1, lambda offset, n: os.pread(f.fileno(), n, offset))
    return up, time.perf_counter() - t0


def save_sparse(out: Path, size: int, chunk: int, jobs: int, fetch) -> None:
    """Fetch every chunk (jobs at a time) into `out`, leaving all-zero chunks as holes; fsync."""
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.ftruncate(fd, size)
        offsets = range(0, size, chunk)
        with ThreadPoolExecutor(jobs) as pool:
            for offset, data in zip(offsets, pool.map(lambda o: fetch(o, min(chunk, size - o)), offsets)):
                if data.count(0) != len(data):
                    os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def through_api(api, image: Path, size: int, chunk: int, jobs: int) -> tuple[float, float, int]:
    drive = api.create_drive(size, name="bench")

    def put(item):
        offset, data = item
        r = api.post(f"/drives/{drive}/write/{offset}", gzip1(data), headers={"Content-Encoding": "gzip"})
        assert r.status == 204, r.text

    t0 = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(put, chunks(image, chunk)))
    up = time.perf_counter() - t0

    def get(offset, n):
        body = api.get(f"/drives/{drive}/read/{offset}/{n}").body
        assert len(body) == n
        return body

    out = image.with_name("downloaded.raw")
    t0 = time.perf_counter()
    save_sparse(out, size, chunk, jobs, get)
    down = time.perf_counter() - t0
    with open(image, "rb") as a, open(out, "rb") as b:
        while (x := a.read(chunk)) or b.peek(1):
            assert x == b.read(len(x)), "downloaded image differs"
    allocated = (api_state(api) / "drives" / f"{drive}.raw").stat().st_blocks * 512
    return up, down, allocated


def api_state(api):
    return api._state_dir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="1G")
    parser.add_argument("--chunk", default="4M")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    size, chunk = parse_size(args.size), parse_size(args.chunk)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        tmp = Path(tmp)
        image = tmp / "image.raw"
        make_image(image, size, chunk)
        inst = Installation(state_dir=tmp / "state", database_url=f"sqlite:///{tmp}/state/openhosting.db")
        inst.start()
        try:
            api = inst.client(inst.create_user())
            api._state_dir = inst.state_dir
            b_up, b_down = baseline(image, tmp / "baseline.gz", chunk)
            a_up, a_down, allocated = through_api(api, image, size, chunk, args.jobs)
        finally:
            inst.stop()
            inst.purge_libvirt()   # the public network it reserved at start
    mb = size / 1e6
    print(f"image {size} bytes, half zeros; chunks of {chunk} bytes; {args.jobs} request(s) in flight")
    print(f"{'':10}{'API MB/s':>12}{'baseline MB/s':>16}{'ratio':>8}")
    print(f"{'upload':10}{mb / a_up:12.1f}{mb / b_up:16.1f}{b_up / a_up:8.2f}")
    print(f"{'download':10}{mb / a_down:12.1f}{mb / b_down:16.1f}{b_down / a_down:8.2f}")
    print(f"drive allocated on disk: {allocated / 1e6:.1f} MB of {mb:.1f} MB (zeros are holes)")


if __name__ == "__main__":
    main()
