"""The agent: one long-lived process per host that runs the durable jobs.

It claims jobs from the database, runs each kind through its runner, and on start requeues what an
earlier agent process on this host left running. Later capabilities (libvirt events, reconciliation,
the sandbox pool) register here as runners and periodic tasks.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Callable, Protocol

from .app import Services, build_services
from .config import Settings
from .doorbell import Bell
from .jobs import JobQueue
from .services.imaging import ImagingRunner
from .services.reconcile import Reconciler
from .services.sandbox_runner import SandboxRunner

log = logging.getLogger("openhosting.agent")


class Runner(Protocol):
    kind: str

    def run(self, job) -> None: ...


class Agent:
    def __init__(self, services: Services, workers: int | None = None):
        self.services = services
        self.queue = JobQueue(services.db)
        self.runners: dict[str, Runner] = {}
        self.periodic: list[tuple[float, Callable[[], None]]] = []
        self.stopping = threading.Event()
        self.wake = Bell()       # the API's doorbell and every claim ring it
        self.workers = workers or services.settings.agent_workers
        self.register(ImagingRunner(services.db, services.pool, self.queue, services.settings.imaging_rate))
        self.sandboxes = SandboxRunner(services.db, services.settings, services.sandboxes,
                                       services.servers.substrate.host, self.queue, services.pool)
        self.register(self.sandboxes)
        self.workspaces = None
        face = services.workspaces_face
        if face is not None:
            from .services.workspace_runner import WorkspaceRunner

            self.workspaces = WorkspaceRunner(services.db, services.settings, face.workspaces,
                                              services.servers.substrate.host, self.queue, services.pool)
            self.register(self.workspaces)
            self.every(services.settings.workspace_timer_interval, self.workspaces.timers)
        self.submissions = None
        if face is not None and getattr(face, "submissions", None) is not None:
            from .services.submission_runner import SubmissionRunner

            self.submissions = SubmissionRunner(services.db, services.settings, face.submissions.files,
                                                face.projects.files, self.sandboxes, self.queue.owner,
                                                bell=self.wake, finished=face.submissions.finished)

    def register(self, runner: Runner) -> None:
        self.runners[runner.kind] = runner

    def every(self, seconds: float, task: Callable[[], None]) -> None:
        self.periodic.append((seconds, task))

    #: Seconds between idle looks at the job table of the workers other than the first: the API rings
    #: the doorbell for every job it queues and each claim rings the bell for the others, so only the
    #: first worker polls at `job_poll_interval` (for jobs queued without a ring).
    IDLE_POLL = 5.0

    def _work(self, index: int = 0) -> None:
        poll = self.services.settings.job_poll_interval
        if index:
            poll = max(poll, self.IDLE_POLL)
        while not self.stopping.is_set():
            seen = self.wake.seen()
            try:
                job = self.queue.claim(list(self.runners))
            except Exception:
                log.exception("claiming a job failed")
                job = None
            if job is None:
                self.wake.wait(seen, poll)
                continue
            self.wake.ring()     # there may be more: the idle workers look too
            try:
                self.runners[job.kind].run(job)
            except Exception:
                log.exception("job %s (%s) crashed", job.id, job.kind)
                self.queue.finish(job.id, error="internal error in the agent")

    def _tick(self, seconds: float, task: Callable[[], None]) -> None:
        while not self.stopping.wait(seconds):
            try:
                task()
            except Exception:
                log.exception("periodic task %s failed", getattr(task, "__name__", task))

    def _watch(self) -> None:
        """Reconcile servers on every libvirt event (debounced) and at least every few seconds."""
        import queue

        substrate = self.services.servers.substrate
        reconciler = Reconciler(self.services.servers, substrate)
        events: queue.Queue = queue.Queue(maxsize=10_000)
        subscribed = False
        while not self.stopping.is_set():
            try:
                if not subscribed:
                    substrate.host.connection.get()
                    substrate.host.connection.unsubscribe(events)
                    substrate.host.connection.subscribe(events)
                    subscribed = True
                reconciler.run_once()
            except Exception:
                log.exception("reconciling servers failed; retrying")
                subscribed = False
                self.stopping.wait(2)
                continue
            try:
                deadline = time.monotonic() + self.services.settings.reconcile_interval
                while not substrate.concerns(events.get(timeout=max(0.0, deadline - time.monotonic()))):
                    pass         # a sandbox VM's comings and goings are no server's business
                self.stopping.wait(0.1)  # let a burst of events settle
                while not events.empty():
                    events.get_nowait()
            except queue.Empty:
                pass

    def run(self) -> None:
        from hypervisor.connection import register_event_loop

        from .doorbell import listen

        register_event_loop()  # before the first libvirt connection of this process
        listen(self.services.settings.run_dir / "agent.sock", self.wake)
        try:
            self.sandboxes.start()
        except Exception:
            log.exception("starting the sandbox pools failed; sandbox runs will start them on demand")
        recovered = self.queue.recover_own()
        if recovered:
            log.info("requeued %d job(s) left running by an earlier agent", recovered)
        if self.workspaces is not None:
            try:
                self.workspaces.reconcile()  # before any job runs: rows against the VMs that exist
            except Exception:
                log.exception("reconciling workspaces failed; the timers retry it")
        if self.submissions is not None:
            try:
                self.submissions.reconcile()  # before any submission runs: what a dead agent left
            except Exception:
                log.exception("reconciling submissions failed")
            self.submissions.start()
        threads = [threading.Thread(target=self._work, args=(i,), name=f"jobs-{i}", daemon=True)
                   for i in range(self.workers)]
        threads += [threading.Thread(target=self._tick, args=p, daemon=True) for p in self.periodic]
        threads.append(threading.Thread(target=self._watch, name="reconcile", daemon=True))
        for t in threads:
            t.start()
        log.info("agent running (%s), job kinds: %s", self.queue.owner, ", ".join(self.runners))
        self.stopping.wait()
        self.wake.set()
        if self.submissions is not None:
            self.submissions.close()
        self.sandboxes.close()


def main(settings: Settings | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    agent = Agent(build_services(settings or Settings.from_env()))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stopping.set())
    agent.run()
