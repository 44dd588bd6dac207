"""The Origin rule of the proxy's WebSockets: a browser page may open one only when it was served by
the console URL itself (or by one of the operator's extra origins).

Browsers send `Origin` on every WebSocket handshake and scripts cannot forge it, so this stops another
site's page from using a visitor's browser to reach a console. Non-browser clients (curl, the tests'
raw client) must send a matching Origin as well: a missing Origin is refused too.
"""

from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalize(url: str) -> str | None:
    """`scheme://host[:port]` in lower case, without a default port; None when `url` is no origin."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class Origins:
    """The allowed origins: the console URL's own, plus `extra` (OPENHOSTING_CONSOLE_ORIGINS)."""

    def __init__(self, console_url: str, extra: tuple[str, ...] = ()):
        allowed = {normalize(console_url)} | {normalize(o) for o in extra}
        allowed.discard(None)
        self.allowed = frozenset(allowed)

    def allows(self, origin: str | None) -> bool:
        return origin is not None and normalize(origin) in self.allowed
