"""Runs sandbox jobs in the agent: owns one warm pool per built image and writes results back."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from sqlalchemy import select

from ..jobs import JobQueue
from ..models import Image, Sandbox, utcnow
from .sandboxes import Sandboxes, shell_line

log = logging.getLogger("openhosting.sandboxes")

KILLED_CODE = 137  # what a shell reports for SIGKILL: the VM was destroyed under the command


def pool_size(settings, slug: str) -> int:
    """Warm VMs for image `slug`: the largest OPENHOSTING_PAD_POOLS count naming the image or a pads
    language that runs in it, else OPENHOSTING_SANDBOX_POOL_SIZE."""
    from .languages import RUNNABLE

    counts = [count for name, count in settings.pad_pools.items()
              if name == slug or (name in RUNNABLE and RUNNABLE[name].image == slug)]
    return max(counts) if counts else settings.sandbox_pool_size


#: Whether templates (and, for the images that have one, each pooled clone) run the manifest's
#: `warmup` of their image. It was off while runs in clones of a template with a long warm-up
#: answered "oh-run: the host went away" or the warm-up's output: oh-run took the readable, ended
#: port of a template with no host connected for a request, and the reply it gave after 2 s waited
#: in the port for the first clone's host (fixed in oh-run.c's served loop; test_sandbox_pool).
MANIFEST_WARMUPS = True


def image_warmup(slug: str) -> tuple[str | None, bool]:
    """The manifest's warm-up of image `slug` (None for the default: an image not in the manifest,
    or one without `warmup`, or while MANIFEST_WARMUPS is off), and whether clones run it too."""
    if not MANIFEST_WARMUPS:
        return None, False
    from storage.guest import load_manifest
    from storage.errors import StorageError

    try:
        spec = load_manifest().get(slug)
    except StorageError:
        return None, False
    if spec is None or not spec.warmup:
        return None, False
    return spec.warmup.strip(), spec.warm_clones


class SandboxRunner:
    kind = "sandbox"

    def __init__(self, db, settings, sandboxes: Sandboxes, host, queue: JobQueue, drive_pool):
        self.db = db
        self.drive_pool = drive_pool
        self.settings = settings
        self.sandboxes = sandboxes
        self.host = host
        self.queue = queue
        self.pools: dict[str, object] = {}
        self._lock = threading.Lock()
        # runs going on: sandbox id -> (job id, cancel event); one watcher thread serves them all
        self._active: dict[str, tuple[int, threading.Event]] = {}
        self._active_lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    @property
    def work_root(self):
        return self.settings.state_dir / "sandbox-vms"

    def start(self) -> None:
        """Clear what an earlier agent left behind, then warm a pool for every built image."""
        from hypervisor.microvm import purge

        removed = purge(self.host, self.work_root)
        if removed:
            log.info("removed %d sandbox VM(s) left by an earlier agent", removed)
        with self.db.session() as s:
            slugs = list(s.scalars(select(Image.slug)))
        for slug in slugs:
            self.pool(slug)

    def pool(self, slug: str):
        from hypervisor.microvm import SandboxImage, WarmPool
        from hypervisor.microvm.image import DEFAULT_WARMUP
        from .submission_stages import TEMPLATE_SETUP

        with self._lock:
            if slug in self.pools:
                return self.pools[slug]
            with self.db.session() as s:
                image = s.get(Image, slug)
                if image is None:
                    return None
                # the same pools run submissions: their layout (the user, its workspace and runtime
                # directories) is made once in the template
                # and every clone runs the language's warm-up before it joins the pool: with the
                # guest's address space randomisation off (pool templates), the run's compiler finds
                # QEMU's translations made (C: 1.7 s -> 0.4-0.6 s under TCG)
                language, warm_clones = image_warmup(slug)
                warmup = (language or DEFAULT_WARMUP) + "\n" + TEMPLATE_SETUP
                spec = SandboxImage(slug=slug, base=self.drive_pool.path(image.drive), kernel=Path(image.kernel),
                                    initramfs=Path(image.initramfs), cmdline=image.cmdline,
                                    memory_mib=image.memory_mib, warmup=warmup,
                                    clone_warmup=language if language and warm_clones else DEFAULT_WARMUP)
            work = self.work_root / slug
            for directory in (self.work_root, work):
                # QEMU (another user) must reach the overlays below: traversable, whatever the umask
                directory.mkdir(exist_ok=True)
                directory.chmod(0o711)
            size = pool_size(self.settings, slug)
            pool = WarmPool(self.host, spec, work, size=size, fillers=self.settings.sandbox_fillers or None)
            pool.start()
            self.pools[slug] = pool
            log.info("warm pool for image %s started (%d VMs)", slug, size)
            return pool

    def close(self) -> None:
        for pool in list(self.pools.values()):
            try:
                pool.close()
            except Exception:
                log.exception("closing a warm pool")

    def run(self, job) -> None:
        """Run one sandbox job; whatever happens, the sandbox ends `terminated` (never stuck running)."""
        try:
            self._run(job)
        except Exception:
            log.exception("sandbox %s failed inside the agent", job.target)
            self.sandboxes.finish(job.target, return_code=None,
                                  output=b"openhosting: the sandbox could not be run (internal error)\n",
                                  timed_out=False, truncated=False, killed=False)
            self.queue.finish(job.id, error="internal error")

    def _run(self, job) -> None:
        with self.db.session() as s:
            box = s.get(Sandbox, job.target)
            state = None if box is None else (box.status, box.killed, box.image, box.cmd, box.timeout)
            if box is not None and box.status == "running":
                box.started_at = utcnow()
                queued_for = (box.started_at - _aware(box.created_at)).total_seconds()
        if state is None or state[0] != "running":
            self.queue.finish(job.id)
            return
        _, killed, slug, cmd, timeout = state
        if killed:
            self.sandboxes.finish(job.target, return_code=KILLED_CODE, output=b"", timed_out=False,
                                  truncated=False, killed=True)
            self.queue.finish(job.id)
            return
        pool = self.pool(slug)
        if pool is None:
            self.sandboxes.finish(job.target, return_code=None, output=b"image is no longer installed\n",
                                  timed_out=False, truncated=False, killed=False)
            self.queue.finish(job.id)
            return
        cancel = self._watch(job.id, job.target)
        try:
            result = pool.run(self.sandboxes.uploads.load(job.target), shell_line(json.loads(cmd)),
                              timeout=timeout, output_cap=self.settings.sandbox_output_cap, cancel=cancel)
        finally:
            with self._active_lock:
                self._active.pop(job.target, None)
        log.info("sandbox %s: queued %.3f s, waited for a VM %.3f s, ran %.3f s", job.target, queued_for,
                 getattr(result, "wait_seconds", 0.0) or 0.0, result.seconds)
        code = KILLED_CODE if (result.timed_out or result.killed) and result.exit_code is None else result.exit_code
        output = result.output
        if code is None and getattr(result, "error", None):
            output += f"\n[openhosting: the sandbox VM was lost: {result.error}]\n".encode()
        self.sandboxes.finish(job.target, return_code=code, output=output, timed_out=result.timed_out,
                              truncated=result.truncated, killed=result.killed)
        self.queue.finish(job.id)

    #: How often the watcher looks for DELETEs of running sandboxes (one query for all of them).
    WATCH_INTERVAL = 0.2
    #: How often it renews the leases of their jobs.
    LEASE_RENEWAL = 5.0

    def _watch(self, job_id: int, sandbox_id: str) -> threading.Event:
        """Register a run with the watcher (started on first use); the event is set on DELETE."""
        cancel = threading.Event()
        with self._active_lock:
            self._active[sandbox_id] = (job_id, cancel)
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch_loop, name="sandbox-watch", daemon=True)
                self._watcher.start()
        return cancel

    def _watch_loop(self) -> None:
        """While runs go on: notice a DELETE (the killed flag) and keep their jobs' leases fresh."""
        renewed_at = time.monotonic()
        while True:
            time.sleep(self.WATCH_INTERVAL)
            with self._active_lock:
                active = dict(self._active)
            if not active:
                continue
            try:
                with self.db.read_session() as s:
                    killed = set(s.scalars(select(Sandbox.id).where(Sandbox.id.in_(list(active)),
                                                                    Sandbox.killed.is_(True))))
                for sandbox_id in killed:
                    active[sandbox_id][1].set()
                if time.monotonic() - renewed_at >= self.LEASE_RENEWAL:
                    renewed_at = time.monotonic()
                    for job_id, _ in active.values():
                        self.queue.progress(job_id, 0)
            except Exception:
                log.exception("watching running sandboxes failed; retrying")


def _aware(when):
    import datetime as dt

    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
