"""Running a pad's code (pads-api.md E17): one sandbox run in the language's image, through the same
path as POST /api/sandboxes (queue, warm VM, result row), then a `ran` event on the pad.

The program lands under its plain file name (`main.py`, `Solution.java`), stdin as `stdin.txt` fed
with `< stdin.txt`. A language whose image is not built answers 503 naming the command that builds
it; a run without a result after its timeout and a minute answers 503 naming the sandbox to poll.
"""

from __future__ import annotations

import json
import time


from ..config import Settings
from ..db import Database
from ..errors import Forbidden, Usage
from ..models import Sandbox
from . import languages, pad_render
from .pad_accounts import Caller, aware
from .pad_errors import Conflict, Unavailable
from .pad_params import integer, text
from .pads import Pads
from .sandboxes import Sandboxes

GRACE = 60.0


class PadRuns:
    def __init__(self, db: Database, settings: Settings, pads: Pads, sandboxes: Sandboxes):
        self.db = db
        self.settings = settings
        self.pads = pads
        self.sandboxes = sandboxes

    def _prepare(self, caller: Caller, public_id: str, params: dict) -> tuple[languages.Language, str, str, int]:
        with self.db.read_session() as s:
            row = self.pads.load(s, caller, public_id)
            if row.ended_at is not None:
                raise Conflict("pad has ended")
            if not row.execution_enabled:
                raise Forbidden("code execution is disabled for this pad")
            if "language" in params and text(params["language"], "language").strip() != row.language:
                raise Usage("language must be the pad's language ({lang})", lang=row.language)
            lang = languages.get(row.language)
            from ..models import PadEnvironment

            env = s.get(PadEnvironment, row.active_environment_id)
            saved = env.contents if env else ""
            pad_language = row.language
        if pad_language == "plaintext":
            raise Usage("plaintext pads do not run")
        if not lang.runnable:
            raise Usage("language not runnable")
        contents = text(params["contents"], "contents") if "contents" in params else saved
        stdin = text(params.get("stdin"), "stdin")
        timeout = lang.timeout
        if params.get("timeout") not in (None, ""):
            timeout = integer(params["timeout"], "timeout")
            if not 1 <= timeout <= self.settings.sandbox_max_timeout:
                raise Usage("timeout must be between 1 and {max} seconds", max=self.settings.sandbox_max_timeout)
        if lang.image not in self.sandboxes.images():
            raise Unavailable("the {image} image for {lang} is not built; an operator runs: "
                              "openhosting-admin image build {image}", image=lang.image, lang=lang.id)
        return lang, contents, stdin, timeout

    def run(self, caller: Caller, public_id: str, params: dict, author: Caller | None = None) -> dict:
        """Run as `caller` (who must see the pad; the sandbox is theirs). `author`, when given, is who
        the `ran` event names: a pad room runs as the pad's owner on behalf of whoever pressed Run,
        a guest included."""
        lang, contents, stdin, timeout = self._prepare(caller, public_id, params)
        files = [(lang.file, contents.encode()), ("stdin.txt", stdin.encode())]
        sandbox_id = self.sandboxes.create(caller.uuid, lang.image, json.dumps([f"{lang.command} < stdin.txt"]),
                                           str(timeout), files)
        info = self.sandboxes.wait(caller.uuid, sandbox_id, time.monotonic() + timeout + GRACE)
        if info["status"] != "terminated":
            raise Unavailable("the run did not finish in time; poll /api/sandboxes/{id}", id=sandbox_id)
        with self.db.session() as s:
            box = s.get(Sandbox, sandbox_id)
            started, finished, created = aware(box.started_at), aware(box.finished_at), aware(box.created_at)
            truncated = box.truncated
            row = self.pads.load(s, caller, public_id)
            event = pad_render.event(self.pads.add_event(s, row, author or caller, "ran", lang.id))
        return {"pad_public_id": public_id.upper(), "language": lang.id, "sandbox_id": sandbox_id,
                "exit_status": info["return_code"], "output": info["logs"] or "", "truncated": truncated,
                "timed_out": info["timed_out"], "killed": info["killed"],
                "time": round((finished - started).total_seconds(), 3) if started and finished else 0.0,
                "queued": round((started - created).total_seconds(), 3) if started else 0.0, "event": event}
