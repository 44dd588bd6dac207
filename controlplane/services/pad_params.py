"""Parameters of the pads face: strict booleans and integers, text limits, dates, sort and page.

Every check raises `Usage` naming the field; the face renders it as `400 Bad Request: <detail>`."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from ..errors import Usage

KIB = 1024
LIMITS = {"title": 255, "notes": 64 * KIB, "description": 64 * KIB, "solution": 64 * KIB,
          "candidate_description": 64 * KIB, "contents": 1024 * KIB, "stdin": 1024 * KIB}
CHAR_LIMITS = {"title"}  # counted in characters; the rest in UTF-8 bytes
PAGE_SIZE = 50
SORT_FIELDS = ("created_at", "updated_at")


def boolean(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "false", "0"):
        return value.strip().lower() in ("true", "1")
    raise Usage("{field} must be true or false", field=field)


def only_true(value: Any) -> bool:
    """`ended`/`deleted`: true, 1 (any case) or JSON true act; anything else is ignored (the seed)."""
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() in ("true", "1")


def integer(value: Any, field: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,100}\s*", value):
        return int(value)
    raise Usage("{field} must be a whole number", field=field)


def text(value: Any, field: str) -> str:
    if value is None:
        value = ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise Usage("{field} must be text", field=field)
    if "\x00" in value:  # PostgreSQL refuses NUL in text
        raise Usage("{field} contains a NUL character", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Usage("{field} is not valid Unicode (a lone surrogate)", field=field) from None
    limit = LIMITS.get(field)
    if limit is not None:
        size = len(value) if field in CHAR_LIMITS else len(value.encode("utf-8"))
        if size > limit:
            unit = "characters" if field in CHAR_LIMITS else "bytes"
            raise Usage("{field} is longer than {limit} {unit}", field=field, limit=limit, unit=unit)
    return value


def date(value: Any, field: str) -> dt.datetime:
    """RFC 3339 / ISO 8601 (`Z`, `±hh:mm`, `-00:00`, fractions); no offset means UTC."""
    if not isinstance(value, str) or not value.strip():
        raise Usage("{field} must be an ISO 8601 date and time", field=field)
    raw = value.strip()
    if raw[-1:] in ("z", "Z"):
        raw = raw[:-1] + "+00:00"
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise Usage("{field} must be an ISO 8601 date and time", field=field) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc)


def rfc3339(when: dt.datetime | None) -> str | None:
    """UTC, whole seconds, `Z`."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sort(value: Any, default: str = "created_at,desc") -> tuple[str, bool, str | None]:
    """(field, ascending, normalized text or None when not given)."""
    if value is None:
        field, _, order = default.partition(",")
        return field, order == "asc", None
    if not isinstance(value, str):
        raise Usage("invalid sort")
    field, _, order = value.strip().lower().partition(",")
    order = order.strip() or "desc"
    if field.strip() not in SORT_FIELDS or order not in ("asc", "desc"):
        raise Usage("invalid sort")
    return field.strip(), order == "asc", f"{field.strip()},{order}"


def offset(number: int) -> int:
    """Rows before page `number`, capped so that a huge page is an empty page, not an overflow."""
    return min((number - 1) * PAGE_SIZE, 2**62)


def page(value: Any) -> int:
    if value is None:
        return 1
    number = integer(value, "page")
    if number < 1:
        raise Usage("page must be 1 or more")
    return number
