"""The durable job queue in the database: enqueue from any process, claim and run in the agent.

A running job carries a lease (owner, expiry). An agent renews the lease as it reports progress; a job
whose lease expired, or which a previous incarnation of this host's agent held, is claimed again, so a
restart neither loses a job nor leaves it stuck.
"""

from __future__ import annotations

import datetime as dt
import os
import socket

from sqlalchemy import and_, or_, select, update

from .db import Database
from .models import Job, utcnow

ACTIVE = ("queued", "running")
LEASE = dt.timedelta(seconds=30)


def host_id() -> str:
    return socket.gethostname()


def owner_id() -> str:
    return f"{host_id()}/{os.getpid()}"


class JobQueue:
    def __init__(self, db: Database, owner: str | None = None):
        self.db = db
        self.owner = owner or owner_id()

    @staticmethod
    def enqueue(session, kind: str, target: str, args: dict | None = None, total: int = 0) -> Job:
        job = Job(kind=kind, target=target, args=args or {}, total=total, state="queued")
        session.add(job)
        session.flush()
        return job

    @staticmethod
    def active_for(session, kind: str, targets: list[str]) -> dict[str, Job]:
        if not targets:
            return {}
        rows = session.scalars(
            select(Job).where(Job.kind == kind, Job.state.in_(ACTIVE), Job.target.in_(targets))
        )
        return {job.target: job for job in rows}

    def recover_own(self) -> int:
        """Requeue jobs that an earlier agent process on this host held when it died."""
        with self.db.session() as s:
            result = s.execute(
                update(Job)
                .where(
                    Job.state == "running",
                    Job.lease_owner.like(f"{host_id()}/%"),
                    Job.lease_owner != self.owner,
                )
                .values(state="queued", lease_owner=None, lease_until=None)
            )
            return result.rowcount

    def claim(self, kinds: list[str]) -> Job | None:
        """Take the oldest runnable job of one of `kinds`, or None. Safe against concurrent agents."""
        now = utcnow()
        with self.db.session() as s:
            candidate = s.scalar(
                select(Job)
                .where(
                    Job.kind.in_(kinds),
                    or_(Job.state == "queued", and_(Job.state == "running", Job.lease_until < now)),
                )
                .order_by(Job.id)
                .limit(1)
            )
            if candidate is None:
                return None
            claimed = s.execute(
                update(Job)
                .where(Job.id == candidate.id, Job.state == candidate.state,
                       Job.attempts == candidate.attempts)
                .values(state="running", lease_owner=self.owner, lease_until=now + LEASE,
                        attempts=Job.attempts + 1, updated_at=now)
            ).rowcount
        if not claimed:
            return None
        with self.db.session() as s:
            return s.get(Job, candidate.id)

    def progress(self, job_id: int, progress: int, total: int | None = None, args: dict | None = None) -> bool:
        """Record progress and renew the lease; False when the job is no longer ours (cancelled)."""
        values = {"progress": progress, "lease_until": utcnow() + LEASE, "updated_at": utcnow()}
        if total is not None:
            values["total"] = total
        if args is not None:
            values["args"] = args
        with self.db.session() as s:
            return bool(s.execute(
                update(Job).where(Job.id == job_id, Job.lease_owner == self.owner, Job.state == "running")
                .values(**values)
            ).rowcount)

    def finish(self, job_id: int, error: str | None = None) -> None:
        with self.db.session() as s:
            s.execute(
                update(Job).where(Job.id == job_id)
                .values(state="failed" if error else "done", error=error, lease_owner=None,
                        lease_until=None, updated_at=utcnow())
            )
