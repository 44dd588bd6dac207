"""Soak: mixed load for a while against a loopback installation this script starts, then a leak check.

    .venv/bin/python -m bench.soak [--duration 300] [--uploads 50] [--sandboxes 8] [--sample 10]

Load, all at once, until the duration is over (every loop is bounded by it):
- `--uploads` clients each doing chunked gzip uploads: create a 1 MiB drive, write it in 64 KiB
  chunks with Content-Encoding: gzip, read one chunk back, destroy the drive;
- `--sandboxes` clients running `echo` sandboxes (POST /api/sandboxes?wait=true) on the warm pool;
- one client cycling a server (no drives) through start and stop;
- one client reading every list (drives, standard drives, servers, resources, sandboxes, images).
It prints per kind: requests, errors (goal 0), p50/p99 latency; and, every `--sample` seconds, the RSS
and open file descriptors of the API processes (gunicorn master and workers) and the agent, and the
installation's libvirt domains and clone overlays. At the end, with the load stopped, domains and
overlays must go back to the pool's size and no drive file of the load may remain.
`soak(duration)` is what tests/test_soak.py calls with a short duration, as a correctness check.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import installation, percentile as pct  # noqa: E402

KiB, MiB = 1024, 1024**2
UPLOAD_SIZE, CHUNK = MiB, 64 * KiB
POOL = 4
RUN_TIMEOUT = 60  # a sandbox's own limit: generous, the host may be shared and oversubscribed
LISTS = ["/drives/list", "/drives/info", "/drives/list/standard", "/servers/list", "/servers/info",
         "/resources/list", "/api/sandboxes", "/api/images"]


@dataclass
class Stats:
    samples: dict = field(default_factory=lambda: defaultdict(list))
    errors: dict = field(default_factory=lambda: defaultdict(int))
    messages: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, seconds: float, ok: bool, what: str = "") -> None:
        with self.lock:
            self.samples[kind].append(seconds)
            if not ok:
                self.errors[kind] += 1
                if len(self.messages) < 20:
                    self.messages.append(f"{kind}: {what}"[:300])


def timed(stats: Stats, kind: str, call, check) -> object:
    t0 = time.perf_counter()
    try:
        r = call()
    except Exception as exc:  # no answer at all counts as an error of that kind
        stats.record(kind, time.perf_counter() - t0, False, repr(exc))
        return None
    problem = check(r)
    stats.record(kind, time.perf_counter() - t0, not problem, problem or "")
    return None if problem else r


def status_is(*codes):
    return lambda r: None if r.status in codes else f"HTTP {r.status}: {r.body[:200]!r}"


def chunk_data(seed: int) -> bytes:
    """Half compressible text, half random: what a disk image's chunk looks like to gzip."""
    text = (f"chunk {seed} of a soak upload\n" * (CHUNK // 48)).encode()[:CHUNK // 2]
    return text + os.urandom(CHUNK - len(text))


# ---- load clients -----------------------------------------------------------------------------------

def uploader(api, stats: Stats, end: float) -> None:
    while time.monotonic() < end:
        r = timed(stats, "drive create", lambda: api.post_kv("/drives/create", {"name": "soak", "size": UPLOAD_SIZE}),
                  status_is(200))
        if r is None:
            time.sleep(0.5)
            continue
        drive = r.kv()["drive"]
        first = b""
        for offset in range(0, UPLOAD_SIZE, CHUNK):
            data = chunk_data(offset)
            first = first or data
            body = gzip.compress(data, 1)
            timed(stats, "chunk write (gzip)", lambda: api.post(f"/drives/{drive}/write/{offset}", body,
                                                                headers={"Content-Encoding": "gzip"}),
                  status_is(204))
            if time.monotonic() >= end:
                break
        timed(stats, "chunk read", lambda: api.get(f"/drives/{drive}/read/0/{CHUNK}"),
              lambda r: None if r.status == 200 and r.body[:CHUNK // 2] == first[:CHUNK // 2]
              else f"HTTP {r.status}, {len(r.body)} bytes, content differs")
        timed(stats, "drive destroy", lambda: api.post(f"/drives/{drive}/destroy"), status_is(204))


def sandbox_client(api, stats: Stats, end: float, n: int) -> None:
    i = 0
    while time.monotonic() < end:
        word = f"soak-{n}-{i}"
        body, ctype = multipart({"image": "base", "cmd": json.dumps([f"echo {word}"]), "timeout": str(RUN_TIMEOUT)})

        def check(r):
            if r.status != 200:
                return f"HTTP {r.status}: {r.body[:200]!r}"
            box = r.json()
            return None if box.get("logs") == f"{word}\n" and box.get("return_code") == 0 else f"result {box}"

        timed(stats, "sandbox run (wait)", lambda: api.post("/api/sandboxes?wait=true", body,
                                                            headers={"Content-Type": ctype}, timeout=300), check)
        i += 1


def server_cycler(api, stats: Stats, end: float, sid: str) -> None:
    while time.monotonic() < end:
        if timed(stats, "server start", lambda: api.post(f"/servers/{sid}/start"), status_is(204)) is None:
            time.sleep(1)
            continue
        time.sleep(1)
        timed(stats, "server stop", lambda: api.post(f"/servers/{sid}/stop"), status_is(204))
        time.sleep(0.5)


def list_reader(apis, stats: Stats, end: float) -> None:
    while time.monotonic() < end:
        for api in apis:
            for path in LISTS:
                timed(stats, "list read", lambda: api.get(path), status_is(200))
        time.sleep(0.2)


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                   for k, v in fields.items()) + f"--{boundary}--\r\n"
    return body.encode(), f"multipart/form-data; boundary={boundary}"


# ---- what the host shows ----------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return out


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def fds(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return total


def our_domains(inst) -> list[str]:
    prefix = "oh-" + (inst.state_dir / "installation-id").read_text().strip() + "-"
    out = subprocess.run(["virsh", "-q", "list", "--name"], capture_output=True, text=True, timeout=60).stdout
    return [n for n in out.split() if n.startswith(prefix)]


def overlays(inst) -> list[Path]:
    return list((inst.state_dir / "sandbox-vms").rglob("vms/*.qcow2"))


def load_drive_files(inst, keep: set[str]) -> list[Path]:
    return [p for p in (inst.state_dir / "drives").iterdir() if p.stem not in keep]


def sample(inst, t0: float) -> dict:
    api_pids = [inst.api.pid, *children(inst.api.pid)]
    return {"t": time.monotonic() - t0, "api_rss": rss_mib(children(inst.api.pid)),
            "master_rss": rss_mib([inst.api.pid]), "agent_rss": rss_mib([inst.agent.pid]),
            "api_fds": fds(api_pids), "agent_fds": fds([inst.agent.pid]),
            "domains": len(our_domains(inst)), "overlays": len(overlays(inst))}


# ---- the run ----------------------------------------------------------------------------------------

def soak(duration: float = 300, uploads: int = 50, sandboxes: int = 8, every: float = 10,
         out=None) -> dict:
    """Run the soak; return {"errors", "messages", "kinds", "samples", "settled", "leftover_drives"}."""
    out = out or (lambda *a: print(*a, flush=True))
    inst = installation(OPENHOSTING_IP_POOL=f"10.{200 + os.getpid() % 50}.{os.getpid() % 250}.0/24",
                        OPENHOSTING_SANDBOX_POOL_SIZE=str(POOL), OPENHOSTING_SANDBOX_USER_LIMIT="64",
                        OPENHOSTING_RECONCILE_INTERVAL="2", OPENHOSTING_JOB_POLL_INTERVAL="0.2")
    inst.start(("image", "build", "base"))
    try:
        return _drive(inst, duration, uploads, sandboxes, every, out)
    finally:
        inst.stop()
        inst.purge_libvirt()
        import shutil

        shutil.rmtree(inst.state_dir, ignore_errors=True)


def _drive(inst, duration, uploads, sandboxes, every, out) -> dict:
    users = [inst.client(inst.create_user(f"soak{i}")) for i in range(3)]
    up_api, box_api, srv_api = users
    # The first runs wait for the image's template and the pool (minutes on a busy TCG host).
    deadline = time.monotonic() + 1200
    while True:
        body, ctype = multipart({"image": "base", "cmd": json.dumps(["echo warm"]), "timeout": "120"})
        box = box_api.post("/api/sandboxes", body, headers={"Content-Type": ctype}).json()
        while (r := box_api.get(f"/api/sandboxes/{box}").json())["status"] != "terminated":
            assert time.monotonic() < deadline, "the sandbox pool did not warm up in 20 minutes"
            time.sleep(0.5)
        if r["logs"] == "warm\n":
            break
        assert time.monotonic() < deadline, f"the sandbox pool did not warm up in 20 minutes: {r}"
    sid = srv_api.post_kv("/servers/create/stopped", {"name": "cycler", "cpu": "1000", "mem": "128",
                                                       "persistent": "true"}).kv()["server"]
    keep = {p.stem for p in (inst.state_dir / "drives").iterdir()}  # the image's drive
    accel = inst.admin("host", "info").stdout.split("accelerator ")[1].split()[0]
    stats = Stats()
    t0 = time.monotonic()
    end = t0 + duration
    threads = [threading.Thread(target=uploader, args=(up_api, stats, end), daemon=True) for _ in range(uploads)]
    threads += [threading.Thread(target=sandbox_client, args=(box_api, stats, end, n), daemon=True)
                for n in range(sandboxes)]
    threads.append(threading.Thread(target=server_cycler, args=(srv_api, stats, end, sid), daemon=True))
    threads.append(threading.Thread(target=list_reader, args=(users, stats, end), daemon=True))
    for t in threads:
        t.start()
    samples = [sample(inst, t0)]
    out(f"soak: {duration:.0f} s, {uploads} uploaders, {sandboxes} sandbox clients, 1 server cycler, "
        f"1 list reader; accelerator {accel}; {os.cpu_count()} CPUs; load average at start "
        f"{os.getloadavg()[0]:.1f}")
    out(f"{'t s':>6}{'API RSS':>9}{'master':>8}{'agent':>8}{'API fds':>9}{'agent fds':>10}{'domains':>9}"
        f"{'overlays':>9}")

    def show(s):
        out(f"{s['t']:6.0f}{s['api_rss']:9.1f}{s['master_rss']:8.1f}{s['agent_rss']:8.1f}{s['api_fds']:9d}"
            f"{s['agent_fds']:10d}{s['domains']:9d}{s['overlays']:9d}")

    show(samples[0])
    while any(t.is_alive() for t in threads):
        time.sleep(min(every, max(0.1, end - time.monotonic())) if time.monotonic() < end else 1)
        samples.append(sample(inst, t0))
        show(samples[-1])
        if time.monotonic() > end + 600:
            raise RuntimeError("load clients still running 10 minutes after the end")
    for t in threads:
        t.join()
    srv_api.post(f"/servers/{sid}/stop")  # in case its last stop was an error
    # Settle: the pool refills to its size and nothing of the load is left.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        final = sample(inst, t0)
        if final["domains"] == POOL and final["overlays"] == POOL:
            break
        time.sleep(1)
    leftover = load_drive_files(inst, keep)
    settled = final["domains"] == POOL and final["overlays"] == POOL
    out("settled:" if settled else "NOT settled:", f"{final['domains']} domains, {final['overlays']} overlays "
        f"(pool size {POOL}); {len(leftover)} drive files of the load left")

    out(f"\n{'kind':22}{'requests':>9}{'errors':>8}{'p50 s':>8}{'p99 s':>8}")
    kinds = {}
    for kind, xs in sorted(stats.samples.items()):
        kinds[kind] = {"requests": len(xs), "errors": stats.errors[kind], "p50": pct(xs, 50), "p99": pct(xs, 99)}
        out(f"{kind:22}{len(xs):9d}{stats.errors[kind]:8d}{pct(xs, 50):8.3f}{pct(xs, 99):8.3f}")
    errors = sum(stats.errors.values())
    out(f"{'all':22}{sum(len(x) for x in stats.samples.values()):9d}{errors:8d}")
    for message in stats.messages:
        out("  error:", message)
    # Memory growth after the first minute (or the first fifth of a shorter run).
    base = next((s for s in samples if s["t"] >= min(60, duration / 5)), samples[0])
    last = samples[-1]
    for key, label in (("api_rss", "API workers"), ("agent_rss", "agent")):
        growth = (last[key] - base[key]) / base[key] * 100 if base[key] else 0.0
        out(f"RSS {label}: {base[key]:.1f} MiB at {base['t']:.0f} s -> {last[key]:.1f} MiB at {last['t']:.0f} s "
            f"({growth:+.1f}%, goal under 10%)")
    out(f"fds: API {samples[0]['api_fds']} -> {final['api_fds']}, agent {samples[0]['agent_fds']} -> "
        f"{final['agent_fds']}")
    return {"errors": errors, "messages": stats.messages, "kinds": kinds, "samples": samples,
            "settled": settled, "final": final, "leftover_drives": [p.name for p in leftover]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=300)
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--sandboxes", type=int, default=8)
    parser.add_argument("--sample", type=float, default=10)
    args = parser.parse_args()
    result = soak(args.duration, args.uploads, args.sandboxes, args.sample)
    sys.exit(0 if result["errors"] == 0 and result["settled"] and not result["leftover_drives"] else 1)


if __name__ == "__main__":
    main()
