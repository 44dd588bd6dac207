"""The cloud API's wire formats: text/plain key/value, JSON, and the negotiation between them.

An object on the wire is a flat mapping of str keys to str or int values. Multi-valued keys (tags,
readers, boot, claimed) are one space-separated string in both formats, as the original API had them.
"""

from __future__ import annotations

import json
from typing import Iterable, Mapping

from .errors import Usage

Value = str | int
Obj = Mapping[str, Value]

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", "n": "\n", "r": "\r"}


def _escape(value: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in value) if any(c in value for c in _ESCAPES) else value


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value) and value[i + 1] in _UNESCAPES:
            out.append(_UNESCAPES[value[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def check_text(value: str) -> str:
    """Text that can be stored: no NUL (PostgreSQL refuses it in text) and no lone surrogates (not
    UTF-8; JSON's \\ud800 escapes can make them)."""
    if "\x00" in value:
        raise Usage("NUL characters are not allowed in text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Usage("text must be valid Unicode (a lone surrogate was sent)") from None
    return value


def check_json_text(data) -> None:
    """`check_text` for every key and string of a parsed JSON value."""
    try:
        _walk_json(data)
    except RecursionError:
        raise Usage("JSON body is nested too deeply") from None


def _walk_json(data) -> None:
    if isinstance(data, str):
        check_text(data)
    elif isinstance(data, list):
        for item in data:
            _walk_json(item)
    elif isinstance(data, dict):
        for key, value in data.items():
            check_text(key)
            _walk_json(value)


def load_json(raw: bytes | str):
    """Parse a JSON body; malformed or nested deeper than the parser goes is a usage error."""
    try:
        return json.loads(raw)
    except ValueError:
        raise Usage("body is not valid JSON") from None
    except RecursionError:
        raise Usage("JSON body is nested too deeply") from None


def encode_kv(obj: Obj) -> str:
    """One object as `key value` lines (no trailing blank line)."""
    lines = []
    for key, value in obj.items():
        text = _escape(str(value))
        lines.append(f"{key} {text}" if text else key)
    return "\n".join(lines) + "\n" if lines else ""


def decode_kv(text: str) -> dict[str, str]:
    """Parse `key value` lines; blank lines are ignored; a repeated key is a usage error."""
    obj: dict[str, str] = {}
    # split on \n only: str.splitlines would also break on \x1e, \x85, \u2028 inside values
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        key, _, value = line.partition(" ")
        if not key or key != key.strip():
            raise Usage("line {lineno}: expected 'key value'", lineno=lineno)
        if key in obj:
            raise Usage("key {key} given twice", key=key)
        obj[key] = _unescape(value)
    return obj


def decode_json(text: str) -> dict[str, str]:
    data = load_json(text) if text.strip() else {}
    if not isinstance(data, dict):
        raise Usage("JSON body must be an object")
    obj: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, bool):
            obj[key] = "true" if value else "false"
        elif isinstance(value, (int, str)):
            obj[key] = str(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            obj[key] = " ".join(value)
        else:
            raise Usage("key {key}: value must be a string or an integer", key=key)
    return obj


def wants_json(accept: str | None) -> bool:
    return bool(accept) and "application/json" in accept.lower()


def is_json(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";")[0].strip().lower() == "application/json"


def render_one(obj: Obj, as_json: bool) -> str:
    return json.dumps(dict(obj)) if as_json else encode_kv(obj)


def render_many(objs: Iterable[Obj], as_json: bool) -> str:
    objs = list(objs)
    if as_json:
        return json.dumps([dict(o) for o in objs])
    return "\n".join(encode_kv(o) for o in objs)


def render_list(key: str, ids: Iterable[str], as_json: bool) -> str:
    ids = list(ids)
    if as_json:
        return json.dumps([{key: i} for i in ids])
    return "".join(f"{i}\n" for i in ids)
