"""Sandboxes: request latency through the HTTP API beside the substrate's own floor, in one run.

    .venv/bin/python -m bench.sandboxes [--samples 20] [--cold 5] [--clients 8] [--burst 40]

1. API: POST /api/sandboxes?wait=true running `python3 -c 'print(1+1)'` with a warm pool (sequential
   samples), then `--burst` such requests from `--clients` concurrent clients (throughput).
2. Floor (no HTTP, no database): resume a paused pooled VM + guest-exec of the same command, polled
   through the guest agent. Interleaved with it, the same command through the pool's own run path
   (`WarmPool.run`: oh-run serving on the VM's port), so the API's overhead over the substrate shows
   too.
3. Cold path: define + boot a fresh VM + wait for its agent + exec.
Also prints QEMU RSS per pooled VM and the accelerator.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import installation, percentile as pct  # noqa: E402

COMMAND = "python3 -c 'print(1+1)'"


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                   for k, v in fields.items()) + f"--{boundary}--\r\n"
    return body.encode(), f"multipart/form-data; boundary={boundary}"


def one_request(api) -> float:
    body, ctype = multipart({"image": "base", "cmd": json.dumps([COMMAND]), "timeout": "60"})
    t0 = time.perf_counter()
    r = api.post("/api/sandboxes?wait=true", body, headers={"Content-Type": ctype})
    box = r.json()
    while r.status == 200 and box["status"] == "running":   # ?wait=true gave up first (a loaded host)
        time.sleep(0.02)
        r = api.get(f"/api/sandboxes/{box['id']}")
        box = r.json()
    elapsed = time.perf_counter() - t0
    assert r.status == 200 and box["logs"] == "2\n" and box["return_code"] == 0, r.text
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--cold", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--burst", type=int, default=60)
    parser.add_argument("--pool", type=int, default=4)
    args = parser.parse_args()
    inst = installation(OPENHOSTING_IP_POOL="10.251.9.0/24", OPENHOSTING_SANDBOX_POOL_SIZE=str(args.pool),
                        OPENHOSTING_SANDBOX_USER_LIMIT="64", OPENHOSTING_JOB_POLL_INTERVAL="0.2")
    state = inst.state_dir
    inst.start(("image", "build", "base"))
    try:
        api = inst.client(inst.create_user())
        for _ in range(10):   # the first runs wait for the template and the pool: on a busy host
            try:              # longer than one ?wait=true answers
                one_request(api)
                break
            except (AssertionError, TimeoutError):   # the client gives up before ?wait=true does
                pass
        for _ in range(3):
            one_request(api)
        api_samples = []
        for _ in range(args.samples):
            time.sleep(0.5)  # let the pool refill: this measures a warm request, not a queue
            api_samples.append(one_request(api))
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(lambda _: one_request(api), range(args.burst)))
        burst_seconds = time.perf_counter() - t0
        accel = inst.admin("host", "info").stdout.split("accelerator ")[1].split()[0]
    finally:
        inst.stop()
        inst.purge_libvirt()

    # The substrate alone, on the same image files, in a pool of its own.
    from hypervisor.host import Host
    from hypervisor.microvm import SandboxImage, WarmPool
    from controlplane.config import Settings
    from controlplane.db import Database
    from controlplane.models import Image

    db = Database(Settings.from_env(inst.env))
    with db.session() as s:
        row = s.get(Image, "base")
        spec = SandboxImage(slug="base", base=state / "drives" / f"{row.drive}.raw",
                            kernel=Path(row.kernel), initramfs=Path(row.initramfs), cmdline=row.cmdline,
                            memory_mib=row.memory_mib)
    db.dispose()
    host = Host("bench" + uuid.uuid4().hex[:6])
    work = state / "floor"
    work.mkdir(mode=0o711)
    pool = WarmPool(host, spec, work, size=args.pool)
    pool.start()
    try:
        assert pool.wait_ready(300), "the floor pool did not warm up"
        pool.floor_run(COMMAND)
        floor, direct = [], []
        for _ in range(args.samples):
            time.sleep(0.5)
            floor.append(pool.floor_run(COMMAND))
            time.sleep(0.5)
            result = pool.run({}, COMMAND, timeout=60, output_cap=4096)
            assert result.output == b"2\n" and result.exit_code == 0, result
            direct.append(result.seconds)
        run_path = pool.stats()["run_path"]
        stats = pool.stats()
        rss, private, ram = stats["rss_mib_avg"], stats["private_mib_avg"], stats["ram"]
        cold = []
        for _ in range(args.cold):
            t0 = time.perf_counter()
            result = pool.cold_run({}, COMMAND, timeout=120, output_cap=4096)
            cold.append(time.perf_counter() - t0)
            assert result.output == b"2\n", result
    finally:
        pool.close()

    print(f"sandboxes: {COMMAND}; accelerator {accel}; pool {args.pool} VMs per image")
    print(f"{'':34}{'p50 s':>8}{'p95 s':>8}")
    print(f"{'API POST?wait=true (warm pool)':34}{pct(api_samples, 50):8.3f}{pct(api_samples, 95):8.3f}")
    print(f"{'floor: resume + guest-exec':34}{pct(floor, 50):8.3f}{pct(floor, 95):8.3f}")
    print(f"{'substrate run (' + run_path + ')':34}{pct(direct, 50):8.3f}{pct(direct, 95):8.3f}")
    print(f"{'cold: define + boot + exec':34}{pct(cold, 50):8.3f}{pct(cold, 95):8.3f}")
    print(f"API p50 / floor p50: {pct(api_samples, 50) / pct(floor, 50):.2f}   "
          f"API p50 / substrate run p50: {pct(api_samples, 50) / pct(direct, 50):.2f}   "
          f"cold p50 / API p50: {pct(cold, 50) / pct(api_samples, 50):.1f}x")
    print(f"throughput: {args.burst} sandboxes from {args.clients} clients in {burst_seconds:.1f} s = "
          f"{args.burst / burst_seconds:.2f} sandboxes/s")
    print(f"QEMU RSS per pooled VM: {rss} MiB, of which its own {private} MiB (mean over the idle VMs; "
          f"template RAM {ram})")
    print(f"mean API {statistics.mean(api_samples):.3f} s over {len(api_samples)} samples")


if __name__ == "__main__":
    main()
