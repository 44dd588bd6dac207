"""A nudge from API workers to the agent: "a job is waiting", over a Unix datagram socket.

Best effort by design: the agent also polls the job table, so a lost nudge costs one poll interval,
never a job. The nudge only removes the poll delay from the sandbox request path.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path


def notifier(path: Path):
    """A function that nudges the agent listening on `path`; never raises."""

    def notify() -> None:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(b"!", str(path))
        except OSError:
            pass

    return notify


def listen(path: Path, wake: threading.Event) -> threading.Thread:
    """Receive nudges on `path` and set `wake` for each; runs on a daemon thread."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)

    def loop() -> None:
        while True:
            try:
                sock.recv(64)
            except OSError:
                return
            wake.set()

    thread = threading.Thread(target=loop, name="agent-wakeup", daemon=True)
    thread.start()
    return thread
