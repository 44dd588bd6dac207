"""Errors of the pads face's services beyond the shared family (controlplane/errors.py).

The pads face's renderer (controlplane/padface.py) maps these to its own status and `code`."""

from __future__ import annotations

from ..errors import Busy, DomainError, TooMany, Unauthorized


class OverQuota(TooMany):
    template = "Over quota"


class RateLimited(TooMany):
    """Throttled (runs, login failures); `retry_after` seconds go to `Retry-After`."""

    template = "too many requests; retry later"

    def __init__(self, template: str | None = None, retry_after: int = 1, **context):
        super().__init__(template, retry_after=retry_after, **context)
        self.retry_after = retry_after


class Conflict(Busy):
    template = "{what}"

    def __init__(self, template: str | None = None, what: str = "conflict", **context):
        super().__init__(template, what=what, **context)


class Unavailable(DomainError):
    """503: a dependency is missing or slow (a language image not built, a run without a result)."""

    template = "service unavailable"


class LoginFailed(Unauthorized):
    template = "Authentication failed. Please check username and password."
