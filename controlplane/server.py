"""gunicorn, embedded: `openhosting-admin serve` runs the Falcon app with threaded workers."""

from __future__ import annotations

from gunicorn.app.base import BaseApplication


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
    }).run()
