"""The sandboxes service (OpenDevelop): validate a run, queue it for the agent, report it.

A sandbox is a row plus its uploaded files; the agent's SandboxRunner takes the job, runs it in a
warm VM and writes the result back. The row is the only truth: `wait` re-reads it when the agent's
doorbell rings (`controlplane/doorbell.py`) and at least every `poll` seconds without one.
"""

from __future__ import annotations

import json
import secrets
import time

from sqlalchemy import func, select, update

from ..config import Settings
from ..db import Database
from ..doorbell import Waiters
from ..errors import NotFound, TooMany, Usage
from ..jobs import JobQueue
from ..models import Image, Sandbox, utcnow
from storage.errors import BadData
from storage.uploads import UploadStore, check_name

MAX_CMD = 64 * 1024
TRUNCATED = "\n[openhosting: output truncated at {cap} bytes]\n"


def parse_cmd(text: str | None) -> list[str]:
    """`cmd`: a JSON list of shell commands (run in order, joined with &&) or one plain string."""
    if text is None or not text.strip():
        raise Usage("cmd is required: a JSON list of shell commands or a command string")
    if len(text) > MAX_CMD:
        raise Usage("cmd is longer than {max} bytes", max=MAX_CMD)
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            commands = json.loads(stripped)
        except (ValueError, RecursionError):
            raise Usage("cmd looks like a JSON list but is not valid JSON") from None
        if not commands or not all(isinstance(c, str) and c.strip() for c in commands):
            raise Usage("cmd must be a non-empty JSON list of non-empty strings")
        return commands
    return [text]


def shell_line(commands: list[str]) -> str:
    return " && ".join(f"{{ {c}\n}}" if "\n" in c else c for c in commands)


class Sandboxes:
    """`notify()` nudges the agent after a sandbox is queued; `finished(id)` is called (in the agent)
    after a sandbox's result is committed; `waiters` wakes `wait` in this process when that happens.
    All three are best effort and must not raise; `wait` polls every `poll` seconds regardless."""

    def __init__(self, db: Database, settings: Settings, uploads: UploadStore, notify=None, *,
                 finished=None, waiters: Waiters | None = None, poll: float = 0.25):
        self.db = db
        self.settings = settings
        self.uploads = uploads
        self.notify = notify or (lambda: None)
        self.finished = finished or (lambda sandbox_id: None)
        self.waiters = waiters or Waiters(None)
        self.poll = poll

    def images(self) -> list[str]:
        with self.db.session() as s:
            return list(s.scalars(select(Image.slug).order_by(Image.slug)))

    def _timeout(self, text: str | None) -> int:
        if text is None or text == "":
            return self.settings.sandbox_timeout
        try:
            value = int(str(text).strip())
        except ValueError:
            raise Usage("timeout must be a whole number of seconds") from None
        if not 1 <= value <= self.settings.sandbox_max_timeout:
            raise Usage("timeout must be between 1 and {max} seconds", max=self.settings.sandbox_max_timeout)
        return value

    def check_files(self, files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        if len(files) > self.settings.sandbox_max_files:
            raise Usage("at most {n} files per sandbox", n=self.settings.sandbox_max_files)
        checked, seen = [], set()
        for name, data in files:
            try:
                base = check_name(name)
            except BadData as exc:
                raise Usage(exc.message) from None
            if base in seen:
                raise Usage("file {name} given twice", name=base)
            if len(data) > self.settings.sandbox_max_file:
                raise Usage("file {name} is larger than {max} bytes", name=base, max=self.settings.sandbox_max_file)
            seen.add(base)
            checked.append((base, data))
        return checked

    def create(self, user: str, image: str | None, cmd: str | None, timeout: str | None,
               files: list[tuple[str, bytes]]) -> str:
        commands = parse_cmd(cmd)
        seconds = self._timeout(timeout)
        files = self.check_files(files)
        sandbox_id = secrets.token_hex(8)
        with self.db.session() as s:
            if not image or s.get(Image, image) is None:
                raise Usage("unknown image {image!r}; GET /api/images lists them", image=(image or "")[:64])
            running = s.scalar(select(func.count()).select_from(Sandbox)
                               .where(Sandbox.owner == user, Sandbox.status == "running"))
            if running >= self.settings.sandbox_user_limit:
                raise TooMany("you have {n} sandboxes running, the limit is {limit}", n=running,
                              limit=self.settings.sandbox_user_limit)
            queued = s.scalar(select(func.count()).select_from(Sandbox).where(Sandbox.status == "running"))
            if queued >= self.settings.sandbox_max_queue:
                raise TooMany("{n} sandboxes are waiting already; try again shortly", n=queued)
            size = self.uploads.save(sandbox_id, files)
            s.add(Sandbox(id=sandbox_id, owner=user, image=image, cmd=json.dumps(commands), timeout=seconds,
                          status="running", files_bytes=size))
            JobQueue.enqueue(s, "sandbox", sandbox_id)
        self.notify()
        return sandbox_id

    def _get(self, s, user: str, sandbox_id: str) -> Sandbox:
        box = s.get(Sandbox, sandbox_id) if len(sandbox_id) <= 32 else None
        if box is None or box.owner != user:
            raise NotFound(what="sandbox")
        return box

    @staticmethod
    def render(box: Sandbox) -> dict:
        done = box.status == "terminated"
        return {
            "id": box.id, "status": box.status, "image": box.image, "cmd": box.cmd,
            "return_code": box.return_code if done else None, "logs": box.logs if done else None,
            "timeout": box.timeout, "timed_out": box.timed_out, "killed": box.killed,
            "created_at": _iso(box.created_at), "finished_at": _iso(box.finished_at) if done else None,
        }

    def info(self, user: str, sandbox_id: str) -> dict:
        with self.db.read_session() as s:
            return self.render(self._get(s, user, sandbox_id))

    def list(self, user: str) -> list[dict]:
        with self.db.read_session() as s:
            boxes = s.scalars(select(Sandbox).where(Sandbox.owner == user)
                              .order_by(Sandbox.created_at.desc()).limit(1000))
            return [self.render(b) for b in boxes]

    def wait(self, user: str, sandbox_id: str, deadline: float) -> dict:
        """Until the sandbox terminates or `deadline` (monotonic) passes; return it either way.

        Re-reads the row when the agent's ring arrives, and every `poll` seconds without one (a lost
        ring, an agent on another host)."""
        # Registered before the first read: a ring that comes between that read and the wait below
        # leaves the event set instead of being lost.
        event = self.waiters.register(sandbox_id)
        try:
            while True:
                info = self.info(user, sandbox_id)
                left = deadline - time.monotonic()
                if info["status"] == "terminated" or left <= 0:
                    return info
                event.wait(min(self.poll, left))
                event.clear()
        finally:
            self.waiters.unregister(sandbox_id, event)

    def delete(self, user: str, sandbox_id: str) -> None:
        """Kill a running sandbox (it terminates with `killed`), or forget a terminated one."""
        with self.db.session() as s:
            box = self._get(s, user, sandbox_id)
            if box.status == "running":
                box.killed = True
                return
            s.delete(box)
        self.uploads.remove(sandbox_id)

    # ---- called by the agent's runner --------------------------------------------------------

    def finish(self, sandbox_id: str, *, return_code: int | None, output: bytes, timed_out: bool,
               truncated: bool, killed: bool) -> None:
        logs = output.decode("utf-8", errors="replace")
        if truncated:
            logs += TRUNCATED.format(cap=self.settings.sandbox_output_cap)
        with self.db.session() as s:
            s.execute(update(Sandbox).where(Sandbox.id == sandbox_id).values(
                status="terminated", return_code=return_code, logs=logs, timed_out=timed_out,
                truncated=truncated, killed=killed or Sandbox.killed, finished_at=utcnow()))
        self.finished(sandbox_id)  # committed: a waiter woken now reads the result
        self.uploads.remove(sandbox_id)


def _iso(when) -> str | None:
    if when is None:
        return None
    text = when.isoformat()
    return text if when.tzinfo else text + "+00:00"
