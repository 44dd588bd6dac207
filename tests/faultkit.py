"""What the fault tests look at from outside: an installation's libvirt domains, QEMU processes, clone
overlays, saved states and sockets, read with the host's own tools (virsh, pgrep, the file system),
not through the code under test.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import time
from pathlib import Path

CHANNEL_DIR = Path("/var/lib/libvirt/qemu/channel/target")


def wait_for(predicate, timeout: float = 120, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def installation_id(inst) -> str:
    return (inst.state_dir / "installation-id").read_text().strip()


def prefix(inst) -> str:
    return f"oh-{installation_id(inst)}-"


def domains(inst, running_only: bool = False) -> list[str]:
    """Names of this installation's libvirt domains (all states, or running ones)."""
    args = ["virsh", "-q", "list", "--name"] + ([] if running_only else ["--all"])
    out = subprocess.run(args, capture_output=True, text=True, timeout=60).stdout.split()
    return sorted(n for n in out if n.startswith(prefix(inst)))


def qemu_pids(inst, name: str = "") -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"guest={prefix(inst)}{name}"], capture_output=True,
                         text=True).stdout.split()
    return [int(p) for p in out]


def clone_overlays(inst) -> list[str]:
    """Sandbox clone overlays (one per sandbox VM) left in the state directory, by domain name."""
    root = inst.state_dir / "sandbox-vms"
    return sorted(p.stem for p in root.rglob("vms/*.qcow2")) if root.exists() else []


def saved_states(inst) -> list[Path]:
    """Saved VM states other than the templates' (a template's state is kept on purpose)."""
    root = inst.state_dir
    return [p for p in root.rglob("*") if p.is_file() and p.suffix in (".save", ".state")
            and "template" not in str(p.relative_to(root))]


def channel_sockets(inst) -> list[Path]:
    """libvirt's per-domain channel sockets of this installation (its domains' guest-agent ports)."""
    if not CHANNEL_DIR.exists():
        return []
    return [p for p in CHANNEL_DIR.iterdir() if installation_id(inst) in p.name]


def state_sockets(inst) -> list[Path]:
    """Unix sockets in the state directory, except the agent's doorbell and the sandbox waiters'
    sockets of API workers that are alive (`run/waiters/<pid>-<random>.sock`)."""
    out = []
    for p in inst.state_dir.rglob("*"):
        try:
            if not p.is_socket() or p.name == "agent.sock":
                continue
        except OSError:
            continue
        if p.parent.name == "waiters" and _alive(p.name.split("-", 1)[0]):
            continue
        out.append(p)
    return out


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True


def kill9(proc) -> None:
    """SIGKILL a process group started by tests/support.py (gunicorn master and workers, or the agent)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def upload_gzip(api, data: bytes, name: str = "disk", chunk: int = 4 << 20, **extra) -> str:
    drive = api.create_drive(len(data), name=name, **extra)
    for offset in range(0, len(data), chunk):
        r = api.post(f"/drives/{drive}/write/{offset}", gzip.compress(data[offset:offset + chunk], 1),
                     headers={"Content-Encoding": "gzip"})
        assert r.status == 204, r.text
    return drive


def server_status(api, sid: str) -> str | None:
    r = api.get(f"/servers/{sid}/info")
    return r.kv()["status"] if r.status == 200 else None


def sandbox_body(cmd: str, timeout: int = 120) -> tuple[bytes, str]:
    import json
    import uuid

    boundary = uuid.uuid4().hex
    fields = {"image": "base", "cmd": json.dumps([cmd]), "timeout": str(timeout)}
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                   for k, v in fields.items()) + f"--{boundary}--\r\n"
    return body.encode(), f"multipart/form-data; boundary={boundary}"


def post_sandbox(api, cmd: str, timeout: int = 120) -> str:
    body, ctype = sandbox_body(cmd, timeout)
    r = api.post("/api/sandboxes", body, headers={"Content-Type": ctype})
    assert r.status == 201, r.text
    return r.json()


def sandbox_result(api, box: str, timeout: float = 300) -> dict:
    return wait_for(lambda: (b := api.get(f"/api/sandboxes/{box}").json())["status"] == "terminated" and b,
                    timeout=timeout, interval=0.3, what=f"sandbox {box} to end")


def warm_pool(api, timeout: float = 1200) -> None:
    """Run `echo warm` until it works: the first runs wait for the image's template and the pool,
    minutes on a busy TCG host (a run that times out meanwhile is tried again)."""
    deadline = time.monotonic() + timeout
    while True:
        box = sandbox_result(api, post_sandbox(api, "echo warm"), timeout=max(1.0, deadline - time.monotonic()))
        if box["logs"] == "warm\n":
            return
        assert time.monotonic() < deadline, f"the sandbox pool did not warm up: {box}"
