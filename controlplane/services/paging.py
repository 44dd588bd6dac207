"""The Containers face's paging tokens (workspaces-api.md §E) and date format.

A token is padded standard Base64 of the decimal offset into the ordered, filtered result
(`MTA=` is offset 10); empty means the first page; anything else malformed is the caller's 400.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt


class BadToken(ValueError):
    pass


def offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        text = base64.b64decode(token.encode("ascii"), validate=True).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        raise BadToken("page_token is malformed") from None
    if not text.isdigit() or len(text) > 12:
        raise BadToken("page_token is malformed")
    return int(text)


def token(value: int) -> str:
    return base64.b64encode(str(value).encode()).decode()


def paging(start: int, limit: int, more: bool) -> dict:
    return {"previous_page_token": token(max(0, start - limit)) if start > 0 else None,
            "next_page_token": token(start + limit) if more else None}


def date(when: dt.datetime | None) -> str | None:
    """`YYYY-MM-DD HH:MM:SS +0000`, always UTC; None stays None."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S +0000")


def aware(when: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; they are UTC."""
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=dt.timezone.utc)
