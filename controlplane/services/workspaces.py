"""The workspaces service, API side: validate requests, keep the contract's states, queue the agent.

The agent (services/workspace_runner.py) owns every VM action; this side only writes rows and
queues `workspace` jobs (args {"action": create|stop|resume|remove}). A row's `pending` names the
action under way. Capacity is checked in the transaction that takes it: the account's slots and the
host's memory for running workspaces (states 1 and 2); past either, 409/200611.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, text

from ..config import Settings
from ..db import Database
from ..jobs import JobQueue
from ..models import Image, Workspace, utcnow
from . import paging, projectconfig
from .containers_errors import ContainersError, invalid, no_slots, project_not_found, workspace_not_found
from .projects import Projects, _int
from storage.errors import BadData
from storage.projects import WorkspaceUploads
from storage import workspace_tar

STARTING, RUNNING, STOPPED, REMOVED, ERROR = 1, 2, 3, 4, 5
NAMES = {1: "starting", 2: "running", 3: "stopped", 4: "removed", 5: "error"}
HOLDS_SLOT = (STARTING, RUNNING)
MAX_UPLOAD = 16 * 1024**2
MAX_UNPACKED = 256 * 1024**2
log = logging.getLogger("openhosting.workspaces")
_ID = re.compile(r"^[0-9a-f]{32}$")
#: How long a workspace_url's ticket may wait before the page is opened (seconds).
TERMINAL_TTL = 60.0
_BOOL = {"true": True, "1": True, "false": False, "0": False}


@dataclass
class CreateRequest:
    """What POST /workspaces carries, as strings (or None when absent) plus the `files` archive."""
    fields: dict
    files: bytes | None = None


def host_memory_mib(settings: Settings) -> int:
    if settings.workspace_host_memory:
        return settings.workspace_host_memory // 1024**2
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 3 // 4 // 1024
    except OSError:
        pass
    return 4096


def _bool(value, default: bool, name: str) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    found = _BOOL.get(str(value).strip().lower())
    if found is None:
        raise invalid(f"{name} must be true, false, 1 or 0")
    return found


class Workspaces:
    def __init__(self, db: Database, settings: Settings, projects: Projects, uploads: WorkspaceUploads,
                 notify=None, poll: float = 0.1):
        self.db = db
        self.settings = settings
        self.projects = projects
        self.uploads = uploads
        self.notify = notify or (lambda: None)
        self.poll = poll

    # ---- reads -----------------------------------------------------------------------------------

    def _get(self, s, user: str, workspace_id: str) -> Workspace:
        ws = s.get(Workspace, workspace_id) if _ID.match(workspace_id or "") else None
        if ws is None or ws.owner != user:
            raise workspace_not_found()
        return ws

    def get(self, user: str, workspace_id: str, base: str) -> dict:
        with self.db.read_session() as s:
            out = self.render(self._get(s, user, workspace_id), base)
        return self.with_terminal(user, out)

    def with_terminal(self, user: str, out: dict) -> dict:
        """`workspace_url` as the workspace's terminal page on the console proxy, with a fresh one-time
        ticket in the fragment (services/tickets.py, kind terminal; never in a logged URL). A client of a
        workspace with `workspace_token_required` appends ``&workspace_token=<token>`` to it."""
        if out["state"]["code"] == REMOVED:
            return out
        from .tickets import TicketKind, Tickets

        ticket, _ = Tickets(self.db).issue(TicketKind.TERMINAL, out["id"], user, ttl=TERMINAL_TTL)
        out["workspace_url"] = f"{self.settings.console_base}/terminal/{out['id']}#{ticket}"
        return out

    def page(self, user: str, base: str, project_id: str | None, states: list[str], limit: str | None,
             page_token: str | None) -> dict:
        count = _int(limit, 10, 1, 30, "limit")
        codes = set()
        for value in states:
            for part in str(value).split(","):
                part = part.strip()
                if not part:
                    continue
                if not re.fullmatch(r"[1-5]", part):
                    raise invalid("states must be workspace state codes 1..5")
                codes.add(int(part))
        try:
            start = paging.offset(page_token)
        except paging.BadToken as exc:
            raise invalid(str(exc)) from None
        query = select(Workspace).where(Workspace.owner == user)
        if project_id:
            query = query.where(Workspace.project_id == project_id)
        if codes:
            query = query.where(Workspace.state.in_(sorted(codes)))
        with self.db.read_session() as s:
            rows = list(s.scalars(query.order_by(Workspace.created_at.desc(), Workspace.id.desc())
                                  .offset(start).limit(count + 1)))
            items = [self.render(w, base) for w in rows[:count]]
        return {"items": [self.with_terminal(user, item) for item in items],
                "paging": paging.paging(start, count, len(rows) > count)}

    def stream(self, user: str, workspace_id: str, name: str) -> bytes:
        with self.db.read_session() as s:
            ws = self._get(s, user, workspace_id)
            if name not in ("workspace_init_output", "workspace_init_error"):
                raise ContainersError(400, 1105, "invalid stream name")
            data = ws.init_output if name == "workspace_init_output" else ws.init_error
        if not data:
            raise ContainersError(404, 1101, "stream not found")
        return data

    @staticmethod
    def render(w: Workspace, base: str) -> dict:
        state = w.state
        streams = {}
        for name, data in (("workspace_init_output", w.init_output), ("workspace_init_error", w.init_error)):
            streams[name] = ({"size": len(data), "uri": f"{base}/api/v1/workspaces/{w.id}/{name}"}
                             if data else None)
        return {
            "id": w.id,
            "project": {"id": w.project_id, "name": w.project_name},
            "state": {"code": state, "name": NAMES[state], "error_reason": w.error_reason if state == ERROR else None},
            "created_at": paging.date(w.created_at),
            "terminated_at": paging.date(w.terminated_at) if state == REMOVED else None,
            "last_usage": paging.date(w.last_usage),
            "inactivity_timeout": w.inactivity_timeout,
            "workspace_token": w.workspace_token if w.token_required else "",
            "workspace_token_required": bool(w.token_required),
            "workspace_init_failed": bool(w.init_failed),
            "streams": streams,
            "permissions": {
                "enter": state in (STARTING, RUNNING) or (state == STOPPED and bool(w.auto_resume)),
                "remove": state in (RUNNING, STOPPED, ERROR),
                "stop": state == RUNNING and w.retention_stopped > 0,
            },
            "auto_resume": bool(w.auto_resume),
            "retention_time_stopped": w.retention_stopped,
            "retention_time_total": w.retention_total,
            "config": w.config,
            "workspace_url": f"{base}/workspace/{w.id}",
            "max_inactive_storage_time": w.retention_stopped,
            "max_storage_time": w.retention_total,
        }

    # ---- create --------------------------------------------------------------------------------

    def create(self, user: str, request: CreateRequest, base: str) -> dict:
        f = {k: v for k, v in request.fields.items() if v is not None}
        project_id = str(f.get("project_id") or "").strip()
        if not project_id:
            raise invalid("project_id is required")
        inactivity = _int(f.get("inactivity_timeout"), 15, 10, 60, "inactivity_timeout")
        token_required = _bool(f.get("workspace_token_required"), False, "workspace_token_required")
        auto_resume = _bool(f.get("auto_resume"), True, "auto_resume")
        stopped = _int(f.get("retention_time_stopped", f.get("max_inactive_storage_time")), 0, 0, 43200,
                       "retention_time_stopped")
        total = _int(f.get("retention_time_total", f.get("max_storage_time")), 0, 0, 43200,
                     "retention_time_total")
        config = f.get("project_config")
        if config is not None:
            config = str(config)
            try:
                projectconfig.validate(config)
            except projectconfig.ConfigError as exc:
                raise invalid(f"project_config: {exc}") from None
        init = f.get("workspace_init")
        files = None
        if request.files is not None:
            if len(request.files) > MAX_UPLOAD:
                raise ContainersError(413, 202511, "file size limit exceeded (max file size is 16MiB)")
            try:
                files = workspace_tar.clean(request.files, max_unpacked=MAX_UNPACKED)
            except BadData as exc:
                raise invalid(f"files: {exc.message}") from None
        project = self.projects.get(user, project_id) if _ID.match(project_id) else None
        if project is None:
            raise project_not_found()
        workspace_id = uuid.uuid4().hex
        try:
            with self.db.session() as s:
                self._serialize(s)
                image = s.get(Image, project.image)
                if image is None:
                    raise ContainersError(409, 200510, "project temporarily unavailable (its image is not built)")
                memory = self.settings.workspace_memory // 1024**2 or image.memory_mib
                self._check_capacity(s, user, project.slots, memory)
                if files is not None:
                    self.uploads.save(workspace_id, files)
                ws = Workspace(id=workspace_id, owner=user, project_id=project.id, project_name=project.name,
                               image=project.image, state=STARTING, pending="create",
                               config=config if config is not None else project.config,
                               workspace_init=str(init) if init is not None else project.workspace_init,
                               inactivity_timeout=inactivity, workspace_token=str(uuid.uuid4()),
                               token_required=token_required, auto_resume=auto_resume,
                               retention_stopped=stopped, retention_total=total, slots=project.slots,
                               memory_mib=memory, created_at=utcnow())
                s.add(ws)
                JobQueue.enqueue(s, "workspace", workspace_id, {"action": "create"})
                s.flush()
                out = self.render(ws, base)
        except ContainersError:
            raise
        except Exception:
            log.exception("creating workspace %s failed", workspace_id)
            self.uploads.remove(workspace_id)
            raise ContainersError(400, 1003, "workspace creation failed") from None
        self.notify()
        return self.with_terminal(user, out)

    def _serialize(self, s) -> None:
        """Capacity checks of concurrent requests in turn (SQLite's writers queue at BEGIN already)."""
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(7304281)"))

    def _check_capacity(self, s, user: str, slots: int, memory: int) -> None:
        used = s.scalar(select(func.coalesce(func.sum(Workspace.slots), 0))
                        .where(Workspace.owner == user, Workspace.state.in_(HOLDS_SLOT))) or 0
        if used + slots > self.settings.workspace_slots:
            raise no_slots(f"not enough free slots ({used} of {self.settings.workspace_slots} in use, "
                           f"{slots} needed)")
        running = s.scalar(select(func.coalesce(func.sum(Workspace.memory_mib), 0))
                           .where(Workspace.state.in_(HOLDS_SLOT))) or 0
        if running + memory > host_memory_mib(self.settings):
            raise no_slots("not enough free slots (this host runs as many workspaces as its memory holds)")

    # ---- stop, resume, remove ------------------------------------------------------------------

    def stop(self, user: str, workspace_id: str, wait: float = 300.0) -> None:
        """Queue the stop and answer once the VM is saved (state 3), else 500/1003."""
        with self.db.session() as s:
            ws = self._get(s, user, workspace_id)
            if ws.state != RUNNING or ws.retention_stopped <= 0 or ws.pending is not None:
                raise ContainersError(400, 1013, "the workspace cannot be stopped")
            ws.pending = "stop"
            JobQueue.enqueue(s, "workspace", ws.id, {"action": "stop"})
        self.notify()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with self.db.read_session() as s:
                state, pending = s.execute(select(Workspace.state, Workspace.pending)
                                           .where(Workspace.id == workspace_id)).one()
            if pending != "stop":
                if state == STOPPED:
                    return
                raise ContainersError(500, 1003, "stop the workspace failed")
            time.sleep(self.poll)
        raise ContainersError(500, 1003, "stop the workspace failed (it is still being saved)")

    def resume(self, user: str, workspace_id: str) -> None:
        with self.db.session() as s:
            self._serialize(s)
            ws = self._get(s, user, workspace_id)
            if ws.state != STOPPED or ws.pending is not None:
                raise ContainersError(400, 1013, "the workspace is not stopped")
            self._check_capacity(s, user, ws.slots, ws.memory_mib)
            ws.state, ws.pending = STARTING, "resume"
            JobQueue.enqueue(s, "workspace", ws.id, {"action": "resume"})
        self.notify()

    def remove(self, user: str, workspace_id: str) -> None:
        with self.db.session() as s:
            ws = self._get(s, user, workspace_id)
            if ws.state not in (RUNNING, STOPPED, ERROR):
                raise ContainersError(400, 1013, "the workspace cannot be removed")
            self.mark_removed(s, ws)
        self.notify()

    @staticmethod
    def mark_removed(s, ws: Workspace) -> None:
        """State 4 now; the agent destroys the VM, its disk and its saved state in the background."""
        ws.state, ws.pending, ws.terminated_at = REMOVED, "remove", utcnow()
        JobQueue.enqueue(s, "workspace", ws.id, {"action": "remove"})

    # ---- activity (files endpoints) ------------------------------------------------------------

    def running(self, user: str, workspace_id: str, code: int = 1008) -> Workspace:
        """The workspace if it is running, noting the use; else 404 with `code` and the contract's words.

        Entering a stopped workspace resumes it when its `auto_resume` is set (§A): the call queues
        the resume (capacity as PUT resume: 409/200611 past it), waits up to
        `workspace_resume_wait` seconds for state 2 and then goes on; past that it answers
        404/`code` "workspace is starting" and the resume goes on in the background."""
        for attempt in (1, 2):
            with self.db.session() as s:
                ws = self._get(s, user, workspace_id)
                if ws.state == RUNNING and ws.pending is None:
                    ws.last_usage = utcnow()
                    return ws
                resumable = ws.pending == "resume" or (ws.state == STOPPED and ws.pending is None
                                                       and bool(ws.auto_resume))
                words = {STARTING: "workspace is starting", STOPPED: "workspace is stopped"}
                reason = "workspace is stopped" if ws.pending == "stop" else words.get(ws.state)
            if attempt == 2 or not resumable:
                raise ContainersError(404, code, reason or "workspace not available")
            self._auto_resume(user, workspace_id)
            deadline = time.monotonic() + self.settings.workspace_resume_wait
            while time.monotonic() < deadline:
                with self.db.read_session() as s:
                    pending = s.scalar(select(Workspace.pending).where(Workspace.id == workspace_id))
                if pending != "resume":
                    break
                time.sleep(self.poll)
        raise AssertionError("unreachable")

    def _auto_resume(self, user: str, workspace_id: str) -> None:
        """Queue the resume of a stopped workspace with `auto_resume` (unless one is under way)."""
        with self.db.session() as s:
            self._serialize(s)
            ws = self._get(s, user, workspace_id)
            if ws.state != STOPPED or ws.pending is not None or not ws.auto_resume:
                return
            self._check_capacity(s, user, ws.slots, ws.memory_mib)
            ws.state, ws.pending = STARTING, "resume"
            JobQueue.enqueue(s, "workspace", ws.id, {"action": "resume"})
            log.info("workspace %s: resumed on access (auto_resume)", ws.id)
        self.notify()
