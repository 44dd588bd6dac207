"""The workspaces API (Sphere Engine Containers v1.1, `/api/v1`): projects and long-lived workspace VMs."""

from __future__ import annotations

from .common import INT, TEXT, json_body, operation, path_param

TAG = "workspaces"
SECURITY = [{"bearer": []}, {"access_token": []}]
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "a workspaces token (token create)"},
    "access_token": {"type": "apiKey", "in": "query", "name": "access_token", "description": "a workspaces token"},
}
BOOL = {"type": "boolean"}
NULLTEXT = {"type": ["string", "null"]}
DATE = {"type": "string", "description": "YYYY-MM-DD HH:MM:SS +0000"}
STREAM = {"type": ["object", "null"], "required": ["size", "uri"], "additionalProperties": False,
          "properties": {"size": INT, "uri": TEXT}}
PAGING = {"type": "object", "required": ["previous_page_token", "next_page_token"], "additionalProperties": False,
          "properties": {"previous_page_token": NULLTEXT, "next_page_token": NULLTEXT}}
STATUS = {200: "OK", 201: "Created", 400: "Invalid request (error_code 10 and others)",
          401: "No valid token (error_code 1)", 404: "Not found (1001, 1008, 1101, 1108, 200201)",
          405: "Method not allowed", 409: "No free slots (200611) or project unavailable (200510)",
          413: "Too large (202511, 1111)", 500: "Failed (1003, 1103)"}

SCHEMAS = {
    "ContainersError": {"type": "object", "required": ["error_code", "message"], "additionalProperties": False,
                        "properties": {"error_code": INT, "message": TEXT}},
    "Project": {
        "type": "object", "additionalProperties": False,
        "required": ["id", "name", "created_at", "config", "stack", "template", "description", "slots"],
        "properties": {"id": TEXT, "name": TEXT, "created_at": DATE, "stack": TEXT, "template": BOOL,
                       "description": TEXT, "slots": INT,
                       "config": {"type": "object", "required": ["project_config", "workspace_init"],
                                  "additionalProperties": False,
                                  "properties": {"project_config": TEXT, "workspace_init": TEXT}}},
    },
    "Workspace": {
        "type": "object", "additionalProperties": False,
        "required": ["id", "project", "state", "created_at", "terminated_at", "last_usage", "inactivity_timeout",
                     "workspace_token", "workspace_token_required", "workspace_init_failed", "streams",
                     "permissions", "auto_resume", "retention_time_stopped", "retention_time_total", "config",
                     "workspace_url", "max_inactive_storage_time", "max_storage_time"],
        "properties": {
            "id": TEXT,
            "project": {"type": "object", "required": ["id", "name"], "properties": {"id": TEXT, "name": TEXT}},
            "state": {"type": "object", "required": ["code", "name", "error_reason"],
                      "properties": {"code": {"enum": [1, 2, 3, 4, 5]},
                                     "name": {"enum": ["starting", "running", "stopped", "removed", "error"]},
                                     "error_reason": NULLTEXT}},
            "created_at": DATE, "terminated_at": {"type": ["string", "null"]}, "last_usage": {"type": ["string", "null"]},
            "inactivity_timeout": INT, "workspace_token": TEXT, "workspace_token_required": BOOL,
            "workspace_init_failed": BOOL,
            "streams": {"type": "object", "required": ["workspace_init_output", "workspace_init_error"],
                        "properties": {"workspace_init_output": STREAM, "workspace_init_error": STREAM}},
            "permissions": {"type": "object", "required": ["enter", "remove", "stop"],
                            "properties": {"enter": BOOL, "remove": BOOL, "stop": BOOL}},
            "auto_resume": BOOL, "retention_time_stopped": INT, "retention_time_total": INT, "config": TEXT,
            "workspace_url": TEXT, "max_inactive_storage_time": INT, "max_storage_time": INT,
        },
    },
}

SCHEMAS["SshKey"] = {
    "type": "object", "additionalProperties": False, "required": ["id", "type", "fingerprint", "comment", "created_at"],
    "properties": {"id": INT, "type": {"enum": ["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                                                "ecdsa-sha2-nistp521"]},
                   "fingerprint": {"type": "string", "description": "OpenSSH's SHA256:… form"},
                   "comment": TEXT, "created_at": DATE}}
KEY_FIELDS = {"type": "object", "required": ["key"],
              "properties": {"key": {"type": "string", "description": "one OpenSSH public-key line"},
                             "comment": {"type": "string", "description": "instead of the line's own comment"}}}
ERR = json_body({"$ref": "#/components/schemas/ContainersError"})
WS = path_param("workspace_id", TEXT, "a workspace's id (32 hex)")
B64 = {"type": "string", "description": "Base64 of the path relative to /home/user/workspace"}
FIELDS = {
    "type": "object", "required": ["project_id"],
    "properties": {"project_id": TEXT, "project_config": TEXT, "inactivity_timeout": INT,
                   "workspace_token_required": BOOL, "workspace_init": TEXT, "auto_resume": BOOL,
                   "retention_time_stopped": INT, "retention_time_total": INT, "max_inactive_storage_time": INT,
                   "max_storage_time": INT, "files": {"type": "string", "format": "binary",
                                                      "description": "tar.gz laid over /home/user/workspace"}},
}


def _resp(status: int, content: dict | None = None) -> dict:
    out: dict = {"description": STATUS[status]}
    if content:
        out["content"] = content
    return out


def _op(op_id: str, summary: str, ok: int, content: dict | None, errs, **kw) -> dict:
    responses = {str(ok): _resp(ok, content), **{str(c): _resp(c, ERR) for c in sorted(set(errs) | {401, 405})}}
    return operation(op_id, TAG, summary, responses, security=SECURITY, **kw)


def _q(name: str, schema: dict, description: str = "") -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _message() -> dict:
    return json_body({"type": "object", "required": ["message"], "properties": {"message": TEXT}})


def paths() -> dict:
    ws = {"$ref": "#/components/schemas/Workspace"}
    project = {"$ref": "#/components/schemas/Project"}
    raw = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    listing = json_body({"type": "object", "required": ["listed_dir", "files", "dirs"],
                         "properties": {"listed_dir": TEXT, "files": {"type": "array"}, "dirs": {"type": "array"}}})
    page = [_q("limit", INT), _q("page_token", TEXT, "Base64 of an offset, from a previous page")]
    out = {
        "/api/v1/test": {"get": _op("containers_test", "Check the token", 200, _message(), ())},
        "/api/v1/projects": {"get": _op("projects_list", "Your projects and the templates", 200, json_body({
            "type": "object", "required": ["items", "paging"],
            "properties": {"items": {"type": "array", "items": project}, "paging": PAGING}}), (400,), params=page)},
        "/api/v1/projects/{project_id}": {"get": _op(
            "project_info", "One project", 200, json_body(project), (404,),
            params=[path_param("project_id", TEXT, "a project's id")])},
        "/api/v1/workspaces": {
            "get": _op("workspaces_list", "Your workspaces, newest first", 200, json_body({
                "type": "object", "required": ["items", "paging"],
                "properties": {"items": {"type": "array", "items": ws}, "paging": PAGING}}), (400,),
                params=[_q("project_id", TEXT), _q("states[]", {"type": "array", "items": INT}), *page]),
            "post": _op("workspace_create", "Create a workspace (state 1, then 2)", 201, json_body({
                "type": "object", "required": ["message", "workspace"], "properties": {"message": TEXT, "workspace": ws}}),
                (400, 404, 409, 413), body={"required": True, "content": {
                    "multipart/form-data": {"schema": FIELDS}, "application/x-www-form-urlencoded": {"schema": FIELDS},
                    **json_body(FIELDS)}}),
        },
        "/api/v1/workspaces/{workspace_id}": {"get": _op("workspace_info", "One workspace", 200, json_body(ws), (404,),
                                                         params=[WS])},
        "/api/v1/workspaces/{workspace_id}/files": {"post": _op(
            "workspace_upload", "Upload one file into the running workspace", 200,
            json_body({"type": "object", "required": ["path"], "properties": {"path": TEXT}}), (400, 404, 413, 500),
            params=[WS], body={"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["filedata", "filepath"],
                "properties": {"filedata": {"type": "string", "format": "binary"}, "filepath": TEXT}}}}})},
        "/api/v1/workspaces/{workspace_id}/files/{path}": {"get": _op(
            "workspace_download", "Download one file (path in Base64)", 200, raw, (400, 404, 413, 500),
            params=[WS, path_param("path", B64, "the file's path, Base64")])},
        "/api/v1/workspaces/{workspace_id}/list_files": {"get": _op(
            "workspace_list_root", "List the workspace directory", 200, listing, (400, 404, 500), params=[WS])},
        "/api/v1/workspaces/{workspace_id}/list_files/{path}": {"get": _op(
            "workspace_list_files", "List one directory (path in Base64)", 200, listing, (400, 404, 500),
            params=[WS, path_param("path", B64, "the directory's path, Base64")])},
        "/api/v1/workspaces/{workspace_id}/{stream}": {"get": _op(
            "workspace_stream", "The init script's output or error stream", 200,
            {"text/plain": {"schema": TEXT}}, (400, 404),
            params=[WS, path_param("stream", {"enum": ["workspace_init_output", "workspace_init_error"]},
                                   "stream name")])},
    }
    sshkey = {"$ref": "#/components/schemas/SshKey"}
    key_id = path_param("key_id", TEXT, "a key's id (or its SHA256:… fingerprint, for DELETE)")
    out["/api/v1/ssh-keys"] = {
        "get": _op("ssh_keys_list", "Your SSH public keys (the SSH gateway to workspaces accepts them)", 200,
                   json_body({"type": "object", "required": ["items"],
                              "properties": {"items": {"type": "array", "items": sshkey}}}), ()),
        "post": _op("ssh_key_add", "Register an SSH public key", 201, json_body({
            "type": "object", "required": ["message", "key"], "properties": {"message": TEXT, "key": sshkey}}),
            (400, 413), body={"required": True, "content": {"application/x-www-form-urlencoded": {"schema": KEY_FIELDS},
                                                            **json_body(KEY_FIELDS)}}),
    }
    out["/api/v1/ssh-keys/{key_id}"] = {
        "get": _op("ssh_key_info", "One SSH key", 200, json_body(sshkey), (404,), params=[key_id]),
        "delete": _op("ssh_key_remove", "Remove an SSH key", 200, _message(), (404,), params=[key_id]),
    }
    for action, summary, message, errs in (
            ("stop", "Stop (save the VM to disk); answers once saved", "Workspace has been stopped", (400, 404, 500)),
            ("resume", "Resume a stopped workspace (state 1, then 2)", "Workspace is resuming", (400, 404, 409, 500)),
            ("remove", "Remove (state 4 now; VM and disk go in the background)", "Workspace has been removed",
             (400, 404, 500))):
        out[f"/api/v1/workspaces/{{workspace_id}}/{action}"] = {"put": _op(
            f"workspace_{action}", summary, 200, _message(), errs, params=[WS])}
    return out
