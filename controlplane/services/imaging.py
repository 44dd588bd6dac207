"""Runs imaging jobs (in the agent): copies through storage.imaging, reports progress to the job."""

from __future__ import annotations

import logging
import time

from sqlalchemy import update

from ..jobs import JobQueue
from ..models import Drive, Job
from storage import imaging
from storage.errors import StorageError
from storage.pool import DrivePool

log = logging.getLogger("openhosting.imaging")


class ImagingRunner:
    kind = "image"

    def __init__(self, db, pool: DrivePool, queue: JobQueue, rate: int = 0):
        self.db = db
        self.pool = pool
        self.queue = queue
        self.rate = rate

    def run(self, job: Job) -> None:
        args = dict(job.args)
        last = [0.0]
        began, resume = time.monotonic(), int(args.get("checkpoint", 0)) if job.attempts > 1 else 0

        def progress(consumed: int, checkpoint: int | None) -> bool:
            if self.rate:  # keep imaging from starving running servers of disk bandwidth
                ahead = (consumed - resume) / self.rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
            now = time.monotonic()
            if now - last[0] < 0.25:
                return True
            last[0] = now
            if checkpoint is not None:
                args["checkpoint"] = checkpoint
            return self.queue.progress(job.id, consumed, args=args)

        try:
            imaging.copy(self.pool, args["source"], args.get("format", "raw"), job.target,
                         args.get("mode", ""), progress, resume_from=resume)
        except imaging.Cancelled:
            log.info("imaging job %s was taken from us; stopping", job.id)
            return
        except (StorageError, FileNotFoundError) as exc:
            message = exc.message if isinstance(exc, StorageError) else "source or drive vanished"
            self._fail(job, message)
            return
        self.queue.finish(job.id)
        log.info("imaging job %s done: %s from %s", job.id, job.target, args["source"])

    def _fail(self, job: Job, message: str) -> None:
        log.warning("imaging job %s failed: %s", job.id, message)
        with self.db.session() as s:
            s.execute(update(Drive).where(Drive.uuid == job.target).values(imaging_error=message[:500]))
        self.queue.finish(job.id, error=message)
