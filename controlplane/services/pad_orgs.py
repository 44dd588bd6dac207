"""Quota, organization and its statistics as the pads face shows them (pads-api.md E12-E14)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from ..config import Settings
from ..db import Database
from ..errors import Forbidden, NotFound, Usage
from ..models import Organization, Pad, User, utcnow
from .pad_accounts import Caller, display_name, owner_email
from .pad_params import date, rfc3339
from .pads import month_start

MAX_WINDOW = dt.timedelta(days=366)


class PadOrgs:
    def __init__(self, db: Database, settings: Settings):
        self.db = db
        self.settings = settings

    def quota(self, caller: Caller) -> dict:
        now = utcnow()
        start = month_start(now)
        with self.db.read_session() as s:
            user = s.get(User, caller.uuid)
            if caller.org_id is not None:
                org = s.get(Organization, caller.org_id)
                limit, created = org.monthly_pad_limit, org.created_at
                scope = Pad.org_id == caller.org_id
            else:
                limit, created = (self.settings.pad_monthly_limit or None), user.created_at
                scope = (Pad.owner == caller.uuid) & Pad.org_id.is_(None)
            used = s.scalar(select(func.count()).select_from(Pad).where(scope, Pad.created_at >= start))
        out = {"trial_expires_at": rfc3339(created), "pads_used": used, "quota_reset_at": rfc3339(start),
               "unlimited": not limit, "overages_enabled": False}
        if limit:
            out["pads_remaining"] = max(0, limit - used)
            out["monthly_pad_limit"] = limit
        return out

    def _org(self, s, caller: Caller) -> Organization:
        org = s.get(Organization, caller.org_id) if caller.org_id is not None else None
        if org is None:
            raise NotFound(what="organization")
        return org

    def organization(self, caller: Caller) -> dict:
        with self.db.read_session() as s:
            org = self._org(s, caller)
            users = list(s.scalars(select(User).where(User.org_id == org.id).order_by(User.email, User.uuid)))
            return {"organization_name": org.name, "user_count": len(users),
                    "users": [{"email": owner_email(u.uuid, u.email), "name": display_name(u.name, u.email),
                               "teams": []} for u in users],
                    "default_language": org.default_language,
                    "organization_default_language": org.default_language,
                    "single_sign_on_supported": False, "single_sign_in_url": None, "teams": []}

    def stats(self, caller: Caller, start_text, end_text) -> dict:
        if (start_text is None) != (end_text is None):
            raise Usage("give both start_time and end_time, or neither")
        if start_text is None:
            end = utcnow()
            start = end - dt.timedelta(days=7)
        else:
            start, end = date(start_text, "start_time"), date(end_text, "end_time")
            if start >= end:
                raise Usage("start_time must be before end_time")
            if end - start > MAX_WINDOW:
                raise Usage("the window is longer than 366 days")
        with self.db.read_session() as s:
            org = self._org(s, caller)
            if not caller.org_owner:
                raise Forbidden("Forbidden")
            users = list(s.scalars(select(User).where(User.org_id == org.id)))
            counts = dict(s.execute(select(Pad.owner, func.count()).where(
                Pad.org_id == org.id, Pad.created_at >= start, Pad.created_at < end).group_by(Pad.owner)).all())
            total = s.scalar(select(func.count()).select_from(Pad).where(
                Pad.org_id == org.id, Pad.created_at >= start, Pad.created_at < end))
            rows = [{"email": owner_email(u.uuid, u.email), "name": display_name(u.name, u.email),
                     "pads_created": counts.get(u.uuid, 0)} for u in users]
        rows.sort(key=lambda r: (-r["pads_created"], r["email"]))
        return {"start_time": rfc3339(start), "end_time": rfc3339(end), "pads_created": total, "users": rows}
