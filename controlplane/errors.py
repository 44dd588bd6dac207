"""Domain errors raised by services, and their one mapping to HTTP (status, X-Elastic-Error type).

The message template lives on the class; context comes in as keyword arguments. Resources never catch
these: the app's error handler renders them.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a service raises on purpose; `message` is safe to show to the client."""

    template = "the command failed"

    def __init__(self, template: str | None = None, **context):
        self.context = context
        self.message = (template or self.template).format(**context)
        super().__init__(self.message)


class Usage(DomainError):
    template = "invalid input"


class NotFound(DomainError):
    template = "{what} not found"

    def __init__(self, template: str | None = None, what: str = "object", **context):
        super().__init__(template, what=what, **context)


class Busy(DomainError):
    template = "{what} is busy"

    def __init__(self, template: str | None = None, what: str = "object", **context):
        super().__init__(template, what=what, **context)


class Billing(DomainError):
    template = "quota exceeded"


class Full(DomainError):
    template = "storage pool full"


class TooLarge(DomainError):
    template = "request body larger than {limit} bytes"


class Failed(DomainError):
    template = "the command failed"


class Unauthorized(DomainError):
    template = "authentication required"


class Forbidden(DomainError):
    template = "not allowed"


class TooMany(DomainError):
    template = "too many requests"


# The one table from domain errors to HTTP: status line and X-Elastic-Error type.
HTTP_MAP: dict[type[DomainError], tuple[int, str]] = {
    Usage: (400, "usage"),
    Unauthorized: (401, "auth"),
    Billing: (402, "billing"),
    Forbidden: (403, "auth"),
    NotFound: (404, "missing"),
    Busy: (409, "busy"),
    TooLarge: (413, "usage"),
    TooMany: (429, "busy"),
    Failed: (500, "failed"),
    Full: (507, "full"),
}


def http_status(exc: DomainError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in HTTP_MAP:
            return HTTP_MAP[cls]
    return 500, "failed"
