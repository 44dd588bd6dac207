"""Workspace VMs on the substrate (no HTTP, no database): create, stop, resume, idle cost, in one run.

    .venv/bin/python -m bench.workspaces [--samples 8] [--memory MIB]

Against the sandbox floor measured in the same run (resume a pooled clone + guest-exec, see
bench/sandboxes.py), prints: create → running (p50/p95; the template is made first and not counted),
stop time and the QEMU RSS it frees (a stopped workspace has no process: 0 bytes), saved-state size,
resume → running (p50/p95) with a counting background process checked to go on from where it was,
idle CPU of a running workspace (% of one core, over 10 s) and its RSS. Prints the accelerator.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, percentile as pct  # noqa: E402

COMMAND = "python3 -c 'print(1+1)'"
COUNTER = ("setsid sh -c 'i=0; while :; do echo $i >> /tmp/count; i=$((i+1)); sleep 1; done' "
           "</dev/null >/dev/null 2>&1 &")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--memory", type=int, default=None, help="MiB (default: the image's)")
    args = parser.parse_args()

    from hypervisor.host import Host
    from hypervisor.microvm import SandboxImage, WarmPool, purge
    from hypervisor.microvm import qemu
    from hypervisor.microvm.workspace import WorkspaceVMs, purge as purge_workspaces
    from storage.guest import build_image

    ROOT.mkdir(mode=0o711, exist_ok=True)
    images = ROOT / "workspace-image"
    built = build_image("base", images)
    images.chmod(0o711)
    image = SandboxImage(slug="base", base=built["rootfs"], kernel=built["kernel"], initramfs=built["initramfs"],
                         cmdline=built["cmdline"], memory_mib=built["memory"])
    memory = args.memory or image.memory_mib
    host = Host("bench" + uuid.uuid4().hex[:6])
    work = ROOT / "workspace-work"          # kept: templates are reused across runs
    work.mkdir(mode=0o711, exist_ok=True)
    vms = WorkspaceVMs(host, work)
    pool = WarmPool(host, image, work / "sandbox", size=2)
    try:
        t0 = time.perf_counter()
        vms.prepare(image, memory)
        template = time.perf_counter() - t0
        pool.start()
        assert pool.wait_ready(600), pool.stats()
        pool.floor_run(COMMAND)
        floor = []
        for _ in range(args.samples):
            time.sleep(0.5)
            floor.append(pool.floor_run(COMMAND))
        pool.close()

        ids = [uuid.uuid4().hex for _ in range(args.samples)]
        create, stop, resume, freed, states = [], [], [], [], []
        for ws in ids:
            t0 = time.perf_counter()
            vms.create(ws, image, memory)
            create.append(time.perf_counter() - t0)
        ws = ids[0]
        assert vms.exec(ws, COUNTER, timeout=60).exit_code == 0
        time.sleep(12)
        name = f"oh-{host.installation_id}-ws-{ws}"
        pid = qemu.qemu_pid(name)
        before = cpu_seconds(pid)
        time.sleep(10)
        idle = (cpu_seconds(pid) - before) / 10 * 100
        rss = qemu.qemu_memory(name)
        for ws in ids:
            name = f"oh-{host.installation_id}-ws-{ws}"
            memory_before = qemu.qemu_memory(name)
            t0 = time.perf_counter()
            vms.stop(ws)
            stop.append(time.perf_counter() - t0)
            assert qemu.qemu_memory(name) is None and qemu.qemu_pid(name) is None
            freed.append(memory_before[0] if memory_before else 0)
            states.append((work / "ws" / ws / "state").stat().st_size)
        for ws in ids:
            t0 = time.perf_counter()
            vms.resume(ws)
            resume.append(time.perf_counter() - t0)
        values = [int(v) for v in vms.exec(ids[0], "cat /tmp/count", timeout=60).output.split()]
        assert values == list(range(len(values))), "the counter went on without a restart"
    finally:
        pool.close()
        purge_workspaces(host, work)
        purge(host)
        host.connection.close()

    mib = 1024**2
    print(f"workspaces: accelerator {host.accelerator}; {memory} MiB guests; {args.samples} samples; "
          f"template {template:.1f} s (not counted)")
    print(f"{'':36}{'p50 s':>8}{'p95 s':>8}")
    print(f"{'sandbox floor: resume + guest-exec':36}{pct(floor, 50):8.3f}{pct(floor, 95):8.3f}")
    print(f"{'create -> running':36}{pct(create, 50):8.3f}{pct(create, 95):8.3f}")
    print(f"{'stop (save RAM + devices, end QEMU)':36}{pct(stop, 50):8.3f}{pct(stop, 95):8.3f}")
    print(f"{'resume -> running (clock, seed)':36}{pct(resume, 50):8.3f}{pct(resume, 95):8.3f}")
    print(f"create p50 / floor p50: {pct(create, 50) / pct(floor, 50):.1f}x")
    print(f"stop frees the QEMU RSS: p50 {pct(freed, 50) / mib:.0f} MiB; a stopped workspace holds 0 bytes "
          f"(no process)")
    print(f"saved state on disk: p50 {pct(states, 50) / mib:.0f} MiB, max {max(states) / mib:.0f} MiB")
    print(f"running idle workspace (counting once a second): {idle:.1f}% of a core; "
          f"RSS {rss[0] / mib:.0f} MiB, of which its own {rss[1] / mib:.0f} MiB")
    print(f"counter after resume: {len(values)} ticks, contiguous from 0")


if __name__ == "__main__":
    main()
