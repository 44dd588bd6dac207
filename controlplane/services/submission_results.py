"""The two files a submission's test stage may leave (workspaces-api.md §C): the tests report (a
JSON array of test results) and the scenario result (status and score), checked and parsed."""

from __future__ import annotations

import json


def _load(data: bytes, what: str, kind: type, shape: str):
    """``data`` parsed as JSON of type ``kind``, or ValueError naming ``what`` it should have been."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"the {what} is not valid JSON") from None
    if not isinstance(doc, kind):
        raise ValueError(f"the {what} must be a JSON {shape}")
    return doc


def validate_report(data: bytes) -> list:
    """The tests report (§C) parsed, or ValueError with a reason."""
    report = _load(data, "tests report", list, "array")
    for i, entry in enumerate(report):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError(f"tests report entry {i} needs a string name")
        if entry.get("status") not in ("ok", "failure", "error"):
            raise ValueError(f"tests report entry {i}: status must be ok, failure or error")
        if "time" in entry and not isinstance(entry["time"], (int, float)):
            raise ValueError(f"tests report entry {i}: time must be a number")
    return report


def parse_result(data: bytes) -> tuple[int, float]:
    """The scenario result file: (status 12|14|15, score)."""
    doc = _load(data, "scenario result", dict, "object")
    status = doc.get("status")
    by_name = {"runtime error": 12, "fail": 14, "ok": 15}
    if isinstance(status, str):
        status = by_name.get(status.strip().lower(), status)
    if status not in (12, 14, 15) or isinstance(status, bool):
        raise ValueError("the scenario result's status must be 12, 14 or 15 (or runtime error, fail, ok)")
    score = doc.get("score", 0)
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise ValueError("the scenario result's score must be a number")
    return status, float(score)
