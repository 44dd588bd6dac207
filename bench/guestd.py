"""oh-guest's channel against the same work done directly, on this host (no VM), in one run.

    .venv/bin/python -m bench.guestd [--samples 30] [--mib 64]

Runs oh-guest (built for the host) against a socketpair, as tests/test_guestd.py does, and prints:
- exec: p50/p95 of ``GuestChannel.exec("true")`` against ``subprocess.run(["true"])`` here;
- put / get: MiB/s of a ``--mib`` MiB file through the channel against a plain file copy here;
- PTY: p50 of an echo round trip (write a line, read it back);
- concurrency: exec p50 while another channel streams a flood nobody reads;
- oh-guest's RSS at the end.
Figures depend on the host's load; compare the channel and the baseline of the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.sandbox_substrate import pct

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.guestd_support import start  # noqa: E402


def _times(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _line(name: str, values: list[float], base: list[float] | None = None) -> None:
    text = f"{name:28s} p50 {pct(values, 50) * 1000:8.2f} ms  p95 {pct(values, 95) * 1000:8.2f} ms"
    if base:
        text += f"   baseline p50 {pct(base, 50) * 1000:8.2f} ms"
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--mib", type=int, default=64)
    args = ap.parse_args()
    g = start()
    ch = g.channel
    try:
        _times(lambda: (ch.exec(["true"]), subprocess.run(["true"])), 10)      # warm-up
        _line("exec true", _times(lambda: ch.exec(["true"]), args.samples),
              _times(lambda: subprocess.run(["true"]), args.samples))
        blob = os.urandom(args.mib << 20)
        src = g.root / "blob.src"
        src.write_bytes(blob)
        t = time.perf_counter()
        ch.put_file("blob", blob)
        put = time.perf_counter() - t
        t = time.perf_counter()
        got = sum(len(c) for c in ch.get_file("blob"))
        get = time.perf_counter() - t
        assert got == len(blob)
        t = time.perf_counter()
        shutil.copyfile(src, g.root / "blob.copy")
        copy = time.perf_counter() - t
        print(f"{'put':28s} {args.mib / put:8.1f} MiB/s   baseline copy {args.mib / copy:8.1f} MiB/s")
        print(f"{'get':28s} {args.mib / get:8.1f} MiB/s")
        pty = ch.pty_open()
        marks = iter(range(10**6))

        def echo():                     # the mark only appears in the shell's output, not the echo
            n = next(marks)
            pty.write(b"echo m$((%d+1))x\n" % n)
            pty.read_until(b"m%dx" % (n + 1), 30)
        echo()
        _line("pty echo round trip", _times(echo, args.samples))
        pty.close()
        flood = ch.exec_stream("cat /dev/zero")
        _line("exec true beside a flood", _times(lambda: ch.exec(["true"]), args.samples))
        flood.cancel()
        flood.wait(on_stdout=lambda data: None)
        with open(f"/proc/{g.process.pid}/status") as f:
            rss = next(line.split()[1] for line in f if line.startswith("VmRSS"))
        print(f"{'oh-guest RSS':28s} {int(rss) / 1024:8.1f} MiB")
    finally:
        g.stop()


if __name__ == "__main__":
    main()
