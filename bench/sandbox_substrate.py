"""The sandbox substrate alone (no HTTP, no database): floor, warm run, cold run, burst throughput.

    .venv/bin/python -m bench.sandbox_substrate [--samples 15] [--pool 2] [--clients 8] [--burst 24]

Prints p50/p95 of, in one run and on one pool:
- floor: resume an idle pooled VM + guest-exec of the command (`WarmPool.floor_run`);
- warm run: `WarmPool.run` of the same command (clock, entropy, working directory, capped output);
- cold: define + boot + agent + run + destroy (`WarmPool.cold_run`);
- burst: ``--burst`` runs from ``--clients`` threads, with the pool refilling underneath;
plus template and restore times, QEMU RSS per pooled VM, host CPU seconds per sandbox, and the
accelerator. The functions are importable (bench/sandboxes.py uses them for its substrate lines).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

COMMAND = "python3 -c 'print(1+1)'"


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def host_cpu_seconds() -> float:
    """CPU seconds the whole host has spent busy so far (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def settle(pool, timeout: float = 120) -> None:
    """Wait until the pool is full and nothing is being prepared, so a sample measures a warm
    request rather than a queue or a refill competing for the CPU."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = pool.stats()
        if stats["idle"] >= pool.size and not stats["preparing"] and not stats["busy"] and not stats["reaping"]:
            return
        time.sleep(0.05)


def floor_samples(pool, n: int, command: str = COMMAND) -> list[float]:
    out = []
    for _ in range(n):
        settle(pool)
        out.append(pool.floor_run(command))
    return out


def warm_samples(pool, n: int, command: str = COMMAND, expect: bytes | None = b"2\n") -> list[float]:
    out = []
    for _ in range(n):
        settle(pool)
        result = pool.run({}, command, timeout=60, output_cap=65536)
        if expect is not None and (result.output != expect or result.exit_code != 0):
            raise AssertionError(f"unexpected result {result}")
        out.append(result.seconds)
    return out


def interleaved(pool, n: int, command: str = COMMAND) -> tuple[list[float], list[float]]:
    """Floor and warm-run samples taken alternately, so that a noisy neighbour hits both alike."""
    floor, warm = [], []
    for _ in range(n):
        floor += floor_samples(pool, 1, command)
        warm += warm_samples(pool, 1, command)
    return floor, warm


def cold_samples(pool, n: int, command: str = COMMAND) -> list[float]:
    out = []
    for _ in range(n):
        settle(pool)
        result = pool.cold_run({}, command, timeout=120, output_cap=65536)
        if result.exit_code != 0:
            raise AssertionError(f"unexpected cold result {result}")
        out.append(result.seconds)
    return out


def burst(pool, runs: int, clients: int, command: str = COMMAND) -> dict:
    """``runs`` runs from ``clients`` threads at once; wall seconds, rate and host CPU per run."""
    settle(pool)
    cpu0, t0 = host_cpu_seconds(), time.monotonic()
    with ThreadPoolExecutor(clients) as executor:
        results = list(executor.map(lambda _: pool.run({}, command, timeout=120, output_cap=65536), range(runs)))
    seconds = time.monotonic() - t0
    cpu = host_cpu_seconds() - cpu0
    bad = [r for r in results if r.exit_code != 0]
    return {"runs": runs, "clients": clients, "seconds": seconds, "per_second": runs / seconds,
            "cpu_per_run": cpu / runs, "failed": len(bad),
            "latency_p50": pct([r.seconds for r in results], 50), "latency_p95": pct([r.seconds for r in results], 95)}


def base_image(out_dir: Path):
    """The ``base`` image built (or found) in ``out_dir``, as a SandboxImage."""
    from hypervisor.microvm import SandboxImage
    from storage.guest import build_image

    built = build_image("base", out_dir)
    return SandboxImage(slug="base", base=built["rootfs"], kernel=built["kernel"], initramfs=built["initramfs"],
                        cmdline=built["cmdline"], memory_mib=built["memory"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--cold", type=int, default=3)
    parser.add_argument("--pool", type=int, default=2)
    parser.add_argument("--fillers", type=int, default=None)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--burst", type=int, default=24)
    parser.add_argument("--root", type=Path, default=Path("/var/tmp/openhosting-bench/substrate"))
    parser.add_argument("--no-warm-clones", action="store_true")
    args = parser.parse_args(argv)

    from hypervisor.host import Host
    from hypervisor.microvm import WarmPool, purge

    args.root.mkdir(mode=0o711, parents=True, exist_ok=True)
    args.root.chmod(0o711)
    image = base_image(args.root / "image")
    (args.root / "image").chmod(0o711)
    host = Host("bench" + uuid.uuid4().hex[:6])
    pool = WarmPool(host, image, args.root / "work", size=args.pool, fillers=args.fillers,
                    warm_clones=False if args.no_warm_clones else None)
    started = time.monotonic()
    pool.start()
    try:
        if not pool.wait_ready(900):
            sys.exit(f"the pool did not warm up: {pool.stats()}")
        ready = time.monotonic() - started
        pool.floor_run(COMMAND)
        pool.run({}, COMMAND, timeout=60, output_cap=100)
        floor, warm = interleaved(pool, args.samples)
        settle(pool)
        stats = pool.stats()
        cold = cold_samples(pool, args.cold)
        flood = burst(pool, args.burst, args.clients)
        final = pool.stats()
    finally:
        pool.close()
        purge(host, args.root / "work")

    print(f"sandbox substrate: {COMMAND!r}; accelerator {stats['accelerator']}; pool {args.pool} VMs, "
          f"{pool.fillers} filler(s); warm clones {pool._warm()}")
    print(f"template {stats['template_seconds']:.2f} s (reused: {stats['template_reused']}); first VM ready "
          f"{ready:.2f} s after start; restore per clone (median) {stats['restore_seconds']:.3f} s")
    print(f"{'':36}{'p50 s':>8}{'p95 s':>8}")
    print(f"{'floor: resume + guest-exec':36}{pct(floor, 50):8.3f}{pct(floor, 95):8.3f}")
    print(f"{'warm run (WarmPool.run)':36}{pct(warm, 50):8.3f}{pct(warm, 95):8.3f}")
    print(f"{'cold: define + boot + exec':36}{pct(cold, 50):8.3f}{pct(cold, 95):8.3f}")
    print(f"warm p50 / floor p50: {pct(warm, 50) / pct(floor, 50):.2f}; cold p50 / warm p50: "
          f"{pct(cold, 50) / pct(warm, 50):.1f}x; mean warm {statistics.mean(warm):.3f} s")
    print(f"burst: {flood['runs']} runs from {flood['clients']} clients in {flood['seconds']:.1f} s = "
          f"{flood['per_second']:.2f}/s, latency p50 {flood['latency_p50']:.2f} s p95 {flood['latency_p95']:.2f} s, "
          f"host CPU {flood['cpu_per_run']:.2f} s per run, {flood['failed']} failed")
    print(f"QEMU RSS per pooled VM: {stats['rss_mib_avg']} MiB, its own {stats['private_mib_avg']} MiB "
          f"({len(stats['rss'])} VMs, template RAM {stats['ram']}); restore per clone "
          f"after the burst {final['restore_seconds']:.3f} s")


if __name__ == "__main__":
    main()
