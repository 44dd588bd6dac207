"""Server create→active latency through the API, beside `virsh create` of the same domain XML.

    .venv/bin/python -m bench.servers [--count 10]

Each API sample is one POST /servers/create (it answers once the VM runs: status active) of a server
booting the tiny test guest from a CD-ROM; the server is destroyed before the next. The raw samples run
`virsh create` on the very XML the API defined for the first server (fresh name and uuid each time).
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import installation, percentile  # noqa: E402
from tests.guestkit import build_test_iso  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=10)
    args = parser.parse_args()
    inst = installation(OPENHOSTING_IP_POOL="10.251.7.0/24")
    state = inst.state_dir
    inst.start()
    try:
        api = inst.client(inst.create_user())
        iso = build_test_iso().read_bytes()
        drive = api.create_drive(len(iso), name="guest.iso", **{"claim:type": "shared"})
        assert api.post(f"/drives/{drive}/write/0", gzip.compress(iso, 1),
                        headers={"Content-Encoding": "gzip"}).status == 204
        body = {"name": "bench", "cpu": "4000", "mem": "256", "smp": "1", "ide:0:0": drive,
                "ide:0:0:media": "cdrom", "nic:0:model": "virtio", "nic:0:dhcp": "auto"}
        api_samples, xml = [], None
        for _ in range(args.count):
            t0 = time.perf_counter()
            r = api.post_kv("/servers/create", body)
            api_samples.append(time.perf_counter() - t0)
            assert r.status == 200 and r.kv()["status"] == "active", r.text
            sid = r.kv()["server"]
            if xml is None:
                xml = subprocess.run(["virsh", "dumpxml", "--inactive", sid], capture_output=True, text=True,
                                     check=True).stdout
            assert api.post(f"/servers/{sid}/destroy").status == 204
        raw_samples = []
        installation_id = (state / "installation-id").read_text().strip()
        raw_id = f"{installation_id}raw"
        for _ in range(args.count):
            new = str(uuid.uuid4())
            text = xml
            old_uuid = text.split("<uuid>")[1].split("</uuid>")[0]
            # A foreign installation id: the running agent must not reap these domains as orphans.
            text = (text.replace(old_uuid, new).replace(f"<name>oh-{installation_id}-", f"<name>oh-{raw_id}-")
                    .replace(f"installation>{installation_id}<", f"installation>{raw_id}<"))
            path = state / "raw.xml"
            path.write_text(text)
            t0 = time.perf_counter()
            done = subprocess.run(["virsh", "create", str(path)], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            raw_samples.append(time.perf_counter() - t0)
            subprocess.run(["virsh", "destroy", f"oh-{raw_id}-{new}"], check=True, capture_output=True)
        accel = inst.admin("host", "info").stdout.split("accelerator ")[1].split()[0]
    finally:
        inst.stop()
        inst.purge_libvirt()
    print(f"servers create->active, {args.count} samples each, accelerator {accel}")
    print(f"{'':22}{'p50 s':>8}{'p95 s':>8}{'mean s':>8}")
    for label, samples in (("API /servers/create", api_samples), ("virsh create (raw)", raw_samples)):
        print(f"{label:22}{percentile(samples, 50):8.3f}{percentile(samples, 95):8.3f}{statistics.mean(samples):8.3f}")
    print(f"ratio p50 API/raw: {percentile(api_samples, 50) / percentile(raw_samples, 50):.2f}")


if __name__ == "__main__":
    main()
