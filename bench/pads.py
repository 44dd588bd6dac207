"""Pads: POST /api/pads/{id}/run per language against the sandbox floor of the same image, in one run.

    .venv/bin/python -m bench.pads [--samples 5] [--clients 8] [--burst 22] [--pool 2] [--zero ruby]
                                   [--languages python3,c,...]

Per language (every runnable one; the test command builds all their images):
1. first run: the first POST …/run after the installation started (its pools and templates are
   created then), end to end; the languages are asked one after the other, so a later language's
   template was made while the earlier ones were served;
2. p50/p95 of POST …/run of the example program with a warm pool (`--pool` VMs per image, a pause
   between requests so that the pool is full again);
3. the floor: POST /api/sandboxes?wait=true with the same image, files and command (the pad layer's
   cost is the difference), and for compiled languages the compile step alone through the same path
   (the compile/run split: run = floor - compile).
Languages in `--zero` get a pool of 0 (OPENHOSTING_PAD_POOLS): every run of theirs, and their floor,
pays a clone restored from the template without warm-up. Then the throughput of mixed-language runs
from `--clients` clients, and the host memory (QEMU RSS) all pools hold together while idle. Every
figure is printed with the load average (1 min) read when it was taken: other engineers' VMs share
the two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import installation, percentile as pct  # noqa: E402
from controlplane.services import languages  # noqa: E402
from tests.pads import PadApi, make_user  # noqa: E402
from tests.support import User  # noqa: E402

LANGS = tuple(languages.RUNNABLE)
COMPILE = {"c": "gcc -O2 -std=gnu17 -o main main.c -lm", "cpp": "g++ -O2 -std=gnu++17 -o main main.cpp",
           "java": "java-warm --javac -d . Solution.java",
           "go": "HOME=/tmp GOCACHE=/tmp/gocache go build -o main main.go",
           "rust": "rustc --edition 2021 -O -o main main.rs",
           "typescript": "tsc --target es2020 --module commonjs --skipLibCheck --outDir out main.ts"}
TIMEOUT = 300.0


def load() -> float:
    return os.getloadavg()[0]


def timed(call) -> tuple[float, object]:
    t0 = time.perf_counter()
    body = call()
    return time.perf_counter() - t0, body


def pad_run(api: PadApi, pad_id: str, lang: str) -> float:
    seconds, r = timed(lambda: api.post(f"/api/pads/{pad_id}/run", {"timeout": "120"}, timeout=TIMEOUT))
    expected = "Hello, World!\n" * (5 if lang == "ruby" else 1)
    assert r.status == 200 and r.json()["output"] == expected, r.text
    return seconds


def first_run(api: PadApi, client, pad_id: str, lang: str) -> float:
    """The first run, end to end: the server gives up waiting after the run's timeout and a minute
    (503 naming the sandbox) while the image's template is still being made; then poll the sandbox."""
    t0 = time.perf_counter()
    r = api.post(f"/api/pads/{pad_id}/run", {"timeout": "120"}, timeout=TIMEOUT)
    if r.status == 503 and "/api/sandboxes/" in r.json()["message"]:
        sandbox = r.json()["message"].rsplit("/", 1)[1].strip()
        while (info := client.get(f"/api/sandboxes/{sandbox}").json())["status"] != "terminated":
            time.sleep(0.5)
        expected = "Hello, World!\n" * (5 if lang == "ruby" else 1)
        assert info["return_code"] == 0 and info["logs"] == expected, info
    else:
        assert r.status == 200, r.text
    return time.perf_counter() - t0


def sandbox_run(client, lang, command: str) -> float:
    boundary = uuid.uuid4().hex
    parts = [("image", None, lang.image), ("cmd", None, json.dumps([command])), ("timeout", None, "120"),
             ("file", lang.file, lang.example), ("stdin", "stdin.txt", "")]
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{n}"'
                   + (f'; filename="{f}"' if f else "") + f"\r\n\r\n{v}\r\n" for n, f, v in parts)
    body += f"--{boundary}--\r\n"
    seconds, r = timed(lambda: client.post("/api/sandboxes?wait=true", body, timeout=TIMEOUT,
                                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}))
    assert r.status == 200 and r.json()["return_code"] == 0, r.text
    return seconds


def qemu_rss(installation_id: str) -> tuple[int, float]:
    """QEMU processes of this installation and their resident memory together (MiB)."""
    count, total = 0, 0
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
                    count += 1
        except OSError:
            continue
    return count, round(total / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--burst", type=int, default=22)
    parser.add_argument("--pool", type=int, default=2)
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between requests (pool refill)")
    parser.add_argument("--zero", default="ruby", help="languages whose pool holds no VM")
    parser.add_argument("--languages", default=",".join(LANGS))
    args = parser.parse_args()
    langs = [lang for lang in args.languages.split(",") if lang]
    zero = [lang for lang in args.zero.split(",") if lang]
    images = list(dict.fromkeys(languages.get(lang).image for lang in langs))
    inst = installation(OPENHOSTING_IP_POOL="10.252.9.0/24", OPENHOSTING_SANDBOX_POOL_SIZE=str(args.pool),
                        OPENHOSTING_PAD_POOLS=",".join(f"{lang}=0" for lang in zero),
                        OPENHOSTING_SANDBOX_USER_LIMIT="64", OPENHOSTING_JOB_POLL_INTERVAL="0.05")
    inst.start(*(("image", "build", image) for image in images))
    rows, floors, compiles, first, loads = {}, {}, {}, {}, {}
    try:
        user = make_user(inst, "Bench")
        api = PadApi(inst, user)
        client = inst.client(User(user.uuid, user.secret))
        pads = {lang: api.pad(language=lang)["id"] for lang in langs}
        for lang in langs:
            first[lang] = (first_run(api, client, pads[lang], lang), load())
            print(f"first run {lang}: {first[lang][0]:.2f} s (load {first[lang][1]:.1f})", flush=True)
        for lang in langs:
            spec = languages.get(lang)
            rows[lang], floors[lang], compiles[lang] = [], [], []
            for _ in range(args.samples):
                time.sleep(args.pause)
                rows[lang].append(pad_run(api, pads[lang], lang))
                time.sleep(args.pause)
                floors[lang].append(sandbox_run(client, spec, f"{spec.command} < stdin.txt"))
                if lang in COMPILE:
                    time.sleep(args.pause)
                    compiles[lang].append(sandbox_run(client, spec, COMPILE[lang]))
            loads[lang] = load()
            print(f"{lang}: p50 {pct(rows[lang], 50):.3f} s floor {pct(floors[lang], 50):.3f} s "
                  f"(load {loads[lang]:.1f})", flush=True)
        time.sleep(10 * args.pause)  # every pool full again
        held = qemu_rss((inst.state_dir / "installation-id").read_text().strip())
        held_load = load()
        mixed = [pads[langs[i % len(langs)]] for i in range(args.burst)]
        mixed_langs = [langs[i % len(langs)] for i in range(args.burst)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(lambda pair: pad_run(PadApi(inst, user), *pair), zip(mixed, mixed_langs)))
        burst = time.perf_counter() - t0
        burst_load = load()
        accel = inst.admin("host", "info").stdout.split("accelerator ")[1].split()[0]
    finally:
        inst.stop()
        inst.purge_libvirt()

    print(f"\npads: example program per language; accelerator {accel}; pool {args.pool} VM(s) per image "
          f"(0 for {', '.join(zero) or 'none'}); {args.samples} samples; {os.cpu_count()} CPUs")
    print(f"{'language':11}{'first s':>8}{'p50 s':>8}{'p95 s':>8}{'floor p50':>10}{'floor p95':>10}"
          f"{'ratio':>7}{'compile p50':>12}{'run p50':>9}{'load':>6}")
    for lang in langs:
        ratio = pct(rows[lang], 50) / pct(floors[lang], 50)
        if compiles[lang]:
            comp = pct(compiles[lang], 50)
            split = f"{comp:12.3f}{pct(floors[lang], 50) - comp:9.3f}"
        else:
            split = f"{'-':>12}{'-':>9}"
        print(f"{lang + (' (0)' if lang in zero else ''):11}{first[lang][0]:8.2f}{pct(rows[lang], 50):8.3f}"
              f"{pct(rows[lang], 95):8.3f}{pct(floors[lang], 50):10.3f}{pct(floors[lang], 95):10.3f}"
              f"{ratio:7.2f}{split}{loads[lang]:6.1f}")
    print(f"throughput: {args.burst} mixed-language runs from {args.clients} clients in {burst:.1f} s = "
          f"{args.burst / burst:.2f} runs/s (load {burst_load:.1f})")
    print(f"host memory (QEMU RSS) of all idle pools together: {held[1]} MiB in {held[0]} QEMU processes "
          f"(load {held_load:.1f})")


if __name__ == "__main__":
    main()
