"""What a workspace exec needs around oh-run: the script's file and command, the host ends of the
workspaces' run ports (kept connected while `WorkspaceVMs` lives), the resync after a cut-short
reply, and the kill of a timed-out command that leaves the VM running."""

from __future__ import annotations

import logging
import socket
import time

from ..errors import HypervisorError
from ..guest import Guest
from . import run, runport

log = logging.getLogger("openhosting.hypervisor.microvm")

#: Kills what oh-run is running: each exec is `setsid -w` (oh-run's child, its own group) over the
#: script's shell (the grandchild, a session of its own); both groups go, the VM lives on.
KILL_RUN = """\
served=$(cat /run/oh/oh-run.pid 2>/dev/null) || exit 0
parents=" $served "
for round in 1 2; do
  for p in /proc/[0-9]*; do
    read -r _ _ _ ppid _ < "$p/stat" 2>/dev/null || continue
    case "$parents" in *" $ppid "*) parents="$parents${p#/proc/} ";; esac
  done
done
for pid in $parents; do [ "$pid" = "$served" ] || kill -9 "-$pid" 2>/dev/null; done
true
"""
#: The script of an exec travels as this file in /sandbox; the command starts it in a session of its
#: own, so what it leaves running in the background is not killed with oh-run's child when it ends.
SCRIPT = ".oh-exec"
COMMAND = f"exec setsid -w /bin/sh ./{SCRIPT}"


def kill_run(ws_id: str, guest: Guest) -> None:
    """After a timeout: kill the command, keep the VM (and the port: see `RunPorts.resync`). The
    guest agent of a clone answers its first command only after a resync: wait for it first."""
    try:
        run.wait_agent(guest, 60)
        run.exec_plain(guest, KILL_RUN, timeout=30)
    except HypervisorError as exc:
        log.warning("workspace %s: could not kill a timed-out command: %s", ws_id, exc)


class RunPorts:
    """The host end of each workspace's run port, by workspace id (callers serialize per id)."""

    def __init__(self):
        self._ports: dict[str, socket.socket] = {}

    def keep(self, ws_id: str, port: socket.socket) -> None:
        self._ports[ws_id] = port

    def get(self, ws_id: str, guest: Guest) -> socket.socket | None:
        """The connected port (connected now if it was not, or had closed); None when unreachable."""
        port = self._ports.get(ws_id)
        if port is not None and runport.drain(port) is None:
            self.close(ws_id)
            port = None
        if port is None:
            port = runport.connect(guest)
            if port is not None:
                self._ports[ws_id] = port
        return port

    def close(self, ws_id: str) -> None:
        port = self._ports.pop(ws_id, None)
        if port is not None:
            port.close()

    def resync(self, ws_id: str, port: socket.socket, wait: float = 30) -> None:
        """Read the rest of a cut-short reply up to its status, so the next command's reply starts
        clean. oh-run blocks writing while no host is connected, so the port stays open; when the
        status does not come, the port is given up (the next exec connects again)."""
        rest = runport.Reply(0)
        rest.acked = True
        deadline = time.monotonic() + wait
        try:
            while rest.status is None and runport.receive(port, rest, deadline, None):
                pass
        except (runport.Garbled, OSError):
            pass
        if rest.status is None:
            log.warning("workspace %s: no end of a cut-short command on its run port; reconnecting", ws_id)
            self.close(ws_id)
