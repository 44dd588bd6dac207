"""Submissions: POST to final status through the HTTP API beside the sandbox API on the same warm
pool, in one run (issue 13 §4).

    .venv/bin/python -m bench.submissions [--samples 15] [--clients 8] [--burst 40] [--pool 4] [--poll 0] [--workers N] [--fillers N]

1. Sandbox floor: POST /api/sandboxes?wait=true running the same command (same image, same pool).
2. One-stage scenario (run: `python3 -c 'print(1+1)'`, no workspace_init): POST /api/v1/submissions,
   then GET /api/v1/submissions/ID?wait=60, which answers when it is final (as the floor's
   ?wait=true does); p50/p95 of POST → final. `--poll S`: GET every S seconds instead.
3. Five-stage scenario (every stage `true`): the overhead each stage adds, from the same timing and
   from the stages' own `time`.
4. Throughput: `--burst` one-stage submissions from `--clients` concurrent clients, each waiting the
   same way (eight clients polling every 20 ms were 400 requests/s, which took 38% of our two cores
   away from the VMs: 0.66/s against 1.39/s polling every 0.25 s).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import installation, percentile as pct  # noqa: E402
from tests.containers import EXAMPLE, V1, multipart, targz  # noqa: E402

COMMAND = "python3 -c 'print(1+1)'"
ONE = {"version": 2.1, "scenarios": {"one": {"default": True, "stages": {"run": {"command": COMMAND}}}}}
FIVE = {"version": 2.1, "scenarios": {"five": {"default": True, "stages": {
    name: {"command": COMMAND if name == "run" else "true"} for name in ("init", "build", "run", "test", "post")}}}}
SOURCE = targz({"workspace/hello.txt": b"hello\n"})


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def sandbox(api) -> float:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"\r\n\r\nbase\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="cmd"\r\n\r\n{json.dumps([COMMAND])}\r\n'
            f"--{boundary}--\r\n").encode()
    t0 = time.perf_counter()
    r = api.post("/api/sandboxes?wait=true", body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    box = r.json()
    while box["status"] == "running":     # ?wait=true gives up after a while (the first run waits for the pool)
        time.sleep(0.05)
        box = api.get(f"/api/sandboxes/{box['id']}").json()
    elapsed = time.perf_counter() - t0
    assert box["logs"] == "2\n", box
    return elapsed


def submission(v1: V1, project: str, config: dict, poll: float = 0.0) -> tuple[float, dict]:
    """POST, then GET ?wait=60 (the API answers when it is final; `poll` 0) or GET every `poll` s."""
    body, ctype = multipart({"project_id": project, "project_config": json.dumps(config), "workspace_init": ""},
                            {"source": ("source.tar.gz", SOURCE)})
    t0 = time.perf_counter()
    r = v1.request("POST", "/submissions", body, {"Content-Type": ctype})
    assert r.status == 201, r.text
    sid = r.json()["id"]
    while True:
        item = v1.get(f"/submissions/{sid}" + ("" if poll else "?wait=60")).json()
        if not item["executing"]:
            elapsed = time.perf_counter() - t0
            assert item["result"]["status"]["code"] == 15, item
            return elapsed, item
        time.sleep(poll or 0.1)     # a wait answered early (the API process had enough waits): ask again


MILESTONES = [("VM taken from the pool", "taken from the warm pool"), ("project files laid", "project files laid"),
              ("source laid", "source laid"), ("workspace_init", "workspace_init"), ("run stage done", "stage run:"),
              ("final status", "final status")]


def milestones(log: str) -> dict[str, float]:
    """The debug log's clock at each step of the runner ("[   0.123s] text" lines)."""
    found = {}
    for line in log.splitlines():
        if not line.startswith("["):
            continue
        stamp, _, text = line[1:].partition("s] ")
        for name, marker in MILESTONES:
            if marker in text and name not in found:
                found[name] = float(stamp)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--burst", type=int, default=40)
    parser.add_argument("--pool", type=int, default=4)
    parser.add_argument("--poll", type=float, default=0.0,
                        help="clients GET every POLL s instead of waiting with GET ?wait=60 (0)")
    parser.add_argument("--workers", type=int, default=0, help="OPENHOSTING_SUBMISSION_WORKERS (0: the default)")
    parser.add_argument("--fillers", type=int, default=0, help="OPENHOSTING_SANDBOX_FILLERS (0: the default)")
    args = parser.parse_args()
    inst = installation(OPENHOSTING_IP_POOL="10.251.13.0/24", OPENHOSTING_SANDBOX_POOL_SIZE=str(args.pool),
                        OPENHOSTING_SANDBOX_USER_LIMIT="64", OPENHOSTING_SUBMISSION_QUEUE_LIMIT="200",
                        **({"OPENHOSTING_SUBMISSION_WORKERS": str(args.workers)} if args.workers else {}),
                        **({"OPENHOSTING_SANDBOX_FILLERS": str(args.fillers)} if args.fillers else {}))
    inst.start(("image", "build", "base"))
    try:
        user = inst.create_user()
        api = inst.client(user)
        out = inst.admin("token", "create", "--user", user.uuid).stdout.split()
        v1 = V1(inst, out[out.index("token") + 1])
        out = inst.admin("project", "create", "--name", "bench", "--image", "base", "--from", str(EXAMPLE),
                         "--template").stdout.split()
        project = out[out.index("project") + 1]
        loads = [load()]
        for _ in range(3):          # the template, the pool, the first translations
            submission(v1, project, ONE)
            sandbox(api)
        floor, one, five, stage_times, steps = [], [], [], {}, []
        for _ in range(args.samples):
            time.sleep(0.7)         # let the pool refill: warm requests, not a queue
            floor.append(sandbox(api))
            time.sleep(0.7)
            seconds, item = submission(v1, project, ONE, args.poll)
            one.append(seconds)
            steps.append((seconds, milestones(v1.get(f"/submissions/{item['id']}/debug_log").body.decode())))
            time.sleep(0.7)
            seconds, item = submission(v1, project, FIVE, args.poll)
            five.append(seconds)
            for name, stage in item["stages"].items():
                stage_times.setdefault(name, []).append(stage["time"])
        loads.append(load())
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(lambda _: submission(v1, project, ONE, args.poll), range(args.burst)))
        burst_seconds = time.perf_counter() - t0
        loads.append(load())
        accel = inst.admin("host", "info").stdout.split("accelerator ")[1].split()[0]
    finally:
        inst.stop()
        inst.purge_libvirt()

    print(f"submissions: {COMMAND}; accelerator {accel}; pool {args.pool} VMs; {args.samples} samples each; "
          f"load at start {loads[0]}, after the samples {loads[1]}, after the burst {loads[2]}")
    print(f"{'':40}{'p50 s':>8}{'p95 s':>8}")
    print(f"{'sandbox floor: POST ?wait=true':40}{pct(floor, 50):8.3f}{pct(floor, 95):8.3f}")
    print(f"{'submission, 1 stage: POST -> final':40}{pct(one, 50):8.3f}{pct(one, 95):8.3f}")
    print(f"{'submission, 5 stages: POST -> final':40}{pct(five, 50):8.3f}{pct(five, 95):8.3f}")
    print(f"1-stage p50 / sandbox p50: {pct(one, 50) / pct(floor, 50):.2f} (target <= 1.5)")
    print(f"each extra stage adds {(pct(five, 50) - pct(one, 50)) / 4:.3f} s (p50 difference / 4); stage times p50: "
          + ", ".join(f"{name} {pct(times, 50):.2f}" for name, times in stage_times.items()))
    print("where a one-stage submission's time goes (p50 of the runner's debug_log clock, s from the worker's start):")
    names = [name for name, _ in MILESTONES]
    for name in names:
        at = [m[name] for _, m in steps if name in m]
        if at:
            print(f"  {name:34}{pct(at, 50):8.3f}")
    outside = [total - m["final status"] for total, m in steps if "final status" in m]
    print(f"  {'POST -> final, outside the worker':34}{pct(outside, 50):8.3f}  (API, queue pickup, result write, "
          f"the client's " + (f"poll every {args.poll:g} s)" if args.poll else "GET ?wait=60)"))
    how = f"each polling every {args.poll:g} s" if args.poll else "each waiting with GET ?wait=60"
    print(f"throughput: {args.burst} submissions from {args.clients} clients ({how}) "
          f"in {burst_seconds:.1f} s = "
          f"{args.burst / burst_seconds:.2f} submissions/s (target >= 1.5)")


if __name__ == "__main__":
    main()
