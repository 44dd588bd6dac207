"""The sandboxes API (OpenDevelop): run commands with files in a throw-away VM."""

from __future__ import annotations

from .common import COMMON_ERRORS, ERROR, TEXT, errors, json_body, operation, path_param, response

TAG = "sandboxes"

SCHEMAS = {
    "Sandbox": {
        "type": "object",
        "required": ["id", "status", "image", "cmd", "return_code", "logs", "timeout", "timed_out", "killed",
                     "created_at", "finished_at"],
        "properties": {
            "id": TEXT, "status": {"enum": ["running", "terminated"]}, "image": TEXT,
            "cmd": {"type": "string", "description": "the commands as a JSON list, as text"},
            "return_code": {"type": ["integer", "null"]}, "logs": {"type": ["string", "null"]},
            "timeout": {"type": "integer"}, "timed_out": {"type": "boolean"}, "killed": {"type": "boolean"},
            "created_at": {"type": ["string", "null"], "format": "date-time"},
            "finished_at": {"type": ["string", "null"], "format": "date-time"},
        },
        "additionalProperties": False,
    },
    "SandboxFields": {
        "type": "object",
        "examples": [{"image": "base", "cmd": ["python3 hello.py"], "timeout": 10}],
        "required": ["image", "cmd"],
        "properties": {
            "image": {"type": "string", "description": "one of GET /api/images"},
            "cmd": {"description": "a JSON list of shell commands (run in order, stopping at the first that "
                                   "fails), as a list or as its text, or one command string",
                    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "timeout": {"type": ["integer", "string"], "description": "seconds"},
        },
        "additionalProperties": False,
    },
}

MULTIPART = {
    "type": "object",
    "required": ["image", "cmd"],
    "properties": {
        "image": TEXT, "cmd": TEXT, "timeout": TEXT,
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "any number of file parts (any field name); each lands in the working "
                                 "directory under its file name"},
    },
}

_ERROR_CONTENT = json_body(ERROR)
SANDBOX_ID = path_param("sandbox_id", {"type": "string", "maxLength": 64}, "a sandbox's id")


def paths() -> dict:
    sandbox = {"$ref": "#/components/schemas/Sandbox"}
    created = response(201, json_body({"type": "string", "description": "the new sandbox's id"}),
                      headers={"Location": {"schema": TEXT, "description": "/api/sandboxes/<id>"}})
    return {
        "/api/images": {"get": operation("images_list", TAG, "The images sandboxes can run",
                                         {"200": response(200, json_body({"type": "array", "items": TEXT})),
                                          **errors((401, 405), _ERROR_CONTENT)})},
        "/api/sandboxes": {
            "get": operation("sandboxes_list", TAG, "Your sandboxes, newest first (at most 1000)",
                             {"200": response(200, json_body({
                                 "type": "object", "required": ["sandboxes"], "additionalProperties": False,
                                 "properties": {"sandboxes": {"type": "array", "items": sandbox}}})),
                              **errors((401, 405), _ERROR_CONTENT)}),
            "post": operation(
                "sandboxes_create", TAG, "Run commands with files in a new sandbox",
                {"201": created, "200": response(200, json_body(sandbox)),
                 **errors(COMMON_ERRORS + (429,), _ERROR_CONTENT)},
                params=[{"name": "wait", "in": "query", "required": False, "schema": {"type": "boolean"},
                         "description": "answer 200 with the sandbox once it terminated (or its timeout "
                                        "and a minute passed) instead of 201 with its id"}],
                body={"required": True, "content": {
                    "multipart/form-data": {"schema": MULTIPART},
                    "application/x-www-form-urlencoded": {"schema": {**MULTIPART, "properties": {
                        k: v for k, v in MULTIPART["properties"].items() if k != "files"}}},
                    **json_body({"$ref": "#/components/schemas/SandboxFields"}),
                }}),
        },
        "/api/sandboxes/{sandbox_id}": {
            "get": operation("sandbox_info", TAG, "One sandbox", {"200": response(200, json_body(sandbox)),
                                                                 **errors((401, 404, 405), _ERROR_CONTENT)},
                             params=[SANDBOX_ID]),
            "delete": operation("sandbox_delete", TAG, "Kill a running sandbox, or forget a terminated one",
                                {"204": response(204), **errors((401, 404, 405), _ERROR_CONTENT)},
                                params=[SANDBOX_ID]),
        },
    }
