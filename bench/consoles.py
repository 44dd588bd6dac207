"""Browser consoles: how fast a console link shows the screen, and what idle sessions cost the proxy.

    .venv/bin/python -m bench.consoles [--count 10] [--sessions 200]

VNC (one server booting the tiny test guest from a CD-ROM, VNC password set):
- link to first frame: POST /servers/<uuid>/console, then until the first framebuffer update, three
  ways in the same run: straight to QEMU's VNC port with the password (the floor: no API, no proxy),
  through the proxy with a Python WebSocket client (API + ticket + proxy + RFB), and in chromium
  (the same plus loading the page and noVNC, until its canvas shows pixels);
- idle sessions: `--sessions` VNC sessions through one proxy process (each past ServerInit, then
  silent), the proxy worker's RSS before and with them held (target: 200 sessions under 150 MiB).
  QEMU's VNC server takes 32 clients at most, so the sessions are spread over servers, 25 each.
Terminal numbers: `bench/consoles_terminal.py` (`python -m bench.consoles_terminal`: workspace_url →
first prompt, keystroke echo p50/p99 through the proxy, through SSH and a local PTY floor).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import installation, percentile  # noqa: E402
from tests.browser import CHROMIUM, LAUNCH_ARGS  # noqa: E402
from tests.guestkit import GUEST_UP, build_test_iso  # noqa: E402
from tests.vnc import handshake  # noqa: E402

PASSWORD = "b3nch"
PER_SERVER = 25
OPENING = 20      # sessions being opened at once (a crowd of people clicking, not one burst)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def proxy_worker(inst) -> int:
    out = subprocess.run(["pgrep", "-P", str(inst.proxy.pid)], capture_output=True, text=True).stdout.split()
    assert len(out) == 1, f"expected one proxy worker, found {out}"
    return int(out[0])


def link(api, sid: str) -> str:
    r = api.post(f"/servers/{sid}/console", headers={"Accept": "application/json"})
    assert r.status == 200, r.text
    return r.json()["url"]


async def rfb_session(url: str, first_frame: bool, hold: asyncio.Event | None = None) -> float:
    """Open a console link's WebSocket as noVNC would, up to ServerInit (and the first framebuffer
    update when `first_frame`); with `hold`, keep it open and silent until the event is set. Returns
    when (perf_counter) the first update's header arrived (or ServerInit did): not the close, whose
    handshake this client may delay by leaving the rest of the update unread."""
    import websockets

    parts = urlsplit(url)
    async with websockets.connect(f"ws://{parts.netloc}{parts.path}/ws", origin=f"http://{parts.netloc}",
                                  subprotocols=["binary", f"ticket.{parts.fragment}"], max_size=None,
                                  open_timeout=120, ping_interval=None) as ws:
        buf = bytearray()

        async def read(n):
            while len(buf) < n:
                buf.extend(await ws.recv())
            out = bytes(buf[:n])
            del buf[:n]
            return out

        await read(12)
        await ws.send(b"RFB 003.008\n")
        await read((await read(1))[0])   # the security types: [None]
        await ws.send(b"\x01")
        await read(4)
        await ws.send(b"\x01")
        width, height = struct.unpack(">HH", await read(4))
        await read(16)
        await read(struct.unpack(">I", await read(4))[0])
        if first_frame:
            await ws.send(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
            while (await read(1))[0] != 0:
                pass
        arrived = time.perf_counter()
        if hold is not None:
            await hold.wait()
        return arrived


def vnc_link_to_frame(api, sid: str, count: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    info = api.get(f"/servers/{sid}/info").kv()
    direct, proxied, browser = [], [], []
    for _ in range(count):
        t0 = time.perf_counter()
        handshake(info["vnc:ip"], int(info["vnc:port"]), PASSWORD)
        direct.append(time.perf_counter() - t0)
    for _ in range(count):
        t0 = time.perf_counter()
        proxied.append(asyncio.run(rfb_session(link(api, sid), first_frame=True)) - t0)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        for _ in range(count):
            context = chromium.new_context(viewport={"width": 1024, "height": 768})
            page = context.new_page()
            t0 = time.perf_counter()
            page.goto(link(api, sid))
            page.wait_for_function("""() => {
                const c = document.querySelector('#screen canvas');
                if (!c || !c.width) return false;
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                for (let i = 4; i < d.length; i += 4 * 61)
                    if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2]) return true;
                return false;
            }""", timeout=120_000, polling=10)
            browser.append(time.perf_counter() - t0)
            context.close()
        chromium.close()
    return {"QEMU VNC direct (floor)": direct, "API + proxy, Python": proxied, "API + proxy, chromium": browser}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=200)
    args = parser.parse_args()
    inst = installation()   # the installation picks a free IP range itself
    inst.start()
    try:
        api = inst.client(inst.create_user())
        iso = build_test_iso().read_bytes()
        drive = api.create_drive(len(iso), name="guest.iso", **{"claim:type": "shared"})
        assert api.post(f"/drives/{drive}/write/0", gzip.compress(iso, 1),
                        headers={"Content-Encoding": "gzip"}).status == 204
        def server(mem: str) -> str:
            r = api.post_kv("/servers/create", {"name": "bench", "cpu": "1000", "mem": mem, "smp": "1",
                                                "ide:0:0": drive, "ide:0:0:media": "cdrom", "vnc:ip": "auto",
                                                "vnc:password": PASSWORD})
            assert r.status == 200, r.text
            return r.kv()["server"]

        sid = server("256")
        frames = vnc_link_to_frame(api, sid, args.count)
        worker = proxy_worker(inst)
        idle_rss = rss_kib(worker)
        # QEMU's VNC server takes at most 32 clients (its `connections` default): spread the sessions
        servers = [sid] + [server("128") for _ in range(-(-args.sessions // PER_SERVER) - 1)]
        booted = time.monotonic() + 300
        while time.monotonic() < booted and not all(
                GUEST_UP in (inst.state_dir / "run" / f"console-{s}.log").read_text(errors="replace")
                for s in servers):
            time.sleep(1)   # sessions are measured idle: not beside booting guests
        targets = [servers[i % len(servers)] for i in range(args.sessions)]
        opened, held_rss = asyncio.run(hold_sessions(api, targets, lambda: rss_kib(worker)))
        accel = inst.admin("host", "info").stdout.split("accelerator ")[1].split()[0]
    finally:
        inst.stop()
        inst.purge_libvirt()
    print(f"consoles (VNC), accelerator {accel}, {args.count} samples each")
    print(f"{'link to first frame':28}{'p50 s':>8}{'p95 s':>8}{'mean s':>8}")
    for label, samples in frames.items():
        print(f"{label:28}{percentile(samples, 50):8.3f}{percentile(samples, 95):8.3f}{statistics.mean(samples):8.3f}")
    floor = percentile(frames["QEMU VNC direct (floor)"], 50)
    for label in ("API + proxy, Python", "API + proxy, chromium"):
        print(f"ratio p50 {label} / floor: {percentile(frames[label], 50) / floor:.1f}")
    print(f"idle sessions: {args.sessions} VNC sessions to {len(servers)} servers opened in {opened:.1f} s; proxy worker RSS "
          f"{idle_rss / 1024:.1f} MiB without, {held_rss / 1024:.1f} MiB with them "
          f"({(held_rss - idle_rss) / args.sessions:.0f} KiB per session; target 200 under 150 MiB: "
          f"{'met' if args.sessions >= 200 and held_rss < 150 * 1024 else 'not met' if args.sessions >= 200 else 'n/a'})")


async def hold_sessions(api, targets: list[str], measure) -> tuple[float, int]:
    """Open a session to each target server (a fresh link each, OPENING at a time; counting those
    past ServerInit), measure, then close them all."""
    hold = asyncio.Event()
    ready = 0

    gate = asyncio.Semaphore(OPENING)

    async def one(sid):
        nonlocal ready

        class Counted(asyncio.Event):
            async def wait(self):
                nonlocal ready
                ready += 1
                gate.release()
                return await hold.wait()

        await gate.acquire()
        url = await asyncio.to_thread(link, api, sid)
        await rfb_session(url, first_frame=False, hold=Counted())

    t0 = time.perf_counter()
    tasks = [asyncio.create_task(one(t)) for t in targets]
    while ready < len(targets):
        failed = [t for t in tasks if t.done() and t.exception()]
        if failed:
            hold.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise RuntimeError(f"{len(failed)} sessions failed: {failed[0].exception()!r}")
        await asyncio.sleep(0.05)
    opened = time.perf_counter() - t0
    await asyncio.sleep(2)
    rss = measure()
    hold.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return opened, rss


if __name__ == "__main__":
    main()
