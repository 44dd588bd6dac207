"""Runs submissions in the agent: a dispatcher takes waiting ones (status 0) in id order as workers
free up; each worker leases a VM from the project image's warm pool (the sandbox pools of
SandboxRunner: no cold boot), runs `submission_stages.Execution` through oh-guest's port, writes the
result and gives the VM back to be destroyed.

A submission keeps status 0 until its VM is taken. `agent` on the row names the agent process that
took it: on start, `reconcile` requeues what a dead agent of this host had only taken and ends in 20
what it was preparing or executing (its VM died with it), so nothing is left executing.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from sqlalchemy import select, update

from ..doorbell import Bell
from ..jobs import host_id, owner_id
from ..models import Submission, utcnow
from . import projectconfig, submissions as sub
from .submission_stages import DebugLog, Execution, Limits, ProjectError

log = logging.getLogger("openhosting.submissions")


class DiskWatch:
    """Cuts a leased VM when its disk (the overlay on the host) grows past `limit` bytes, so a disk
    filler ends in a final status and the host's disk keeps what it had. Checked every `EVERY` s;
    the guest's dirty-page limits bound what it can write in between."""

    EVERY = 0.2

    def __init__(self, pool, vm, limit: int):
        self.pool, self.vm, self.limit = pool, vm, limit
        self.start_bytes = pool.disk_used(vm)
        self.tripped: int | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, name=f"disk-{vm.name}", daemon=True)

    def __enter__(self):
        if self.limit > 0:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        return False

    def _watch(self) -> None:
        while not self.done.wait(self.EVERY):
            grown = self.pool.disk_used(self.vm) - self.start_bytes
            if grown > self.limit:
                self.tripped = grown
                log.info("submission VM %s: disk grew by %d bytes (limit %d): cut", self.vm.name, grown, self.limit)
                self.pool.cut(self.vm)
                return

    def reason(self) -> str:
        return (f"the submission wrote more than {self.limit // 1024**2} MiB to its disk "
                f"(disk limit of the VM); the VM was stopped")


class SubmissionRunner:
    #: Seconds between looks at the queue while nothing rings: the API rings the agent's doorbell
    #: (`bell`) for every submission it accepts.
    POLL = 1.0

    def __init__(self, db, settings, files, project_files, pools, owner: str | None = None, bell=None,
                 finished=None):
        self.db = db
        self.settings = settings
        self.files = files              # storage.submissions.SubmissionFiles
        self.project_files = project_files   # storage.projects.ProjectFiles
        self.pools = pools              # SandboxRunner: .pool(slug) -> WarmPool | None
        self.owner = owner or owner_id()
        self.stopping = threading.Event()
        self.wake = bell if bell is not None else Bell()
        self.finished = finished or (lambda key: None)   # rings the API's waits (Submissions.get's wait)
        self._free = threading.Semaphore(max(1, settings.submission_workers))
        self._thread: threading.Thread | None = None

    # ---- life ------------------------------------------------------------------------------------

    def reconcile(self) -> int:
        """End or requeue what an earlier agent process of this host left; the number of rows touched."""
        mine = Submission.agent.like(f"{host_id()}/%") & (Submission.agent != self.owner)
        with self.db.session() as s:
            requeued = s.execute(update(Submission).where(mine, Submission.status == sub.WAITING)
                                 .values(agent=None)).rowcount
            lost = list(s.scalars(select(Submission).where(mine, Submission.status.in_((sub.PREPARATION,
                                                                                          sub.EXECUTION)))))
            for row in lost:
                # the debug log's note lands with the final status, in one transaction: a client that
                # sees status 20 finds the debug_log stream too
                old = self.files.load(row.id, "debug_log") or b""
                note = b"[agent] the agent stopped while this submission ran; its VM is gone: status 20\n"
                known = json.loads(row.streams or "{}")
                known["debug_log"] = self.files.save(row.id, "debug_log", old + note)
                row.streams = json.dumps(known)
                self._end_row(row, sub.INTERNAL_ERROR, "the VM was lost: the agent stopped while the submission ran")
            lost_ids = [row.id for row in lost]
        for submission_id in lost_ids:
            self.finished(sub.ring_key(submission_id))
        if requeued or lost:
            log.info("submissions: %d requeued, %d ended in 20 after an agent restart", requeued, len(lost))
        return requeued + len(lost)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._dispatch, name="submissions", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stopping.set()
        self.wake.set()

    # ---- dispatch --------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while not self.stopping.is_set():
            self._free.acquire()
            seen = self.wake.seen()
            try:
                claimed = self._claim()
            except Exception:
                log.exception("claiming a submission failed")
                claimed = None
            if claimed is None:
                self._free.release()
                self.wake.wait(seen, self.POLL)
                continue
            threading.Thread(target=self._work, args=(claimed,), name=f"submission-{claimed}", daemon=True).start()

    def _claim(self) -> int | None:
        with self.db.session() as s:
            candidate = s.scalar(select(Submission.id).where(Submission.status == sub.WAITING,
                                                             Submission.agent.is_(None))
                                 .order_by(Submission.id).limit(1))
            if candidate is None:
                return None
            taken = s.execute(update(Submission).where(Submission.id == candidate, Submission.agent.is_(None),
                                                       Submission.status == sub.WAITING)
                              .values(agent=self.owner)).rowcount
        return candidate if taken else None

    def _work(self, submission_id: int) -> None:
        try:
            self.execute(submission_id)
        except Exception as exc:
            log.exception("submission %s failed inside the agent", submission_id)
            debug = DebugLog()
            debug(f"the agent failed while running this submission: {type(exc).__name__}")
            self._finish(submission_id, sub.INTERNAL_ERROR, f"internal error in the agent ({type(exc).__name__})",
                         debug=debug)
        finally:
            self._free.release()

    # ---- one submission --------------------------------------------------------------------------

    def execute(self, submission_id: int) -> None:
        debug = DebugLog()
        with self.db.read_session() as s:
            row = s.get(Submission, submission_id)
            spec = (row.config, row.scenario, row.workspace_init, row.image, row.project_id)
        config, scenario, init, image, project_id = spec
        debug(f"submission {submission_id}: project {project_id}, scenario {scenario!r}, image {image}")
        try:
            doc = projectconfig.validate(config)
            body = doc["scenarios"].get(scenario)
            if body is None:
                raise projectconfig.ConfigError(f"scenario {scenario!r} is not in the configuration")
        except projectconfig.ConfigError as exc:
            debug(f"project error: {exc}")
            return self._finish(submission_id, sub.PROJECT_ERROR, f"project configuration: {exc}", debug=debug)
        if body.get("network") and self.settings.submission_network == "none":
            debug("the scenario asks for network; this server gives submissions none "
                  "(OPENHOSTING_SUBMISSION_NETWORK=none: no NIC)")
        pool = self.pools.pool(image)
        if pool is None:
            debug(f"image {image} is not installed")
            return self._finish(submission_id, sub.PROJECT_ERROR, f"the project's image {image} is not installed",
                                debug=debug)
        waited = time.monotonic()
        vm = pool.lease()
        debug(f"VM {vm.name} taken from the warm pool after {time.monotonic() - waited:.3f} s")
        channels: list = []
        watch = DiskWatch(pool, vm, self.settings.submission_disk_limit)
        try:
            with watch:
                self._run_in(submission_id, pool, vm, doc, body, scenario, init, project_id, debug, watch, channels)
        finally:
            for channel in channels:
                channel.close()
            pool.release(vm)

    def _run_in(self, submission_id: int, pool, vm, doc: dict, body: dict, scenario: str, init: str,
                project_id: str, debug: DebugLog, watch: DiskWatch, channels: list) -> None:
        from hypervisor.errors import HypervisorError
        from hypervisor.microvm import guestd, runport
        from hypervisor.microvm.guest_channel import GuestChannel

        self._update(submission_id, status=sub.PREPARATION, vm=vm.name, started_at=utcnow())
        try:
            path = runport.port_path(vm.guest, guestd.GUEST_CHANNEL)
            if not path:
                raise guestd.GuestGone(reason="the VM has no oh-guest port")
            channel = GuestChannel.connect(path, hello_timeout=60)
            channels.append(channel)
            channel.sync_time()
        except (guestd.GuestError, OSError) as exc:
            debug(f"oh-guest could not be reached: {exc}")
            return self._finish(submission_id, sub.INTERNAL_ERROR, f"the VM could not be used: {exc}",
                                debug=debug)
        if body.get("network") and self.settings.submission_network == "isolated":
            try:
                self._network(submission_id, vm, channel, debug)
            except HypervisorError as exc:
                debug(f"the network device could not be set up: {exc}")
                return self._finish(submission_id, sub.INTERNAL_ERROR, f"the VM's network could not be set up: {exc}",
                                    debug=debug)
        memory = self.settings.submission_memory_limit or max(64, pool.image.memory_mib - 64) * 1024**2
        limits = Limits(output_cap=self.settings.submission_output_cap,
                        wall=float(self.settings.submission_wall_limit), nproc=self.settings.submission_nproc,
                        file_bytes=self.settings.submission_file_limit, address_space=memory)
        run = Execution(submission_id, scenario, body, (doc.get("files") or {}).get("read_only", []), init,
                        self.project_files.load(project_id), channel, self.files, limits, debug,
                        on_execution=lambda: self._update(submission_id, status=sub.EXECUTION))
        try:
            outcome = run.run()
        except ProjectError as exc:
            debug(f"project error: {exc}")
            return self._finish(submission_id, sub.PROJECT_ERROR, str(exc), debug=debug, streams=run.streams,
                                stages=run.stages or None)
        except (HypervisorError, guestd.GuestError, OSError) as exc:
            if watch.tripped is not None:
                debug(f"disk: the overlay grew by {watch.tripped} bytes, past the limit of {watch.limit}")
                return self._finish(submission_id, sub.RUNTIME_ERROR, watch.reason(), debug=debug,
                                    streams=run.streams, stages=run.stages or None)
            if not isinstance(exc, HypervisorError):
                raise
            debug(f"the VM was lost: {exc}")
            return self._finish(submission_id, sub.INTERNAL_ERROR, f"the VM was lost: {exc}", debug=debug,
                                streams=run.streams)
        if watch.tripped is not None:     # cut after the last guest call
            debug(f"disk: the overlay grew by {watch.tripped} bytes, past the limit of {watch.limit}")
            return self._finish(submission_id, sub.RUNTIME_ERROR, watch.reason(), debug=debug,
                                streams=outcome.streams, stages=outcome.stages)
        self._finish(submission_id, outcome.status, outcome.reason, debug=debug, streams=outcome.streams,
                     stages=outcome.stages, score=outcome.score, seconds=outcome.time)

    def _network(self, submission_id: int, vm, channel, debug: DebugLog) -> None:
        """A NIC on the installation's isolated network (host only, no forward), its address set inside."""
        from hypervisor.errors import OperationFailed
        from hypervisor.microvm import nic

        config = nic.isolated_network(self.pools.host)
        address, mac = nic.address_for(config, submission_id), nic.mac_for(submission_id)
        nic.attach(vm.dom, config.name, mac)
        done = channel.exec(["python3", "-c", nic.GUEST_SETUP, mac, address, str(config.subnet().prefixlen),
                             config.address],
                            uid=0, gid=0, timeout=60)
        if done.exit_code != 0:
            raise OperationFailed(operation="configure the guest's network device",
                                  reason=(done.stderr or done.stdout)[-300:].decode(errors="replace"))
        if done.stderr:
            debug(f"network: {done.stderr.decode(errors='replace').strip()}")
        debug(f"network: {done.stdout.decode().strip()} {address}/{config.subnet().prefixlen} on {config.name} "
              f"(isolated: the host {config.address} and nothing beyond)")

    # ---- rows --------------------------------------------------------------------------------------

    def _update(self, submission_id: int, **values) -> None:
        with self.db.session() as s:
            s.execute(update(Submission).where(Submission.id == submission_id).values(**values))

    @staticmethod
    def _end_row(row: Submission, status: int, reason: str) -> None:
        row.status, row.reason, row.finished_at = status, reason[:512], utcnow()
        row.score, row.time = 0.0, 0.0 if row.time is None else row.time

    def _finish(self, submission_id: int, status: int, reason: str | None, *, debug: DebugLog | None = None,
                streams: dict | None = None, stages: dict | None = None, score: float = 0.0,
                seconds: float | None = None) -> None:
        sizes = dict(streams or {})
        if debug is not None:
            debug(f"final status {status} ({sub.NAMES.get(status)})" + (f": {reason}" if reason else ""))
            sizes["debug_log"] = self.files.save(submission_id, "debug_log", debug.data())
        with self.db.session() as s:
            row = s.get(Submission, submission_id)
            if row is None:
                return
            known = json.loads(row.streams or "{}")
            known.update({k: v for k, v in sizes.items() if v})
            row.streams = json.dumps(known)
            row.stages = json.dumps(stages) if stages else None
            row.status, row.reason, row.score = status, (reason or None) and reason[:512], score
            row.time = 0.0 if seconds is None else round(seconds, 2)
            row.finished_at = utcnow()
        self.finished(sub.ring_key(submission_id))     # committed: a woken wait reads the result
        log.info("submission %s: status %s%s", submission_id, status, f" ({reason})" if reason else "")
