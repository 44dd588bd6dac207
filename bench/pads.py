"""Pads: POST /api/pads/{id}/run per language against the sandbox floor of the same image, in one run.

    .venv/bin/python -m bench.pads [--samples 10] [--clients 8] [--burst 24] [--pool 1]

Per language (python3, bash, c, java: the images the test command builds):
1. first run: the first POST …/run after the installation started (the image's pool and template
   are created then), end to end;
2. p50/p95 of POST …/run of the example program with a warm pool;
3. the floor: POST /api/sandboxes?wait=true with the same image, files and command (the pad layer's
   cost is the difference), and for compiled languages the compile step alone through the same path
   (the compile/run split).
Then the throughput of mixed-language runs from `--clients` clients, and the host memory (RSS) that
all warm pools hold together (`--pool` VMs per image; OPENHOSTING_SANDBOX_POOL_SIZE).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import installation, percentile as pct  # noqa: E402
from controlplane.services import languages  # noqa: E402
from tests.pads import PadApi, make_user  # noqa: E402

LANGS = ("python3", "bash", "c", "java")
COMPILE = {"c": "gcc -O2 -std=gnu17 -o main main.c -lm", "java": "javac -d . Solution.java"}


def timed(call) -> tuple[float, dict]:
    t0 = time.perf_counter()
    body = call()
    return time.perf_counter() - t0, body


def pad_run(api: PadApi, pad_id: str) -> float:
    seconds, r = timed(lambda: api.post(f"/api/pads/{pad_id}/run", {"timeout": "120"}))
    assert r.status == 200 and r.json()["output"] == "Hello, World!\n", r.text
    return seconds


def sandbox_run(client, lang, command: str) -> float:
    import uuid

    boundary = uuid.uuid4().hex
    parts = [("image", None, lang.image), ("cmd", None, json.dumps([command])), ("timeout", None, "120"),
             ("file", lang.file, lang.example), ("stdin", "stdin.txt", "")]
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{n}"'
                   + (f'; filename="{f}"' if f else "") + f"\r\n\r\n{v}\r\n" for n, f, v in parts)
    body += f"--{boundary}--\r\n"
    seconds, r = timed(lambda: client.post("/api/sandboxes?wait=true", body,
                                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}))
    assert r.status == 200 and r.json()["return_code"] == 0, r.text
    return seconds


def pool_rss_mib(installation_id: str) -> float:
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            if b"qemu" not in cmd or installation_id.encode() not in cmd:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--burst", type=int, default=24)
    parser.add_argument("--pool", type=int, default=1)
    args = parser.parse_args()
    inst = installation(OPENHOSTING_IP_POOL="10.252.9.0/24", OPENHOSTING_SANDBOX_POOL_SIZE=str(args.pool),
                        OPENHOSTING_SANDBOX_USER_LIMIT="64", OPENHOSTING_JOB_POLL_INTERVAL="0.05")
    inst.start(("image", "build", "base"), ("image", "build", "gcc"), ("image", "build", "java"))
    rows, floors, compiles, first = {}, {}, {}, {}
    try:
        user = make_user(inst, "Bench")
        api = PadApi(inst, user)
        from tests.support import User

        client = inst.client(User(user.uuid, user.secret))
        pads = {lang: api.pad(language=lang)["id"] for lang in LANGS}
        for lang in LANGS:
            first[lang] = pad_run(api, pads[lang])
        for lang in LANGS:
            spec = languages.get(lang)
            rows[lang], floors[lang], compiles[lang] = [], [], []
            for _ in range(args.samples):
                time.sleep(0.5)  # let the pool refill: a warm request, not a queue
                rows[lang].append(pad_run(api, pads[lang]))
                time.sleep(0.5)
                floors[lang].append(sandbox_run(client, spec, f"{spec.command} < stdin.txt"))
                if lang in COMPILE:
                    time.sleep(0.5)
                    compiles[lang].append(sandbox_run(client, spec, COMPILE[lang]))
        held = pool_rss_mib((inst.state_dir / "installation-id").read_text().strip())
        mixed = [pads[LANGS[i % len(LANGS)]] for i in range(args.burst)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(lambda pad_id: pad_run(PadApi(inst, user), pad_id), mixed))
        burst = time.perf_counter() - t0
        accel = inst.admin("host", "info").stdout.split("accelerator ")[1].split()[0]
    finally:
        inst.stop()
        inst.purge_libvirt()

    print(f"pads: example program per language; accelerator {accel}; pool {args.pool} VM(s) per image; "
          f"{args.samples} samples")
    print(f"{'language':10}{'first s':>9}{'p50 s':>8}{'p95 s':>8}{'floor p50':>11}{'floor p95':>11}"
          f"{'ratio':>7}{'compile p50':>13}")
    for lang in LANGS:
        ratio = pct(rows[lang], 50) / pct(floors[lang], 50)
        comp = f"{pct(compiles[lang], 50):13.3f}" if compiles[lang] else f"{'-':>13}"
        print(f"{lang:10}{first[lang]:9.2f}{pct(rows[lang], 50):8.3f}{pct(rows[lang], 95):8.3f}"
              f"{pct(floors[lang], 50):11.3f}{pct(floors[lang], 95):11.3f}{ratio:7.2f}{comp}")
    print(f"throughput: {args.burst} mixed-language runs from {args.clients} clients in {burst:.1f} s = "
          f"{args.burst / burst:.2f} runs/s")
    print(f"host memory (QEMU RSS) of all warm pools together: {held} MiB")


if __name__ == "__main__":
    main()
