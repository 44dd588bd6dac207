"""The terminal hub: the one holder of every workspace's terminal port (``org.openhosting.pty``).

A virtio-serial port is one connection, and a second connection to oh-guest drops the channels of
the first. So one process, the terminal service (`service.py`), holds the terminal ports of all
workspaces through one `PtyHub`: browser terminals (the console proxy relays them over a local Unix
socket) and SSH sessions (the gateway runs in the same process) all open their shells here, many at
once, each on its own channel of the workspace's one connection.

`PtyHub.enter(owner, workspace_id, auto_resume)` resolves the workspace now, from the database: the
owner's and running, or stopped with ``auto_resume`` (then it is resumed the way the API does it:
state 1 and a `resume` job for the agent, and the hub waits for state 2). Anything else raises
`Refused` with a sentence fit to show the user; another user's workspace and one that never existed
get the same sentence. While sessions are open the hub marks the workspace used (`last_usage`) once a
minute, so inactivity does not stop a workspace someone is typing in.

A session ends when its shell exits, when the client goes, or when the port closes under it (the
workspace was stopped or removed: `end_reason` says which).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select, update

from ..config import Settings
from ..db import Database
from ..models import Workspace, utcnow
from ..services.containers_errors import ContainersError
from ..services.workspaces import ERROR, REMOVED, RUNNING, STARTING, STOPPED, Workspaces

log = logging.getLogger("openhosting.terminal")

RESUME_WAIT = 300.0
TOUCH_EVERY = 60.0
TERM = "xterm-256color"


class Refused(Exception):
    """The terminal cannot be opened; ``str(exc)`` is the sentence the user sees."""


@dataclass
class Entry:
    owner: str
    workspace_id: str
    resumed: bool


class PtyHub:
    def __init__(self, settings: Settings, db: Database, vms, notify=None, poll: float = 0.2):
        self.settings = settings
        self.db = db
        self.vms = vms            # hypervisor.microvm.workspace.WorkspaceVMs (guest_port)
        self.workspaces = Workspaces(db, settings, None, None, notify=notify)
        self.poll = poll
        self._lock = threading.Lock()
        self._conns: dict[str, object] = {}           # workspace id -> GuestChannel
        self._conn_locks: dict[str, threading.Lock] = {}
        self._open: dict[str, int] = {}               # workspace id -> open sessions
        self._stop = threading.Event()
        self._toucher = threading.Thread(target=self._touch_loop, name="terminal-touch", daemon=True)
        self._toucher.start()

    # --- who may enter ------------------------------------------------------------------------

    def enter(self, owner: str | None, workspace_id: str, auto_resume: bool = True) -> Entry:
        """Check `owner` may open a terminal in the workspace now; resume it if it is stopped and
        has auto_resume (and the caller allows it). Raises `Refused`."""
        missing = f"no workspace {workspace_id[:64]} for this user"
        with self.db.read_session() as s:
            ws = s.get(Workspace, workspace_id) if owner else None
            if ws is None or ws.owner != owner:
                raise Refused(missing)
            state, pending, resumable = ws.state, ws.pending, bool(ws.auto_resume)
        resumed = False
        if state == STOPPED and pending is None:
            if not (resumable and auto_resume):
                raise Refused(f"workspace {workspace_id} is stopped (auto_resume is off: resume it first)")
            try:
                self.workspaces.resume(owner, workspace_id)
            except ContainersError as exc:
                if exc.code != 1013:           # 1013: someone else resumed it meanwhile
                    raise Refused(f"workspace {workspace_id} cannot be resumed: {exc.message}") from None
            resumed = True
            state = STARTING
        elif state == STOPPED or pending == "stop":
            raise Refused(f"workspace {workspace_id} is being stopped")
        if state == STARTING:
            self._wait_running(workspace_id)
        elif state != RUNNING:
            words = {REMOVED: "was removed", ERROR: "failed (state 5)"}.get(state, f"is in state {state}")
            raise Refused(f"workspace {workspace_id} {words}")
        return Entry(owner, workspace_id, resumed)

    def _wait_running(self, workspace_id: str) -> None:
        deadline = time.monotonic() + RESUME_WAIT
        while time.monotonic() < deadline:
            with self.db.read_session() as s:
                state, pending = s.execute(select(Workspace.state, Workspace.pending)
                                           .where(Workspace.id == workspace_id)).one()
            if state == RUNNING and pending is None:
                return
            if state not in (STARTING, RUNNING):
                raise Refused(f"workspace {workspace_id} did not start (state {state})")
            time.sleep(self.poll)
        raise Refused(f"workspace {workspace_id} is still starting after {RESUME_WAIT:.0f} s")

    # --- the port -----------------------------------------------------------------------------

    def channel(self, workspace_id: str):
        """The workspace's terminal-port connection (made, or made again after the VM was stopped
        and resumed). Refused when the VM has none."""
        from hypervisor.errors import DomainNotFound, HypervisorError, InvalidConfig
        from hypervisor.microvm.guest_channel import GuestChannel
        from hypervisor.microvm.guestd import PTY_CHANNEL, GuestError

        with self._lock:
            lock = self._conn_locks.setdefault(workspace_id, threading.Lock())
        with lock:
            conn = self._conns.get(workspace_id)
            if conn is not None and conn.dead is None:
                return conn
            try:
                path = self.vms.guest_port(workspace_id, PTY_CHANNEL)
                conn = GuestChannel.connect(str(path), hello_timeout=15.0)
            except InvalidConfig:
                raise Refused(f"workspace {workspace_id} was made before terminals existed (its saved VM has "
                              "no terminal port): create a new workspace") from None
            except DomainNotFound:
                raise Refused(f"workspace {workspace_id} is not running") from None
            except (GuestError, HypervisorError, OSError) as exc:
                log.warning("workspace %s: terminal port: %s", workspace_id, exc)
                raise Refused(f"workspace {workspace_id}: its terminal service does not answer") from None
            self._conns[workspace_id] = conn
            return conn

    def open_shell(self, entry: Entry, rows: int, cols: int):
        """A login shell in the workspace (hypervisor.microvm.guest_ops.PtySession)."""
        from hypervisor.microvm.guestd import GuestError

        rows, cols = clamp(rows, 24), clamp(cols, 80)
        try:
            session = self.channel(entry.workspace_id).pty_open(rows, cols, env={"TERM": TERM})
        except GuestError as exc:
            raise Refused(f"workspace {entry.workspace_id}: the shell did not start ({exc.message})") from None
        self._opened(entry.workspace_id, +1)
        return session

    def run(self, entry: Entry, command: str | None, *, pty: tuple[int, int] | None = None):
        """A command through the user's shell (None: the login shell itself): with a terminal
        (PtySession) or with separate output streams and stdin (ExecProcess)."""
        from hypervisor.microvm.guestd import GuestError

        argv = ["/bin/bash", "-lc", command] if command is not None else ["/bin/bash", "-l"]
        try:
            conn = self.channel(entry.workspace_id)
            if pty is not None:
                proc = conn.pty_open(clamp(pty[0], 24), clamp(pty[1], 80), env={"TERM": TERM}, argv=argv)
            else:
                proc = conn.exec_stream(argv, stdin=True, cwd="/home/user/workspace")
        except GuestError as exc:
            raise Refused(f"workspace {entry.workspace_id}: the command did not start ({exc.message})") from None
        self._opened(entry.workspace_id, +1)
        return proc

    def closed(self, entry: Entry) -> None:
        self._opened(entry.workspace_id, -1)

    def end_reason(self, workspace_id: str) -> str:
        """Why a session ended when its port went away: the workspace's state says."""
        with self.db.read_session() as s:
            row = s.execute(select(Workspace.state, Workspace.pending).where(Workspace.id == workspace_id)).first()
        if row is None or row.state == REMOVED or row.pending == "remove":
            return "the workspace was removed"
        if row.state == STOPPED or row.pending == "stop":
            return "the workspace was stopped"
        return "the workspace's terminal port closed"

    # --- activity -----------------------------------------------------------------------------

    def _opened(self, workspace_id: str, step: int) -> None:
        with self._lock:
            self._open[workspace_id] = self._open.get(workspace_id, 0) + step
            if self._open[workspace_id] <= 0:
                del self._open[workspace_id]
        if step > 0:
            self.touch([workspace_id])

    def touch(self, ids: list[str]) -> None:
        if not ids:
            return
        try:
            with self.db.session() as s:
                s.execute(update(Workspace).where(Workspace.id.in_(ids), Workspace.state == RUNNING)
                          .values(last_usage=utcnow()))
        except Exception:  # noqa: BLE001 (a database hiccup must not end sessions)
            log.exception("terminal: marking workspaces used failed")

    def _touch_loop(self) -> None:
        while not self._stop.wait(TOUCH_EVERY):
            with self._lock:
                ids = list(self._open)
            self.touch(ids)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()


def clamp(value, default: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return max(1, min(number, 1000))
