"""`openhosting-admin console-proxy`: the proxy's ASGI app under gunicorn's own asgi worker.

One worker process by default: sessions are long-lived and mostly idle (an asyncio task pair each),
so one event loop holds hundreds; more workers only spread them. Restarting the proxy drops the open
sessions (the pages say so) and needs nothing else restarted: tickets and targets live in the database
and libvirt. The access log uses the API's redacting logger (no ticket ever travels in a URL anyway).
"""

from __future__ import annotations

from gunicorn.app.base import BaseApplication

from ..server import RedactingLogger


class _ProxyApp(BaseApplication):
    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from .app import build_app

        return build_app()


def serve(bind: str, workers: int = 1) -> None:
    _ProxyApp({
        "bind": bind,
        "workers": workers,
        "worker_class": "asgi",
        "timeout": 60,
        "graceful_timeout": 5,
        "accesslog": "-",
        "access_log_format": '%(h)s "%(r)s" %(s)s %(b)s %(L)ss',
        "errorlog": "-",
        "loglevel": "info",
        "logger_class": RedactingLogger,
        # gunicornc's control socket has one default path per user: the API's gunicorn may hold it
        "control_socket_disable": True,
    }).run()
