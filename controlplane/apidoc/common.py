"""Building blocks of the OpenAPI document: schemas and operations shared by the faces."""

from __future__ import annotations

UUID = {"type": "string", "format": "uuid"}
TEXT = {"type": "string"}
INT = {"type": "integer"}
SCALAR = {"type": ["string", "integer"]}
ERROR = {"$ref": "#/components/schemas/Error"}

STATUS_TEXT = {
    200: "OK", 201: "Created", 204: "Done, no body", 400: "Invalid input (usage)",
    401: "Authentication missing or wrong (auth)", 402: "Quota does not cover it (billing)",
    403: "Not allowed for this user (auth)", 404: "No such object for this user, or no such command (missing)",
    405: "Method not allowed on this path (method)", 409: "Busy: the object's state does not allow it (busy)",
    413: "Request body too large (usage)", 429: "Too many requests (busy)",
    507: "Drive or storage pool full (full)",
}

COMMON_ERRORS = (400, 401, 404, 405, 413)


def json_body(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def response(status: int, content: dict | None = None, headers: dict | None = None) -> dict:
    out: dict = {"description": STATUS_TEXT[status]}
    if content:
        out["content"] = content
    if headers:
        out["headers"] = headers
    return out


def errors(codes, content: dict) -> dict:
    return {str(code): response(code, content) for code in sorted(set(codes))}


def path_param(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def operation(op_id: str, tag: str, summary: str, responses: dict, *, params=(), body: dict | None = None,
              security: list | None = None) -> dict:
    op: dict = {"operationId": op_id, "tags": [tag], "summary": summary, "responses": responses}
    if params:
        op["parameters"] = list(params)
    if body is not None:
        op["requestBody"] = body
    if security is not None:
        op["security"] = security
    return op


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "the error's kind: usage, auth, billing, missing, method, "
                                                   "busy, failed, system, full"},
        "message": {"type": "string", "description": "one line for humans"},
    },
    "additionalProperties": False,
}
