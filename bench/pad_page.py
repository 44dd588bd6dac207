"""The pad page: keystroke-to-other-editor latency, many rooms in one proxy, history size.

    .venv/bin/python -m bench.pad_page [--samples 200] [--pads 100] [--seconds 30] [--no-browser]

1. Latency, 2 and 10 editors on one pad (pycrdt clients over WebSocket through the console proxy):
   one keystroke at a time, from editor k to editor k+1, from the insert until the other has applied
   it (the room stores it in the database first). Baseline in the same run: a WebSocket ping/pong
   through the same proxy (the transport's floor).
2. The same with 2 real browsers (chromium + Playwright): a key typed in page A, until page B's Yjs
   text has it (both clocks are the host's).
3. 100 pads x 2 editors held by one proxy process, each editor typing 2 characters a second: the
   proxy's RSS and CPU before (idle) and during, and whether every pad ended with every keystroke.
4. History: bytes stored in pad_updates per hour of typing (one editor at 5 characters a second,
   from the bytes the run above stored).
Target: p50 <= 50 ms on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import installation, percentile as pct  # noqa: E402
from tests.padroom import RoomProcess, YClient, login  # noqa: E402


def proxy_pids(inst) -> list[int]:
    pgid = os.getpgid(inst.proxy.pid)
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == pgid]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tick


def new_pad(api) -> str:
    r = api.post("/api/pads", form={"language": "python3", "contents": ""})
    assert r.status == 200, r.text
    return r.json()["id"]


async def latency(room: RoomProcess, api, editors: int, samples: int) -> list[float]:
    pad = new_pad(api)
    clients = [await YClient(room, pad, name=f"Editor {i}").connect() for i in range(editors)]
    out = []
    for k in range(samples):
        writer, reader = clients[k % editors], clients[(k + 1) % editors]
        expected = len(reader.text) + 1
        t0 = time.perf_counter()
        await writer.type("x")
        while len(reader.text) < expected:
            await asyncio.sleep(0)
            await asyncio.sleep(0.0005)
        out.append((time.perf_counter() - t0) * 1000)
    for c in clients:
        await c.close()
    return out


async def ping_floor(room: RoomProcess, api, samples: int) -> list[float]:
    pad = new_pad(api)
    client = await YClient(room, pad, name="Pinger").connect()
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        await (await client.ws.ping())
        out.append((time.perf_counter() - t0) * 1000)
    await client.close()
    return out


def browser_latency(inst, cookie: str, api, samples: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM, LAUNCH_ARGS

    pad = new_pad(api)
    out = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        ctx_a = browser.new_context(bypass_csp=True)
        ctx_a.add_cookies([{"name": "session-access-key", "value": cookie, "url": inst.console_url}])
        ctx_b = browser.new_context(bypass_csp=True)
        a, b = ctx_a.new_page(), ctx_b.new_page()
        a.goto(f"{inst.console_url}/pads/{pad}")
        b.goto(f"{inst.console_url}/pads/{pad}")
        b.fill("#join-name", "Bench Guest")
        b.click("#join-form button")
        for pg in (a, b):
            pg.wait_for_function("window.padState && window.padState.synced", timeout=30000)
        b.evaluate("() => { window.seen = []; window.padState.ytext.observe(() => window.seen.push(Date.now())) }")
        a.click(".cm-content")
        for i in range(samples):
            t0 = time.time() * 1000
            a.keyboard.type("x")
            b.wait_for_function("(n) => window.seen.length >= n", arg=i + 1, timeout=10000)
            out.append(b.evaluate("(i) => window.seen[i]", i) - t0)
        browser.close()
    return out


async def many_pads(room: RoomProcess, api, pads: int, seconds: float, rate: float) -> tuple[int, int, float]:
    """(keystrokes typed, keystrokes missing at the end, seconds until every editor had every key)."""
    ids = [new_pad(api) for _ in range(pads)]
    clients = []
    for pad in ids:
        for i in range(2):
            clients.append(await YClient(room, pad, name=f"Typist {i}").connect())
    typed = 0
    deadline = time.monotonic() + seconds
    tick = 1.0 / rate
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        for c in clients:
            await c.type("y")
            typed += 1
        await asyncio.sleep(max(0.0, tick - (time.monotonic() - t0)))
    stopped = time.monotonic()
    per_pad = typed // pads
    while time.monotonic() - stopped < 120 and any(len(c.text) < per_pad for c in clients):
        await asyncio.sleep(0.1)
    drain = time.monotonic() - stopped
    missing = sum(max(0, per_pad - len(c.text)) for c in clients)
    for c in clients:
        await c.close()
    return typed, missing, drain


def history_bytes(inst) -> tuple[int, int]:
    from sqlalchemy import func, select

    from controlplane.config import Settings
    from controlplane.db import Database
    from controlplane.models import PadUpdate

    db = Database(Settings.from_env(inst.env))
    with db.read_session() as s:
        count, size = s.execute(select(func.count(), func.sum(func.length(PadUpdate.data)))).one()
    db.dispose()
    return count or 0, size or 0


def show(label: str, samples: list[float]) -> None:
    print(f"{label:<44} p50 {pct(samples, 50):7.1f} ms   p99 {pct(samples, 99):7.1f} ms   (n={len(samples)})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--pads", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rate", type=float, default=2.0, help="keystrokes per second per editor (many pads)")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    inst = installation()
    inst.start()
    try:
        api, cookie = login(inst, "Bench Owner")
        room = RoomProcess(inst, port=int(inst.console_url.rsplit(":", 1)[1]))
        print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs); database: SQLite")
        floor = asyncio.run(ping_floor(room, api, args.samples))
        show("WebSocket ping through the proxy (floor)", floor)
        for editors in (2, 10):
            show(f"keystroke to another editor, {editors} editors", asyncio.run(latency(room, api, editors, args.samples)))
        if not args.no_browser:
            show("keystroke to the other browser, 2 browsers", browser_latency(inst, cookie, api, min(args.samples, 100)))
        pids = proxy_pids(inst)
        idle_rss, cpu0 = rss_mib(pids), cpu_seconds(pids)
        count0, bytes0 = history_bytes(inst)
        t0 = time.monotonic()
        peak = {"rss": idle_rss}

        async def run_many():
            async def sample():
                while True:
                    peak["rss"] = max(peak["rss"], rss_mib(pids))
                    await asyncio.sleep(1)
            sampler = asyncio.create_task(sample())
            try:
                return await many_pads(room, api, args.pads, args.seconds, args.rate)
            finally:
                sampler.cancel()

        typed, missing, drain = asyncio.run(run_many())
        wall = time.monotonic() - t0
        cpu = cpu_seconds(pids) - cpu0
        count1, bytes1 = history_bytes(inst)
        print(f"{args.pads} pads x 2 editors, {args.rate:g} keys/s each, {args.seconds:g} s: {typed} keystrokes, "
              f"{missing} missing at the end; every editor had every keystroke {drain:.1f} s after the typing stopped")
        print(f"proxy RSS idle {idle_rss:.0f} MiB, peak {peak['rss']:.0f} MiB "
              f"({(peak['rss'] - idle_rss) * 1024 / max(1, args.pads):.0f} KiB per pad); "
              f"CPU {cpu:.1f} s in {wall:.1f} s ({100 * cpu / wall:.0f}% of one core)")
        updates, size = count1 - count0, bytes1 - bytes0
        per_key = size / max(1, updates)
        print(f"history: {updates} updates, {size} bytes ({per_key:.1f} bytes per keystroke) -> "
              f"{per_key * 5 * 3600 / 1024 / 1024:.1f} MiB per hour of typing at 5 keys/s")
    finally:
        inst.stop()


if __name__ == "__main__":
    main()
