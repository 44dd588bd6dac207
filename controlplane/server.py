"""gunicorn, embedded: `openhosting-admin serve` runs the Falcon app with threaded workers."""

from __future__ import annotations

import re

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

_SECRET_PARAMS = re.compile(r"((?:^|[?&])(?:access_token|token|ticket)=)[^&\s]*", re.IGNORECASE)


def redact(text: str) -> str:
    """A request line or query string with the values of token parameters replaced by `***`."""
    return _SECRET_PARAMS.sub(r"\1***", text)


class RedactingLogger(Logger):
    """gunicorn's access log prints the query string: tokens passed there are masked first."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for key in ("r", "q", "U"):
            if isinstance(atoms.get(key), str):
                atoms[key] = redact(atoms[key])
        return atoms


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from .app import get_app

        return get_app()


def serve(bind: str, workers: int = 2, threads: int = 8) -> None:
    _Gunicorn({
        "bind": bind,
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        # Large drive reads stream for a long time; the body limit, not the timeout, bounds requests.
        "timeout": 300,
        "graceful_timeout": 10,
        "accesslog": "-",
        "access_log_format": '%(h)s "%(r)s" %(s)s %(b)s %(L)ss',
        "errorlog": "-",
        "logger_class": RedactingLogger,
    }).run()
