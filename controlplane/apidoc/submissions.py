"""Submissions (Sphere Engine Containers v1.1, `/api/v1`): a project's scenario on a source, in a throw-away VM."""

from __future__ import annotations

from .common import INT, TEXT, json_body, path_param
from .workspaces import BOOL, DATE, PAGING, STREAM, _op, _q
from controlplane.services.submissions import NAMES, STREAMS

TAG = "submissions"
NUMBER_OR_NULL = {"type": ["number", "null"]}
STAGE = {
    "type": "object", "additionalProperties": False,
    "required": ["time", "skipped", "exit_code", "signal", "status_changed_to"],
    "properties": {"time": {"type": "number"}, "skipped": BOOL, "exit_code": {"type": ["integer", "null"]},
                   "signal": {"type": ["integer", "null"]},
                   "status_changed_to": {"type": ["object", "null"], "required": ["code", "name", "desc"],
                                         "properties": {"code": INT, "name": TEXT,
                                                        "desc": {"type": ["string", "null"]}}}},
}
STAGE_NAMES = ("init", "build", "run", "test", "post")

SCHEMAS = {
    "Submission": {
        "type": "object", "additionalProperties": False,
        "required": ["id", "executing", "date", "project", "scenario", "config", "result", "streams", "stages", "uri"],
        "properties": {
            "id": INT, "executing": BOOL, "date": DATE, "scenario": TEXT, "config": TEXT, "uri": TEXT,
            "project": {"type": "object", "required": ["id", "name"], "properties": {"id": TEXT, "name": TEXT}},
            "result": {"type": "object", "required": ["status", "time", "score"], "properties": {
                "status": {"type": "object", "required": ["code", "name"],
                           "properties": {"code": {"enum": sorted(NAMES)}, "name": {"enum": [NAMES[c] for c in sorted(NAMES)]}}},
                "time": NUMBER_OR_NULL, "score": NUMBER_OR_NULL}},
            "streams": {"type": "object", "required": list(STREAMS), "additionalProperties": False,
                        "properties": {name: STREAM for name in STREAMS}},
            "stages": {"type": ["object", "null"], "required": list(STAGE_NAMES), "additionalProperties": False,
                       "properties": {name: STAGE for name in STAGE_NAMES}},
        },
    },
}

FIELDS = {
    "type": "object", "required": ["project_id", "source"],
    "properties": {"project_id": TEXT, "scenario": TEXT, "project_config": TEXT, "workspace_init": TEXT,
                   "source": {"type": "string", "format": "binary",
                              "description": "tar.gz with one top-level workspace/ directory, at most 16 MiB"}},
}
SID = path_param("submission_id", TEXT, "a submission's id (a positive integer; anything else is 404/1001)")


def paths() -> dict:
    item = {"$ref": "#/components/schemas/Submission"}
    raw = {"application/gzip": {"schema": {"type": "string", "format": "binary"}},
           "application/json": {"schema": {}}, "text/plain": {"schema": TEXT}}
    return {
        "/api/v1/submissions": {
            "get": _op("submissions_list", "Your submissions: by ids (ascending), or newest first by page", 200,
                       json_body({"type": "object", "required": ["items", "paging"],
                                  "properties": {"items": {"type": "array", "items": item}, "paging": PAGING}}),
                       (400,), params=[_q("ids", TEXT, "comma-separated ids, at most 20 (205105, 205106)"),
                                       _q("limit", INT, "1..20, default 20"),
                                       _q("page_token", TEXT, "Base64 of an offset, from a previous page")]),
            "post": _op("submission_create", "Queue a submission (status 0)", 201,
                        json_body({"type": "object", "required": ["message", "id"],
                                   "properties": {"message": TEXT, "id": INT}}),
                        (400, 404, 409, 413), body={"required": True, "content": {
                            "multipart/form-data": {"schema": FIELDS}}}),
        },
        "/api/v1/submissions/{submission_id}": {"get": _op(
            "submission_info", "One submission; with wait, answered as soon as it is final (a long poll)", 200,
            json_body(item), (400, 404),
            params=[SID, _q("wait", {"type": "number", "minimum": 0, "maximum": 60},
                            "seconds (0-60) to wait for the submission to be final before answering; "
                            "the answer is the same either way, `executing` tells which (400/10 otherwise)")])},
        "/api/v1/submissions/{submission_id}/{stream}": {"get": _op(
            "submission_stream", "One stream of a submission, raw", 200, raw, (400, 404),
            params=[SID, path_param("stream", {"enum": list(STREAMS)}, "stream name")])},
    }
