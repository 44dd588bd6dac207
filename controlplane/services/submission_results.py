"""The two files a submission's test stage may leave (workspaces-api.md §C): the tests report (a
JSON array of test results) and the scenario result (status and score), checked and parsed."""

from __future__ import annotations

import json


def validate_report(data: bytes) -> list:
    """The tests report (§C) parsed, or ValueError with a reason."""
    try:
        report = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the tests report is not valid JSON") from None
    if not isinstance(report, list):
        raise ValueError("the tests report must be a JSON array")
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
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the scenario result is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("the scenario result must be a JSON object")
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
