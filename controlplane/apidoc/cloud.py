"""The cloud API (ElasticHosts) in its JSON mode: `Accept: application/json`, JSON or text bodies.

Every read also answers POST (the original command line tool POSTs every call). In text mode (no
`Accept: application/json`) the same routes answer `key value` lines; see docs/ and the contract.
"""

from __future__ import annotations

from .common import (COMMON_ERRORS, ERROR, INT, SCALAR, TEXT, UUID, errors, json_body, operation,
                     path_param, response)

TAG = "cloud"

CLOUD_ERROR_CONTENT = {"application/json": {"schema": ERROR},
                       "text/plain": {"schema": {"type": "string"}}}

USER_KEYS = {"^user:[A-Za-z0-9_.:\\-]{1,64}$": TEXT}
DEVICE = "(ide:[01]:[01]|ata:0:[0-5]|scsi:0:[0-7]|block:[0-7])"

# What create and set accept (the services' validation, said once more for clients and schemathesis).
USER_VALUES = {"^user:[A-Za-z0-9_.:\\-]{1,64}$": {"type": "string", "maxLength": 1024}}
NAME_VALUE = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "\\S"}
SIZE = {"description": "bytes, or a number with k, M, G or T; at least 1, at most 16 TiB",
        "anyOf": [{"type": "integer", "minimum": 1, "maximum": 16 * 1024**4},
                  {"type": "string", "pattern": "^[0-9]{1,13}[kKmMgGtT]?$"}]}
UUIDS = {"type": "string", "pattern": "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}( |$))*$",
         "description": "uuids separated by spaces"}
TAGS = {"type": "string", "pattern": "^\\S{1,64}( \\S{1,64}){0,63}$", "description": "words separated by spaces"}
PASSWORD = {"type": "string", "pattern": "^[!-~]{0,8}$", "description": "VNC password, at most 8 characters"}


def _number(lo: int, hi: int) -> dict:
    """A whole number, as a JSON integer or as decimal text."""
    return {"anyOf": [{"type": "integer", "minimum": lo, "maximum": hi}, {"type": "string", "pattern": "^[0-9]+$"}]}

SCHEMAS = {
    "Drive": {
        "type": "object",
        "required": ["drive", "name", "size", "status", "claim:type"],
        "properties": {
            "drive": UUID, "name": TEXT, "size": INT, "status": {"enum": ["active"]}, "user": UUID,
            "claim:type": {"enum": ["exclusive", "shared"]},
            "claimed": {"type": "string", "description": "space separated <server uuid>:<device>"},
            "readers": {"type": "string", "description": "space separated user uuids"},
            "tags": TEXT, "media": {"enum": ["disk", "cdrom"]}, "format": TEXT,
            "encryption:cipher": TEXT, "tier": TEXT,
            "read:bytes": INT, "read:requests": INT, "write:bytes": INT, "write:requests": INT,
            "imaging": {"type": "string", "description": "present only while imaging: 'queued' or 'NN%'"},
            "imaging:error": TEXT,
        },
        "patternProperties": USER_KEYS,
        "additionalProperties": False,
    },
    "DriveFields": {
        "type": "object",
        "description": "create needs name and size; set takes any of them",
        "examples": [{"name": "system", "size": "1G"}, {"name": "data", "size": 1048576, "tags": "db", "user:role": "x"}],
        "properties": {
            "name": NAME_VALUE, "size": SIZE,
            "claim:type": {"enum": ["exclusive", "shared"]}, "readers": UUIDS, "tags": TAGS,
            "avoid": UUIDS, "encryption:cipher": {"enum": ["none", ""]}, "tier": {"enum": ["disk", "ssd"]},
        },
        "patternProperties": USER_VALUES,
        "additionalProperties": False,
    },
    "Server": {
        "type": "object",
        "required": ["server", "user", "status", "name", "cpu", "smp", "mem", "persistent", "boot"],
        "properties": {
            "server": UUID, "user": UUID,
            "status": {"enum": ["active", "stopped", "paused", "dumped", "dead"]},
            "name": TEXT, "cpu": INT, "smp": TEXT, "mem": INT, "persistent": {"enum": ["true", "false"]},
            "boot": TEXT, "vnc": TEXT, "password": TEXT, "tags": TEXT, "avoid:drives": TEXT,
            "avoid:servers": TEXT, "started": INT, "rx": INT, "tx": INT, "rx:packets": INT, "tx:packets": INT,
            "vnc:ip": TEXT, "vnc:port": INT,
        },
        "patternProperties": {
            **USER_KEYS,
            f"^{DEVICE}$": UUID,
            f"^{DEVICE}:media$": {"enum": ["disk", "cdrom"]},
            f"^{DEVICE}:(read|write):(bytes|requests)$": INT,
            "^nic:[0-3]:(model|dhcp|vlan|mac|dhcp:ip)$": TEXT,
        },
        "additionalProperties": False,
    },
    "ServerFields": {
        "type": "object",
        "description": "configuration keys; create needs name (cpu 1000, smp auto, mem 512, persistent false "
                       "by default); an empty value removes a key",
        "examples": [{"name": "web", "mem": 256, "cpu": 1000, "persistent": "true"}],
        "properties": {
            "name": NAME_VALUE, "cpu": _number(100, 1_000_000), "smp": {"anyOf": [{"const": "auto"}, _number(1, 64)]},
            "mem": {**_number(32, 1024 * 1024), "description": "MB"}, "persistent": {"enum": ["true", "false"]},
            "boot": {"type": "string", "pattern": f"^{DEVICE}( {DEVICE})*$"},
            "vnc": {"enum": ["auto", "off", ""]}, "vnc:ip": {"enum": ["auto", "off", ""]},
            "password": PASSWORD, "vnc:password": PASSWORD, "vnc:tls": {"enum": ["off", "none", "false"]},
            "tags": TAGS, "avoid:drives": UUIDS, "avoid:servers": UUIDS,
        },
        "patternProperties": {
            **USER_VALUES,
            f"^{DEVICE}$": UUID,
            f"^{DEVICE}:media$": {"enum": ["disk", "cdrom"]},
            "^nic:[0-3]:model$": {"enum": ["e1000", "rtl8139", "virtio"]},
            "^nic:[0-3]:dhcp$": {"anyOf": [{"const": "auto"}, {"type": "string", "format": "ipv4"}]},
            "^nic:[0-3]:vlan$": UUID,
            "^nic:[0-3]:mac$": {"type": "string", "pattern": "^[0-9a-f][02468ace](:[0-9a-f]{2}){5}$"},
        },
        "additionalProperties": False,
    },
    "Console": {
        "type": "object",
        "required": ["server", "url", "expires"],
        "properties": {
            "server": UUID,
            "url": {"type": "string", "description": "the console page; the one-time ticket is its #fragment"},
            "expires": {**INT, "description": "Unix time after which the link no longer opens"},
        },
        "additionalProperties": False,
    },
    "Resource": {
        "type": "object",
        "required": ["type", "resource", "user"],
        "properties": {
            "type": {"enum": ["ip", "vlan"]}, "resource": TEXT, "user": UUID, "name": TEXT,
            "netmask": TEXT, "gateway": TEXT, "nameserver": TEXT, "tags": TEXT,
        },
        "patternProperties": USER_KEYS,
        "additionalProperties": False,
    },
    "ResourceFields": {
        "type": "object",
        "examples": [{"name": "office", "tags": "lan"}],
        "properties": {"name": {"type": "string", "maxLength": 256}, "tags": TAGS},
        "patternProperties": USER_VALUES,
        "additionalProperties": False,
    },
    "ResourcePair": {
        "type": "object", "required": ["type", "resource"],
        "properties": {"type": {"enum": ["ip", "vlan"]}, "resource": TEXT}, "additionalProperties": False,
    },
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _list_of(key: str) -> dict:
    return {"type": "array", "items": {"type": "object", "required": [key], "properties": {key: UUID},
                                       "additionalProperties": False}}


def _ok(schema: dict) -> dict:
    return response(200, {"application/json": {"schema": schema}, "text/plain": {"schema": TEXT}})


def _fields_body(name: str, required: list[str] | None = None) -> dict:
    schema = _ref(name) if not required else {"allOf": [_ref(name), {"required": required}]}
    return {"required": True, "content": {
        **json_body(schema),
        "text/plain": {"schema": {"type": "string", "description": "`key value` lines"}},
        "application/octet-stream": {"schema": {"type": "string", "description": "`key value` lines (the tool's -c/-f)"}},
    }}


def _err(*extra: int) -> dict:
    return errors(COMMON_ERRORS + extra, CLOUD_ERROR_CONTENT)


DRIVE = path_param("drive", UUID, "a drive's uuid")
SERVER = path_param("server", UUID, "a server's uuid")
KIND = path_param("kind", {"enum": ["ip", "vlan"]}, "the resource type")
NAME = path_param("name", TEXT, "the resource: an IP address or a VLAN uuid")


def _read(op_id: str, summary: str, ok: dict, params=(), extra=()) -> dict:
    """A read: GET, and POST for the original tool."""
    return {method: operation(f"{op_id}{suffix}", TAG, summary, {"200": ok, **_err(*extra)}, params=params)
            for method, suffix in (("get", ""), ("post", "_post"))}


def _no_content() -> dict:
    return {"204": response(204)}


def paths() -> dict:
    drive_list = _ok(_list_of("drive"))
    drives = _ok({"type": "array", "items": _ref("Drive")})
    drive = _ok(_ref("Drive"))
    server = _ok(_ref("Server"))
    out = {
        "/drives/list": _read("drives_list", "Your drives' uuids", drive_list),
        "/drives/info": _read("drives_info", "All your drives", drives),
        "/drives/list/standard": _read("drives_list_standard", "The standard drives' uuids", drive_list),
        "/drives/info/standard": _read("drives_info_standard", "All standard drives", drives),
        "/drives/create": {"post": operation("drives_create", TAG, "Create a drive",
                                             {"200": drive, **_err(402, 507)},
                                             body=_fields_body("DriveFields", ["name", "size"]))},
        "/drives/{drive}/info": _read("drive_info", "One drive", drive, [DRIVE]),
        "/drives/{drive}/set": {"post": operation("drive_set", TAG, "Change a drive (size resizes)",
                                                  {"200": drive, **_err(402, 403, 409, 507)}, params=[DRIVE],
                                                  body=_fields_body("DriveFields"))},
        "/drives/{drive}/destroy": {"post": operation("drive_destroy", TAG, "Destroy a drive",
                                                      {**_no_content(), **_err(403, 409)}, params=[DRIVE])},
        "/drives/{drive}/read/{offset}/{size}": _read(
            "drive_read", "Raw bytes of a drive",
            response(200, {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}),
            [DRIVE, path_param("offset", SCALAR, "byte offset (k, M, G, T suffixes)"),
             path_param("size", SCALAR, "how many bytes (k, M, G, T suffixes)")]),
        "/drives/{drive}/image/{source}": {"post": operation(
            "drive_image", TAG, "Copy another drive into this one (asynchronous)",
            {**_no_content(), **_err(403, 409, 507)}, params=[DRIVE, path_param("source", UUID, "the source drive")])},
        "/drives/{drive}/image/{source}/{mode}": {"post": operation(
            "drive_image_mode", TAG, "Copy another drive into this one, gzipping or gunzipping",
            {**_no_content(), **_err(403, 409, 507)},
            params=[DRIVE, path_param("source", UUID, "the source drive"),
                    path_param("mode", {"enum": ["gzip", "gunzip"]}, "gzip or gunzip")])},
        "/servers/list": _read("servers_list", "Your servers' uuids", _ok(_list_of("server"))),
        "/servers/info": _read("servers_info", "All your servers", _ok({"type": "array", "items": _ref("Server")})),
        "/servers/{server}/info": _read("server_info", "One server", server, [SERVER]),
        "/servers/{server}/set": {"post": operation(
            "server_set", TAG, "Change a server's configuration", {"200": server, **_err(402, 409)},
            params=[SERVER], body=_fields_body("ServerFields"))},
        "/resources/list": _read("resources_list", "Your IPs and VLANs", _ok({"type": "array", "items": _ref("ResourcePair")})),
        "/resources/info": _read("resources_info", "All your IPs and VLANs", _ok({"type": "array", "items": _ref("Resource")})),
        "/resources/{kind}/list": _read("resources_kind_list", "Your resources of one type",
                                        _ok({"type": "array", "items": _ref("ResourcePair")}), [KIND]),
        "/resources/{kind}/info": _read("resources_kind_info", "All your resources of one type",
                                        _ok({"type": "array", "items": _ref("Resource")}), [KIND]),
        "/resources/{kind}/create": {"post": operation(
            "resource_create", TAG, "Take an IP address or make a VLAN", {"200": _ok(_ref("Resource")), **_err(402, 409)},
            params=[KIND], body=_fields_body("ResourceFields"))},
        "/resources/{kind}/{name}/info": _read("resource_info", "One resource", _ok(_ref("Resource")), [KIND, NAME]),
        "/resources/{kind}/{name}/set": {"post": operation(
            "resource_set", TAG, "Change a resource", {"200": _ok(_ref("Resource")), **_err()},
            params=[KIND, NAME], body=_fields_body("ResourceFields"))},
        "/resources/{kind}/{name}/destroy": {"post": operation(
            "resource_destroy", TAG, "Give a resource back", {**_no_content(), **_err(409)}, params=[KIND, NAME])},
    }
    write_body = {"required": True, "content": {"application/octet-stream": {
        "schema": {"type": "string", "format": "binary", "description": "raw bytes, or gzip with Content-Encoding: gzip"}}}}
    out["/drives/{drive}/write"] = {"post": operation(
        "drive_write", TAG, "Write bytes at offset 0", {**_no_content(), **_err(403, 409, 507)},
        params=[DRIVE], body=write_body)}
    out["/drives/{drive}/write/{offset}"] = {"post": operation(
        "drive_write_at", TAG, "Write bytes at an offset", {**_no_content(), **_err(403, 409, 507)},
        params=[DRIVE, path_param("offset", SCALAR, "byte offset (k, M, G, T suffixes)")], body=write_body)}
    for path, op_id, summary in (("/servers/create", "servers_create", "Create and start a server"),
                                 ("/servers/create/stopped", "servers_create_stopped", "Create a server, stopped")):
        out[path] = {"post": operation(op_id, TAG, summary, {"200": server, **_err(402, 409)},
                                       body=_fields_body("ServerFields", ["name"]))}
    for action, summary in (("start", "Start"), ("stop", "Cut the power"), ("shutdown", "Press the power button"),
                            ("reset", "Reset"), ("destroy", "Destroy (stops it first)")):
        out[f"/servers/{{server}}/{action}"] = {"post": operation(
            f"server_{action}", TAG, summary, {**_no_content(), **_err(402, 409)}, params=[SERVER])}
    out["/servers/{server}/console"] = {"post": operation(
        "server_console", TAG, "A one-time link to the server's VNC console in the browser (opens within a minute; "
        "409 when the server is not running or has no VNC password)",
        {"200": _ok(_ref("Console")), **_err(409)}, params=[SERVER])}
    return out
