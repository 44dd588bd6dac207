"""The agent's side of workspaces: every VM action (create, stop, resume, remove), the timers and the
reconciliation of rows with the VMs that exist.

Jobs of kind `workspace` carry {"action": …}. Each handler is idempotent against the row: it does
its work only while the row still asks for it (`pending`), writes the outcome, and only then
finishes the job, so an agent killed at any point redoes the action on restart (JobQueue requeues
it) and ends in a correct state. A create that was cut short starts over from a fresh VM. A failure
of create or resume is state 5 with a reason, never a workspace stuck in `starting`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from pathlib import Path

from sqlalchemy import select

from hypervisor.errors import HypervisorError
from hypervisor.microvm import tarcheck
from storage.submissions import concat

from ..jobs import JobQueue
from ..models import Image, Project, Workspace, utcnow
from .paging import aware
from .workspace_files import ROOT
from .workspace_guest import PREPARE, USER_HOME, USER_UID, conversation, workspace_vms
from .workspaces import ERROR, REMOVED, RUNNING, STARTING, STOPPED, Workspaces

log = logging.getLogger("openhosting.workspaces")

STREAM_CAP = 1024 * 1024
INIT_PATH = f"{USER_HOME}/.workspace_init"
ENV = {"HOME": USER_HOME, "USER": "user", "LOGNAME": "user", "LANG": "C.UTF-8",
       "PATH": "/usr/local/bin:/usr/bin:/bin", "SE_PATH_WORKSPACE": ROOT}


class _Lease:
    """Renews a job's lease while a long action runs (a template boot under TCG takes minutes; an
    expired lease would let another worker take the same job)."""

    EVERY = 5.0

    def __init__(self, queue: JobQueue, job_id: int):
        self.queue = queue
        self.job_id = job_id
        self.done = threading.Event()

    def _renew(self) -> None:
        while not self.done.wait(self.EVERY):
            try:
                self.queue.progress(self.job_id, 0)
            except Exception:
                log.exception("renewing the lease of job %s", self.job_id)

    def __enter__(self):
        threading.Thread(target=self._renew, name=f"lease-{self.job_id}", daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        return False


def _prepared(guest) -> bool:
    """Whether the user's workspace directory is there, owned by the user."""
    from hypervisor.microvm import guestd

    try:
        st = guest.stat(ROOT)
    except guestd.GuestError:
        return False
    return st.type == "d" and st.uid == USER_UID


def _split(marks: list[tuple[str, float]]) -> str:
    """"vm 0.61, connect 0.02, …": the seconds between successive marks."""
    return ", ".join(f"{name} {t - marks[i][1]:.2f}" for i, (name, t) in enumerate(marks[1:]))


class WorkspaceRunner:
    kind = "workspace"

    def __init__(self, db, settings, workspaces: Workspaces, host, queue: JobQueue, drive_pool):
        self.db = db
        self.settings = settings
        self.workspaces = workspaces
        self.host = host
        self.queue = queue
        self.drive_pool = drive_pool
        self._vms = None
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    @property
    def vms(self):
        with self._lock:
            if self._vms is None:
                self._vms = workspace_vms(self.settings, self.host, owner=True)
            return self._vms

    # ---- jobs ------------------------------------------------------------------------------------

    def run(self, job) -> None:
        action = (job.args or {}).get("action")
        handler = {"create": self._create, "stop": self._stop, "resume": self._resume,
                   "remove": self._remove}.get(action)
        if handler is None:
            self.queue.finish(job.id, error=f"unknown action {action!r}")
            return
        queued = (utcnow() - aware(job.created_at)).total_seconds()
        started = time.monotonic()
        try:
            with self._serialized(job.target), _Lease(self.queue, job.id):
                handler(job.target)
            log.info("workspace %s: %s took %.2f s after %.2f s in the queue", job.target, action,
                     time.monotonic() - started, queued)
        except Exception as exc:
            log.exception("workspace %s: %s failed", job.target, action)
            self._failed(job.target, action, exc)
            self.queue.finish(job.id, error=f"{action} failed")
            return
        self.queue.finish(job.id)

    @contextlib.contextmanager
    def _serialized(self, workspace_id: str):
        """One action at a time per workspace in this agent (a timer's job may meet the API's)."""
        with self._lock:
            lock = self._locks.setdefault(workspace_id, threading.Lock())
        with lock:
            yield

    def _row(self, workspace_id: str, pending: str) -> Workspace | None:
        with self.db.read_session() as s:
            ws = s.get(Workspace, workspace_id)
            if ws is None or ws.pending != pending:
                return None
            s.expunge(ws)
            return ws

    def _update(self, workspace_id: str, expected: str, **values) -> bool:
        """Write `values` if the row still waits for `expected` (a remove may have overtaken it)."""
        with self.db.session() as s:
            ws = s.get(Workspace, workspace_id)
            if ws is None or ws.pending != expected:
                return False
            for key, value in values.items():
                setattr(ws, key, value)
            return True

    def _failed(self, workspace_id: str, action: str, exc: Exception) -> None:
        reason = {"create": "the workspace could not be started", "resume": "the workspace could not be resumed",
                  "stop": None, "remove": None}.get(action)
        if action == "stop":
            # still running (the VM was not saved): the API's stop answers 500/1003
            self._update(workspace_id, "stop", pending=None)
        elif reason:
            self._update(workspace_id, action, state=ERROR, pending=None, failed_at=utcnow(),
                         error_reason=f"{reason}: {type(exc).__name__}")
            try:
                self.vms.remove(workspace_id)  # state 5 holds no VM and no slot
            except Exception:
                log.exception("workspace %s: removing the failed VM", workspace_id)

    def _image(self, slug: str):
        from hypervisor.microvm.image import SandboxImage

        with self.db.read_session() as s:
            image = s.get(Image, slug)
            if image is None:
                return None
            return SandboxImage(slug=slug, base=self.drive_pool.path(image.drive), kernel=Path(image.kernel),
                                initramfs=Path(image.initramfs), cmdline=image.cmdline, memory_mib=image.memory_mib)

    def _create(self, workspace_id: str) -> None:
        ws = self._row(workspace_id, "create")
        if ws is None:
            return
        image = self._image(ws.image)
        if image is None:
            self._update(workspace_id, "create", state=ERROR, pending=None, failed_at=utcnow(),
                         error_reason=f"image {ws.image} is not installed on this host")
            return
        marks = [("start", time.monotonic())]
        self.vms.remove(workspace_id)  # a create cut short by an agent restart starts over (idempotent)
        self.vms.create(workspace_id, image, ws.memory_mib)
        marks.append(("vm", time.monotonic()))
        with self.db.read_session() as s:
            project = s.get(Project, ws.project_id)
            has_project = project is not None
        project_files = self.workspaces.projects.files.load(ws.project_id) if has_project else None
        uploads = self.workspaces.uploads.load(workspace_id)
        with conversation(self.settings, self.vms, workspace_id, hello_timeout=60) as guest:
            marks.append(("connect", time.monotonic()))
            if not _prepared(guest):      # the template made them (workspace_vms); else here, once
                # 300 s: four short commands, but a fresh clone under TCG on a host at load 40 took over 60 s
                prepared = guest.exec(PREPARE, uid=0, gid=0, timeout=300)
                if prepared.exit_code != 0:
                    how = "timed out" if prepared.timed_out else f"exit {prepared.exit_code}, signal {prepared.signal}"
                    raise RuntimeError(f"preparing the guest failed ({how}): {prepared.stderr[-300:]!r}")
                marks.append(("prepare", time.monotonic()))
            try:
                if project_files and uploads:   # one extraction, the uploads over the project's files
                    both, _, _ = concat(project_files, uploads)
                    guest.untar(ROOT, both, limits=tarcheck.TWO_PARTS)  # each part checked on its own
                elif project_files or uploads:
                    guest.untar(ROOT, project_files or uploads)
            except Exception as exc:
                self._update(workspace_id, "create", state=ERROR, pending=None, failed_at=utcnow(),
                             error_reason=f"the workspace files could not be placed: {type(exc).__name__}")
                self.vms.remove(workspace_id)
                return
            marks.append(("files", time.monotonic()))
            out = err = b""
            failed = False
            if ws.workspace_init.strip():
                guest.put_file(INIT_PATH, ws.workspace_init.encode(), mode=0o700)
                # In a session of its own (setsid -w): oh-guest kills what an exec leaves in its
                # process group when it ends, and a `setsid cmd &` of the script may not have left
                # that group yet when the script exits; background processes must outlive the init.
                script = [INIT_PATH] if ws.workspace_init.startswith("#!") else ["/bin/sh", INIT_PATH]
                result = guest.exec(["setsid", "-w", *script], cwd=ROOT, env=ENV,
                                    timeout=self.settings.workspace_init_timeout)
                out, err = result.stdout[:STREAM_CAP], result.stderr[:STREAM_CAP]
                failed = result.timed_out or result.exit_code != 0
                if result.timed_out:
                    err += f"\n[openhosting: workspace_init stopped after {self.settings.workspace_init_timeout} s]\n".encode()
            marks.append(("init", time.monotonic()))
        now = utcnow()
        if not self._update(workspace_id, "create", state=RUNNING, pending=None, running_since=now,
                            init_output=out or None, init_error=err or None, init_failed=failed):
            return  # removed meanwhile: its remove job clears the VM
        log.info("workspace %s running (init %s) in %.2f s: %s", workspace_id, "failed" if failed else "ok",
                 marks[-1][1] - marks[0][1], _split(marks))

    def _stop(self, workspace_id: str) -> None:
        if self._row(workspace_id, "stop") is None:
            return
        if self.vms.state(workspace_id) == "running":
            self.vms.stop(workspace_id)
        if self.vms.state(workspace_id) != "stopped":
            raise RuntimeError("the VM was not saved")
        self._update(workspace_id, "stop", state=STOPPED, pending=None, stopped_at=utcnow())

    def _resume(self, workspace_id: str) -> None:
        if self._row(workspace_id, "resume") is None:
            return
        state = self.vms.state(workspace_id)
        if state == "missing":
            self._update(workspace_id, "resume", state=ERROR, pending=None, failed_at=utcnow(),
                         error_reason="the saved state of the workspace is lost")
            return
        self.vms.resume(workspace_id)  # also unpauses a VM that an interrupted resume left paused
        self._update(workspace_id, "resume", state=RUNNING, pending=None, running_since=utcnow())

    def _remove(self, workspace_id: str) -> None:
        if self._row(workspace_id, "remove") is None:
            return
        self.vms.remove(workspace_id)
        self.workspaces.uploads.remove(workspace_id)
        self._update(workspace_id, "remove", pending=None)

    # ---- timers and reconciliation ---------------------------------------------------------------

    def minutes(self, n: int) -> dt.timedelta:
        return dt.timedelta(seconds=n * self.settings.workspace_minute)

    def timers(self) -> None:
        """The contract's timers (inactivity, retention, error rows) and VMs that died under a row."""
        now = utcnow()
        stops, removes = [], []
        with self.db.read_session() as s:
            rows = list(s.scalars(select(Workspace).where(Workspace.state != REMOVED, Workspace.pending.is_(None))))
            s.expunge_all()  # read below, after the read session's rollback
        for ws in rows:
            created = aware(ws.created_at)
            if ws.retention_total > 0 and now - created >= self.minutes(ws.retention_total):
                removes.append(ws.id)
            elif ws.state == RUNNING:
                idle_from = max(t for t in (aware(ws.last_usage), aware(ws.running_since), created) if t)
                if now - idle_from >= self.minutes(ws.inactivity_timeout):
                    (stops if ws.retention_stopped > 0 else removes).append(ws.id)
            elif ws.state == STOPPED and now - aware(ws.stopped_at or created) >= self.minutes(ws.retention_stopped):
                removes.append(ws.id)
            elif ws.state == ERROR and now - aware(ws.failed_at or created) >= self.minutes(ws.inactivity_timeout):
                removes.append(ws.id)
        for workspace_id in stops + removes:
            with self.db.session() as s:
                ws = s.get(Workspace, workspace_id)
                if ws is None or ws.pending is not None or ws.state == REMOVED:
                    continue
                if workspace_id in stops and ws.state == RUNNING:
                    ws.pending = "stop"
                    JobQueue.enqueue(s, "workspace", ws.id, {"action": "stop"})
                else:
                    Workspaces.mark_removed(s, ws)
            log.info("workspace %s: %s by its timers", workspace_id, "stopping" if workspace_id in stops else "removing")
        self.reconcile()

    def reconcile(self) -> None:
        """Rows without an action under way against the VMs that exist; VMs without a live row go."""
        vms = self.vms
        known = set(vms.known())
        with self.db.read_session() as s:
            rows = {w.id: (w.state, w.pending) for w in s.scalars(select(Workspace).where(Workspace.state != REMOVED))}
            active = JobQueue.active_for(s, "workspace", list(rows))
        for workspace_id, (state, pending) in rows.items():
            if pending is not None:
                if workspace_id not in active:  # the job was lost: ask again
                    with self.db.session() as s:
                        JobQueue.enqueue(s, "workspace", workspace_id, {"action": pending})
                continue
            vm = vms.state(workspace_id) if workspace_id in known else "missing"
            if state == RUNNING and vm == "running":
                # hold the VM's run port (after an agent restart nobody does, and oh-run then polls
                # for a host every 5 ms); a no-op while the port is held
                try:
                    vms.attach(workspace_id)
                except HypervisorError as exc:
                    log.warning("workspace %s: could not attach to its run port: %s", workspace_id, exc)
            fix = None
            if state == RUNNING and vm != "running":
                fix = dict(state=STOPPED, stopped_at=utcnow()) if vm == "stopped" else dict(
                    state=ERROR, failed_at=utcnow(), error_reason="the workspace VM stopped unexpectedly")
            elif state == STOPPED and vm == "missing":
                fix = dict(state=ERROR, failed_at=utcnow(), error_reason="the saved state of the workspace is lost")
            elif state == STOPPED and vm == "running":
                fix = dict(state=RUNNING, running_since=utcnow())
            elif state == STARTING:
                fix = dict(state=ERROR, failed_at=utcnow(), error_reason="the workspace start was interrupted")
            elif state == ERROR and vm != "missing":
                vms.remove(workspace_id)
            if fix:
                log.warning("workspace %s: row says %s, VM is %s: %s", workspace_id, state, vm, fix)
                with self.db.session() as s:
                    ws = s.get(Workspace, workspace_id)
                    if ws is not None and ws.pending is None and ws.state == state:
                        for key, value in fix.items():
                            setattr(ws, key, value)
                if fix.get("state") == ERROR and vm != "missing":
                    vms.remove(workspace_id)
        for workspace_id in known - set(rows):
            with self.db.read_session() as s:
                ws = s.get(Workspace, workspace_id)
                busy = ws is not None and ws.pending == "remove"
            if not busy:
                log.warning("workspace VM %s has no live workspace: removing it", workspace_id)
                vms.remove(workspace_id)
