"""Errors of the Containers (workspaces) face: an HTTP status and the contract's `error_code`.

Services of this face raise these with the contract's wording; the face's error renderer
(controlplane/containers_face.py) turns them, and the project's generic DomainErrors, into
`{"error_code": int, "message": "one line"}`.
"""

from __future__ import annotations

from ..errors import DomainError


class ContainersError(DomainError):
    """`status` and `code` as the contract lists them; `message` one line, safe to show."""

    def __init__(self, status: int, code: int, message: str, **context):
        self.status = status
        self.code = code
        super().__init__(message.replace("{", "{{").replace("}", "}}"), **context)


def invalid(message: str = "invalid request data") -> ContainersError:
    return ContainersError(400, 10, message)


def workspace_not_found() -> ContainersError:
    return ContainersError(404, 1001, "workspace not found")


def project_not_found() -> ContainersError:
    return ContainersError(404, 200201, "project not found")


def no_slots(message: str = "not enough free slots") -> ContainersError:
    return ContainersError(409, 200611, message)
