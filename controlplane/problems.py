"""What went wrong, in one neutral form that every face renders its own way.

Every error that reaches the app's handlers (domain errors from services, storage errors, hypervisor
errors, Falcon's own HTTP errors, anything unexpected) becomes a `Problem`: a status, a kind in the
cloud API's vocabulary (`usage`, `auth`, `missing`, `method`, `busy`, `billing`, `full`, `failed`,
`system`), a one-line message that is safe to show, and the original exception so that a face may map
error classes to its own codes. Messages of unexpected errors never reach the client.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import falcon

from .errors import DomainError, http_status
from storage.errors import BadData, ChunkTooLarge, OutOfBounds, PoolFull, StorageError

log = logging.getLogger("openhosting.api")

# Storage errors, mapped once to (status, kind).
STORAGE_HTTP = {
    OutOfBounds: (400, "usage"),
    BadData: (400, "usage"),
    ChunkTooLarge: (413, "usage"),
    PoolFull: (507, "full"),
}

# Falcon's own errors (routing, method, media) in the same vocabulary.
FALCON_KINDS = {400: "usage", 401: "auth", 404: "missing", 405: "method", 411: "usage", 413: "usage",
                415: "usage"}


@dataclass
class Problem:
    status: int
    kind: str
    message: str
    error: BaseException | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # one line, printable (a message may quote the request's path)
        self.message = " ".join("".join(c if c.isprintable() else " " for c in self.message).split())


def from_domain(req: falcon.Request, exc: DomainError) -> Problem:
    status, kind = http_status(exc)
    return Problem(status, kind, exc.message, exc)


def from_storage(req: falcon.Request, exc: StorageError) -> Problem:
    status, kind = next((v for cls, v in STORAGE_HTTP.items() if isinstance(exc, cls)), (500, "failed"))
    return Problem(status, kind, exc.message, exc)


def from_falcon(req: falcon.Request, exc: falcon.HTTPError) -> Problem:
    status = int(exc.status_code)
    kind = FALCON_KINDS.get(status, "failed" if status >= 500 else "usage")
    headers = {}
    if status == 404:
        message = f"no such command or object: {req.path}"
    elif status == 405:
        message = f"{req.method} is not allowed on {req.path}"
        headers["Allow"] = (exc.headers or {}).get("Allow", "")
    else:
        message = exc.title + (f": {exc.description}" if exc.description else "")
    return Problem(status, kind, message, exc, headers)


def from_hypervisor(req: falcon.Request, exc) -> Problem:
    from hypervisor.errors import (ConnectionFailed, ConnectionLost, DomainNotFound, InvalidConfig,
                                   InvalidState, Unsupported)

    log.warning("hypervisor error on %s %s: %s %s", req.method, req.path, type(exc).__name__, exc.context)
    if isinstance(exc, (InvalidConfig, Unsupported)):
        # Our own checks word these for users; what libvirt itself said may name host paths.
        own = "libvirt_code" not in exc.context
        return Problem(400, "usage", exc.message if own else "the server configuration was refused", exc)
    if isinstance(exc, (ConnectionLost, ConnectionFailed)):
        return Problem(500, "system", "the hypervisor is not reachable right now; try again", exc)
    if isinstance(exc, InvalidState):
        return Problem(409, "busy", "the server is in a state that does not allow this now", exc)
    if isinstance(exc, DomainNotFound):
        return Problem(409, "busy", "the server's virtual machine is not running", exc)
    return Problem(500, "failed", f"the hypervisor refused: {type(exc).__name__}", exc)


def from_unexpected(req: falcon.Request, exc: BaseException) -> Problem:
    if isinstance(exc, falcon.HTTPError):
        return from_falcon(req, exc)
    log.exception("unhandled error on %s %s", req.method, req.path)
    return Problem(500, "system", "internal error; the operator's log has the details", exc)


def code_for(exc: BaseException | None, table: dict[type, object], default):
    """A face's own code for an error: the entry of the nearest class in `exc`'s MRO, else `default`."""
    for cls in type(exc).__mro__ if exc is not None else ():
        if cls in table:
            return table[cls]
    return default
