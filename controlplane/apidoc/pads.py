"""The pads API (CoderPad, with Codenvy's conventions): pads, questions, quota, organization, runs.

Credentials: `Authorization: Token token="<key>"` (or `Bearer <key>`), `?token=<key>`, the
`session-access-key` cookie from POST /api/auth/login, or HTTP Basic. Bodies: form-urlencoded (also
without a Content-Type), multipart or JSON; `pad[title]`-style keys equal plain ones. Errors:
`{"status":"ERROR","message","code"}`. Objects that are not visible answer 404.
"""

from __future__ import annotations

from .common import TEXT, json_body, operation, path_param

TAG = "pads"
STR_NULL = {"type": ["string", "null"]}
DATE = {"type": "string", "format": "date-time"}
DATE_NULL = {"type": ["string", "null"], "format": "date-time"}
BOOL = {"type": "boolean"}
INT = {"type": "integer"}
INT_LIST = {"type": "array", "items": INT}
SECURITY = [{"basic": []}, {"padsToken": []}, {"padsQueryToken": []}, {"padsCookie": []}]

SECURITY_SCHEMES = {
    "padsToken": {"type": "apiKey", "in": "header", "name": "Authorization",
                  "description": 'Token token="<32-hex API key or session token>" (or Bearer <token>)'},
    "padsQueryToken": {"type": "apiKey", "in": "query", "name": "token"},
    "padsCookie": {"type": "apiKey", "in": "cookie", "name": "session-access-key"},
}


def _obj(props: dict, required: list | None = None) -> dict:
    return {"type": "object", "required": required if required is not None else list(props),
            "properties": {"status": {"const": "OK"}, **props}}


EVENT = {"type": "object", "required": ["message", "kind", "metadata", "user_name", "user_email", "created_at"],
         "properties": {"message": TEXT, "kind": {"enum": ["joined", "left", "ran", "enabled", "disabled", "ended"]},
                        "metadata": STR_NULL, "user_name": TEXT, "user_email": STR_NULL, "created_at": DATE}}
PAD_PROPS = {
    "id": TEXT, "title": TEXT, "language": TEXT, "owner_email": TEXT, "participants": {"type": "array", "items": TEXT},
    "contents": STR_NULL, "notes": TEXT, "events": {"type": "array", "items": {"$ref": "#/components/schemas/PadEvent"}},
    "events_truncated": BOOL, "events_url": TEXT, "private": BOOL, "execution_enabled": BOOL,
    "created_at": DATE, "updated_at": DATE, "ended_at": DATE_NULL, "url": TEXT, "playback": TEXT,
    "history": STR_NULL, "drawing": {"type": "null"}, "pad_environment_ids": INT_LIST,
    "state": {"enum": ["active", "ended"]}, "type": TEXT, "question_ids": INT_LIST,
    "active_environment_id": {"type": ["integer", "null"]}, "team": {"type": ["object", "null"]},
}
QUESTION_PROPS = {
    "id": INT, "title": TEXT, "author_name": TEXT, "owner_email": TEXT, "language": TEXT, "description": TEXT,
    "contents": TEXT, "shared": BOOL, "used": INT, "created_at": DATE, "updated_at": DATE,
    "solution": STR_NULL, "candidate_description": STR_NULL,
}
ENV_PROPS = {
    "id": INT, "pad_id": INT, "pad_public_id": TEXT, "question_id": {"type": ["integer", "null"]},
    "example_question_id": {"type": "null"}, "language": TEXT,
    "file_contents": {"type": "array", "items": {"type": "object", "properties": {"path": TEXT, "contents": TEXT}}},
    "created_at": DATE, "updated_at": DATE,
}

SCHEMAS = {
    "PadError": {"type": "object", "required": ["status", "message", "code"],
                 "properties": {"status": {"const": "ERROR"}, "message": TEXT, "code": TEXT}},
    "PadEvent": EVENT,
    "Pad": _obj(PAD_PROPS),
    "PadQuestion": _obj(QUESTION_PROPS),
    "PadEnvironment": _obj(ENV_PROPS),
    "PadFields": {"type": "object", "description": "every field optional; PUT also takes ended and deleted",
                  "properties": {"title": TEXT, "language": TEXT, "contents": TEXT, "question_id": {"type": ["integer", "string"]},
                                 "notes": TEXT, "private": {"type": ["boolean", "string"]},
                                 "execution_enabled": {"type": ["boolean", "string"]}, "user_email": TEXT,
                                 "ended": {"type": ["boolean", "string"]}, "deleted": {"type": ["boolean", "string"]}}},
    "QuestionFields": {"type": "object", "properties": {
        "title": TEXT, "language": TEXT, "description": TEXT, "contents": TEXT, "solution": TEXT,
        "candidate_description": TEXT, "shared": {"type": ["boolean", "string"]}}},
    "RunFields": {"type": "object", "properties": {"contents": TEXT, "stdin": TEXT,
                                                   "timeout": {"type": ["integer", "string"]}, "language": TEXT}},
    "LoginFields": {"type": "object", "required": ["username", "password"],
                    "properties": {"username": TEXT, "password": TEXT}},
}

ERR = {"application/json": {"schema": {"$ref": "#/components/schemas/PadError"}}}
TEXTS = {400: "Bad Request", 401: "Invalid API key", 403: "Forbidden", 404: "Resource not found",
         405: "Method not allowed", 409: "The pad's state does not allow it", 413: "Body too large",
         429: "Over quota or rate limited", 503: "Unavailable (language image not built, run unfinished)"}


def _errors(*codes: int) -> dict:
    return {str(c): {"description": TEXTS[c], "content": ERR} for c in sorted({401, 405, *codes})}


def _ok(schema: dict, location: bool = False) -> dict:
    out: dict = {"description": "OK", "content": json_body(schema)}
    if location:
        out["headers"] = {"Location": {"schema": TEXT}}
    return out


def _list(key: str, item: str) -> dict:
    return {"type": "object", "required": ["status", key, "total"],
            "properties": {"status": {"const": "OK"}, key: {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
                           "total": INT, "next_page": TEXT, "prev_page": TEXT}}


LIST_PARAMS = [{"name": "sort", "in": "query", "required": False,
                "schema": {"enum": ["created_at", "created_at,asc", "created_at,desc", "updated_at",
                                    "updated_at,asc", "updated_at,desc"]}},
               {"name": "page", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}}]
FORMS = ("application/x-www-form-urlencoded", "multipart/form-data", "application/json")


def _body(schema: str, required: bool = False) -> dict:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"required": required, "content": {m: {"schema": ref} for m in FORMS}}


def _op(op_id: str, summary: str, responses: dict, **kw) -> dict:
    return operation(op_id, TAG, summary, responses, security=SECURITY, **kw)


PAD = {"$ref": "#/components/schemas/Pad"}
PAD_OR_OK = {"anyOf": [PAD, {"type": "object", "required": ["status"], "properties": {"status": {"const": "OK"}}}]}
QUESTION = {"$ref": "#/components/schemas/PadQuestion"}
PAD_ID = path_param("pad_id", {"type": "string"}, "a pad's 8-character id (any case)")
QUESTION_ID = path_param("question_id", {"type": "string"}, "a question's id")


def paths() -> dict:
    ok_only = _obj({}, required=["status"])
    run = _obj({"pad_public_id": TEXT, "language": TEXT, "sandbox_id": TEXT,
                "exit_status": {"type": ["integer", "null"]}, "output": TEXT, "truncated": BOOL, "timed_out": BOOL,
                "killed": BOOL, "time": {"type": "number"}, "queued": {"type": "number"}, "event": EVENT})
    change = {"type": "array", "items": {"type": "object", "properties": {
        "retain": INT, "delete": INT, "insert": TEXT}}}
    history = _obj({"pad_public_id": TEXT, "text": TEXT, "last_seq": INT, "more": BOOL,
                    "updates": {"type": "array", "items": {"type": "object", "required": ["seq", "time", "author", "change"],
                                                           "properties": {"seq": INT, "time": DATE, "author": TEXT,
                                                                          "change": change}}},
                    "events": {"type": "array", "items": EVENT}})
    return {
        "/api/pads": {
            "get": _op("pads_list", "Your pads, 50 a page", {"200": _ok(_list("pads", "Pad")), **_errors(400)},
                       params=LIST_PARAMS),
            "post": _op("pads_create", "Create a pad", {"200": _ok(PAD, location=True), **_errors(400, 403, 404, 413, 429)},
                        body=_body("PadFields"))},
        "/api/pads/{pad_id}": {
            "get": _op("pad_show", "One pad", {"200": _ok(PAD), **_errors(404)}, params=[PAD_ID]),
            "put": _op("pad_update", "Change, end or delete a pad (deleted: only the status)",
                       {"200": _ok(PAD_OR_OK), **_errors(400, 403, 404, 409, 413)},
                       params=[PAD_ID], body=_body("PadFields")),
            "patch": _op("pad_patch", "Same as PUT", {"200": _ok(PAD_OR_OK), **_errors(400, 403, 404, 409, 413)},
                         params=[PAD_ID], body=_body("PadFields"))},
        "/api/pads/{pad_id}/events": {
            "get": _op("pad_events", "A pad's events, oldest first by default",
                       {"200": _ok(_list("events", "PadEvent")), **_errors(400, 404)}, params=[PAD_ID, *LIST_PARAMS])},
        "/api/pads/{pad_id}/history": {
            "get": _op("pad_history", "The pad's edit history (each stored update's time, author and text "
                       "change) and its events, oldest first", {"200": _ok(history), **_errors(400, 404)},
                       params=[PAD_ID, {"name": "after", "in": "query", "required": False,
                                        "schema": {"type": "integer", "minimum": 0},
                                        "description": "only updates with a larger seq (the text is always the whole text after the last one listed)"}])},
        "/api/pads/{pad_id}/run": {
            "post": _op("pad_run", "Run the pad's code (or `contents`) with `stdin` in a sandbox",
                        {"200": _ok(run), **_errors(400, 403, 404, 409, 413, 429, 503)},
                        params=[PAD_ID], body=_body("RunFields"))},
        "/api/pad_environments/{env_id}": {
            "get": _op("pad_environment_show", "One pad environment",
                       {"200": _ok({"$ref": "#/components/schemas/PadEnvironment"}), **_errors(404)},
                       params=[path_param("env_id", {"type": "string"}, "a pad environment's id")])},
        "/api/questions": {
            "get": _op("questions_list", "Your questions, 50 a page",
                       {"200": _ok(_list("questions", "PadQuestion")), **_errors(400)}, params=LIST_PARAMS),
            "post": _op("questions_create", "Create a question",
                        {"200": _ok(QUESTION, location=True), **_errors(400, 413)}, body=_body("QuestionFields", True))},
        "/api/questions/{question_id}": {
            "get": _op("question_show", "One question", {"200": _ok(QUESTION), **_errors(404)}, params=[QUESTION_ID]),
            "put": _op("question_update", "Change a question", {"200": _ok(QUESTION), **_errors(400, 403, 404, 413)},
                       params=[QUESTION_ID], body=_body("QuestionFields")),
            "patch": _op("question_patch", "Same as PUT", {"200": _ok(QUESTION), **_errors(400, 403, 404, 413)},
                         params=[QUESTION_ID], body=_body("QuestionFields")),
            "delete": _op("question_delete", "Delete a question (pads keep their contents)",
                          {"200": _ok(ok_only), **_errors(403, 404)}, params=[QUESTION_ID])},
        "/api/quota": {"get": _op("quota", "Your organization's (or your) monthly pad quota",
                                  {"200": _ok({"type": "object"}), **_errors()})},
        "/api/organization": {"get": _op("organization", "Your organization",
                                         {"200": _ok({"type": "object"}), **_errors(404)})},
        "/api/organization/stats": {"get": _op(
            "organization_stats", "Pads created per member in a window (organization owners)",
            {"200": _ok({"type": "object"}), **_errors(400, 403, 404)},
            params=[{"name": n, "in": "query", "required": False, "schema": DATE} for n in ("start_time", "end_time")])},
        "/api/organization/pads": {"get": _op("organization_pads", "All pads of your organization",
                                              {"200": _ok(_list("pads", "Pad")), **_errors(400, 403, 404)},
                                              params=LIST_PARAMS)},
        "/api/organization/questions": {"get": _op("organization_questions", "Your organization's questions you see",
                                                   {"200": _ok(_list("questions", "PadQuestion")), **_errors(400, 404)},
                                                   params=LIST_PARAMS)},
        "/api/languages": {"get": _op("languages", "Languages, and which of them run here",
                                      {"200": _ok({"type": "object"}), **_errors()})},
        "/api/auth/login": {"post": operation(
            "auth_login", TAG, "A session token (and cookie) for a username and secret",
            {"200": _ok(_obj({"value": TEXT, "token": TEXT, "expires_at": DATE})),
             **{str(c): {"description": TEXTS[c], "content": ERR} for c in (400, 401, 405, 413, 429)}},
            body=_body("LoginFields", True))},
        "/api/auth/logout": {"post": operation(
            "auth_logout", TAG, "Revoke a session token (from the query, header or cookie)",
            {"204": {"description": "Done, no body"}, **{str(c): {"description": TEXTS[c], "content": ERR}
                                                       for c in (400, 405)}})},
    }
