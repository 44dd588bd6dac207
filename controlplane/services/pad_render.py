"""Pads, pad environments, events and questions as the pads face shows them (pads-api.md §2)."""

from __future__ import annotations

from sqlalchemy import func, select

from ..models import Pad, PadEnvironment, PadEvent, PadQuestion, Question, User
from . import languages
from .pad_accounts import display_name, owner_email
from .pad_params import rfc3339

EVENT_LIMIT = 1000
EVENT_TEXT = {"joined": "joined the pad", "left": "left the pad", "enabled": "enabled code execution",
              "disabled": "disabled code execution", "ended": "ended the interview"}


def event(ev: PadEvent) -> dict:
    text = f"ran {ev.meta} code" if ev.kind == "ran" else EVENT_TEXT.get(ev.kind, ev.kind)
    when = rfc3339(ev.created_at)
    return {"message": f"{when}: {ev.user_name} {text}", "kind": ev.kind, "metadata": ev.meta,
            "user_name": ev.user_name, "user_email": ev.user_email, "created_at": when}


def pad(s, row: Pad, base: str, pages: str = "") -> dict:
    """The pad as the API shows it; `url` and `playback` are on `pages` (where the console proxy serves
    the pad page: `Pads.pages`) when it is not empty, else on the API's own base."""
    owner = s.get(User, row.owner)
    env = s.get(PadEnvironment, row.active_environment_id) if row.active_environment_id else None
    total = s.scalar(select(func.count()).select_from(PadEvent).where(PadEvent.pad_id == row.id))
    latest = list(s.scalars(select(PadEvent).where(PadEvent.pad_id == row.id)
                            .order_by(PadEvent.created_at.desc(), PadEvent.id.desc()).limit(EVENT_LIMIT)))
    latest.reverse()
    names = [display_name(owner.name, owner.email)]
    for name in s.scalars(select(PadEvent.user_name).where(PadEvent.pad_id == row.id)
                          .order_by(PadEvent.created_at, PadEvent.id)):
        if name not in names:
            names.append(name)
    env_ids = list(s.scalars(select(PadEnvironment.id).where(PadEnvironment.pad_id == row.id)
                             .order_by(PadEnvironment.id)))
    question_ids = list(s.scalars(select(PadQuestion.question_id).where(PadQuestion.pad_id == row.id)
                                  .order_by(PadQuestion.question_id)))
    url = f"{pages or base}/pads/{row.public_id}"
    return {
        "id": row.public_id, "title": row.title, "language": row.language,
        "owner_email": owner_email(owner.uuid, owner.email), "participants": names,
        "contents": env.contents if env else "", "notes": row.notes,
        "events": [event(e) for e in latest], "events_truncated": total > EVENT_LIMIT,
        "events_url": f"{base}/api/pads/{row.public_id}/events",
        "private": row.private, "execution_enabled": row.execution_enabled,
        "created_at": rfc3339(row.created_at), "updated_at": rfc3339(row.updated_at),
        "ended_at": rfc3339(row.ended_at), "url": url, "playback": f"{url}/playback",
        "history": f"{base}/api/pads/{row.public_id}/history",
        "drawing": None, "pad_environment_ids": env_ids, "state": "ended" if row.ended_at else "active",
        "type": "live", "question_ids": question_ids, "active_environment_id": row.active_environment_id,
        "team": None,
    }


def environment(row: PadEnvironment, pad_row: Pad) -> dict:
    lang = languages.get(row.language)
    return {"id": row.id, "pad_id": pad_row.id, "pad_public_id": pad_row.public_id,
            "question_id": row.question_id, "example_question_id": None, "language": row.language,
            "file_contents": [{"path": f"coderpad/{lang.file}", "contents": row.contents}],
            "created_at": rfc3339(row.created_at), "updated_at": rfc3339(row.updated_at)}


def question(s, row: Question) -> dict:
    owner = s.get(User, row.owner)
    return {"id": row.id, "title": row.title, "author_name": display_name(owner.name, owner.email),
            "owner_email": owner_email(owner.uuid, owner.email), "language": row.language,
            "description": row.description, "contents": row.contents, "shared": row.shared,
            "used": row.used, "created_at": rfc3339(row.created_at), "updated_at": rfc3339(row.updated_at),
            "solution": row.solution, "candidate_description": row.candidate_description}
