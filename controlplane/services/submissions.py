"""Submissions, API side (workspaces-api.md endpoints 11-14): validate, queue in status 0, render.

The agent (services/submission_runner.py) takes queued submissions in id order and runs them; this
side writes the row and the uploaded source, and reads results back. Stream bytes are kept by
storage/submissions.py; the row's `streams` records which exist and their sizes.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time

from sqlalchemy import func, select

from ..config import Settings
from ..db import Database
from ..models import Image, Submission, utcnow
from . import paging, projectconfig
from .containers_errors import ContainersError, invalid, project_not_found
from .projects import Projects, _int
from storage import workspace_tar
from storage.errors import BadData
from storage.submissions import SubmissionFiles

WAITING, PREPARATION, EXECUTION = 0, 1, 3
BUILD_ERROR, RUNTIME_ERROR, TIME_LIMIT, FAIL, OK, INTERNAL_ERROR, PROJECT_ERROR = 11, 12, 13, 14, 15, 20, 22
NAMES = {0: "waiting", 1: "preparation", 3: "execution", 11: "build error", 12: "runtime error",
         13: "time limit exceeded", 14: "fail", 15: "ok", 20: "internal error", 22: "project error"}
EXECUTING = (WAITING, PREPARATION, EXECUTION)
STREAMS = ("source", "auxdata", "tests_report", "debug_log", "stage_init_output", "stage_init_error",
           "stage_build_output", "stage_build_error", "stage_run_output", "stage_run_error", "stage_test_output",
           "stage_test_error", "stage_post_output", "stage_post_error", "workspace_init_output",
           "workspace_init_error")
CONTENT_TYPES = {"source": "application/gzip", "auxdata": "application/gzip", "tests_report": "application/json"}
#: The clean copy of the source that the runner lays into the VM (not a stream).
CLEAN_SOURCE = "clean.tar.gz"
MAX_UPLOAD = 16 * 1024**2
MAX_UNPACKED = 256 * 1024**2
log = logging.getLogger("openhosting.submissions")
_ID = re.compile(r"^[0-9a-f]{32}$")


def ring_key(submission_id: int) -> str:
    """What the agent rings (doorbell.ringer) when submission ``submission_id`` is final."""
    return f"submission-{submission_id}"


def resolve_scenario(config: dict, name: str | None) -> str:
    """The scenario's name: `name` when the config has it, else the one with `default: true`."""
    scenarios = config.get("scenarios", {})
    if name:
        if name not in scenarios:
            raise invalid(f"scenario {name[:64]!r} is not in the project configuration")
        return name
    defaults = [n for n, body in scenarios.items() if body.get("default") is True]
    if not defaults:
        raise invalid("scenario is required: the project configuration has no default scenario")
    return defaults[0]


class Submissions:
    #: The longest `get(..., wait=)` (s). A wait holds one of the API process's threads (gunicorn
    #: gthread, 8 by default): past WAITS at once in a process, a get answers at once instead, so
    #: waiting clients can never take every thread (they fall back to asking again).
    MAX_WAIT = 60.0
    WAITS = 6

    def __init__(self, db: Database, settings: Settings, projects: Projects, files: SubmissionFiles,
                 notify=None, finished=None, waiters=None, poll: float = 0.5):
        self.db = db
        self.settings = settings
        self.projects = projects
        self.files = files
        self.notify = notify or (lambda: None)
        # agent -> API: the agent rings `finished(ring_key(id))` when a submission is final; a `get`
        # with `wait` sleeps on `waiters` (doorbell.Waiters) and re-reads every `poll` s regardless
        self.finished = finished or (lambda key: None)
        self.waiters = waiters
        self.poll = poll
        self._waits = threading.BoundedSemaphore(self.WAITS)

    # ---- create --------------------------------------------------------------------------------

    def create(self, user: str, fields: dict, source: bytes | None) -> int:
        f = {k: v for k, v in fields.items() if v is not None}
        project_id = str(f.get("project_id") or "").strip()
        if not project_id:
            raise invalid("project_id is required")
        if source is None or not source:
            raise invalid("source is required (a tar.gz of workspace/)")
        if len(source) > MAX_UPLOAD:
            raise ContainersError(413, 202511, "file size limit exceeded (max file size is 16MiB)")
        try:
            clean = workspace_tar.clean(source, max_unpacked=MAX_UNPACKED)
        except BadData as exc:
            raise invalid(f"source: {exc.message}") from None
        project = self.projects.get(user, project_id) if _ID.match(project_id) else None
        if project is None:
            raise project_not_found()
        config = f.get("project_config")
        text = str(config) if config is not None else project.config
        try:
            doc = projectconfig.validate(text)
        except projectconfig.ConfigError as exc:
            if config is not None:
                raise invalid(f"project_config: {exc}") from None
            doc = None    # the project's own config no longer holds: the run ends in 22
        scenario = resolve_scenario(doc, f.get("scenario")) if doc is not None else str(f.get("scenario") or "")
        init = f.get("workspace_init")
        try:
            with self.db.session() as s:
                if s.get(Image, project.image) is None:
                    raise ContainersError(409, 200510, "project temporarily unavailable (its image is not built)")
                queued = s.scalar(select(func.count()).select_from(Submission)
                                  .where(Submission.owner == user, Submission.status.in_(EXECUTING))) or 0
                if queued >= self.settings.submission_queue_limit:
                    raise ContainersError(400, 1003, f"creation failed: {queued} submissions of this account are "
                                                     f"waiting or running (at most "
                                                     f"{self.settings.submission_queue_limit})")
                sub = Submission(owner=user, project_id=project.id, project_name=project.name, image=project.image,
                                 scenario=scenario[:64], config=text,
                                 workspace_init=str(init) if init is not None else project.workspace_init,
                                 status=WAITING, streams=json.dumps({"source": len(source)}), created_at=utcnow())
                s.add(sub)
                s.flush()
                submission_id = sub.id
                self.files.save(submission_id, "source", source)
                self.files.save(submission_id, CLEAN_SOURCE, clean)
        except ContainersError:
            raise
        except Exception:
            log.exception("creating a submission failed")
            raise ContainersError(400, 1003, "submission creation failed") from None
        self.notify()
        return submission_id

    # ---- reads ---------------------------------------------------------------------------------

    def _get(self, s, user: str, submission_id) -> Submission:
        text = str(submission_id or "")
        sub = s.get(Submission, int(text)) if re.fullmatch(r"[0-9]{1,12}", text) and int(text) < 2**31 else None
        if sub is None or sub.owner != user:
            raise ContainersError(404, 1001, "submission not found")
        return sub

    def get(self, user: str, submission_id, base: str, wait: str | None = None) -> dict:
        """One submission; with ``wait`` (seconds, up to MAX_WAIT), answered as soon as it is final
        or when that time has passed, whichever comes first (a client's long poll instead of many)."""
        seconds = self._wait_seconds(wait)
        with self.db.read_session() as s:
            item = self.render(self._get(s, user, submission_id), base)   # 404 at once, never after a wait
        if not seconds or not item["executing"] or self.waiters is None:
            return item
        if not self._waits.acquire(blocking=False):
            return item
        deadline = time.monotonic() + seconds
        # registered before the next read: a ring between that read and the wait leaves the event set
        event = self.waiters.register(ring_key(item["id"]))
        try:
            while True:
                with self.db.read_session() as s:
                    item = self.render(self._get(s, user, submission_id), base)
                left = deadline - time.monotonic()
                if not item["executing"] or left <= 0:
                    return item
                event.wait(min(self.poll, left))
                event.clear()
        finally:
            self.waiters.unregister(ring_key(item["id"]), event)
            self._waits.release()

    def _wait_seconds(self, wait: str | None) -> float:
        if wait is None:
            return 0.0
        try:
            seconds = float(wait)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= self.MAX_WAIT:      # NaN fails both
            raise invalid(f"wait must be a number of seconds from 0 to {self.MAX_WAIT:g}")
        return seconds

    def page(self, user: str, base: str, ids: str | None, limit: str | None, page_token: str | None) -> dict:
        if ids:
            wanted = []
            for part in ids.split(","):
                part = part.strip()
                if not re.fullmatch(r"[0-9]{1,12}", part) or int(part) < 1:
                    raise ContainersError(400, 205105, "ids must be comma-separated positive integers")
                wanted.append(int(part))
            if len(wanted) > 20:
                raise ContainersError(400, 205106, "at most 20 ids at once")
            wanted = [i for i in wanted if i < 2**31]
            with self.db.read_session() as s:
                rows = s.scalars(select(Submission).where(Submission.owner == user, Submission.id.in_(wanted))
                                 .order_by(Submission.id))
                return {"items": [self.render(r, base) for r in rows],
                        "paging": {"previous_page_token": None, "next_page_token": None}}
        count = _int(limit, 20, 1, 20, "limit")
        try:
            start = paging.offset(page_token)
        except paging.BadToken as exc:
            raise invalid(str(exc)) from None
        with self.db.read_session() as s:
            rows = list(s.scalars(select(Submission).where(Submission.owner == user)
                                  .order_by(Submission.id.desc()).offset(start).limit(count + 1)))
            return {"items": [self.render(r, base) for r in rows[:count]],
                    "paging": paging.paging(start, count, len(rows) > count)}

    def stream(self, user: str, submission_id, name: str) -> tuple[bytes, str]:
        with self.db.read_session() as s:
            sub = self._get(s, user, submission_id)
            if name not in STREAMS:
                raise ContainersError(400, 1105, "invalid stream parameter")
            sizes = json.loads(sub.streams or "{}")
            sid = sub.id
        data = self.files.load(sid, name) if sizes.get(name) else None
        if not data:
            raise ContainersError(404, 1101, "stream not found")
        return data, CONTENT_TYPES.get(name, "text/plain; charset=utf-8")

    @staticmethod
    def render(sub: Submission, base: str) -> dict:
        executing = sub.status in EXECUTING
        sizes = json.loads(sub.streams or "{}")
        uri = f"{base}/api/v1/submissions/{sub.id}"
        return {
            "id": sub.id,
            "executing": executing,
            "date": paging.date(sub.created_at),
            "project": {"id": sub.project_id, "name": sub.project_name},
            "scenario": sub.scenario,
            "config": sub.config,
            "result": {"status": {"code": sub.status, "name": NAMES.get(sub.status, "unknown")},
                       "time": None if executing else sub.time,
                       "score": None if executing else (sub.score if sub.score is not None else 0)},
            "streams": {name: ({"size": sizes[name], "uri": f"{uri}/{name}"} if sizes.get(name) else None)
                        for name in STREAMS},
            "stages": None if executing or not sub.stages else json.loads(sub.stages),
            "uri": uri,
        }
