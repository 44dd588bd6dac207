"""Lightweight VMs on libvirt: a template per image, clones restored from its saved state, a warm
pool of them for sandbox runs, and (`workspace`) long-lived VMs that stop to disk and resume.

    image ──boot once, start the guest programs, warm up──► template VM ──suspend, migrate to a file──►
        template state + frozen template overlay (template.qcow2) [+ template.ram]
    template state ──createXML(-incoming defer, paused) + migrate-incoming fd──► clone VM
        (own name, uuid, genid, overlay clone.qcow2 → template.qcow2 → base raw), host end of its
        run port connected
    clone ──resume, warm up, suspend──► idle (paused) in the pool
    run(): take an idle clone ─ resume ─ one request on the run port ─ output and status ─ destroy

Modules, one job each (docs/sandboxes.md has the measurements and the reasons):

- `image`: `SandboxImage` and the guest's fixed layout; `errors`: the exceptions.
- `build`: guest programs compiled on the host (``guest/*.c``, static, cached by source hash).
- `programs`: the registry of guest programs the template copies in and starts before its state is
  saved, each on its own virtio-serial port. **The hook**: a new program is one entry in
  `programs.PROGRAMS`, ``GuestProgram(name, port, build)`` where ``build(cache_dir)`` returns the
  binary and the argv that starts it (``argv[0]``: its path in the guest), e.g. oh-guest on
  ``org.openhosting.guest`` with its host side in ``guestd.py``.
- `qemu`: monitor commands, saving/loading a state through a file, RAM in a file, QEMU's RSS.
- `vmxml`: domain XML (booting, or a clone of saved XML) and the bounded transient start.
- `template`: boot once, RAM file, guest programs, save state (`Templates.ensure`).
- `clone`: a VM from a saved state (the -incoming/migrate-incoming path).
- `pool`: idle clones, fillers, reaper (`ClonePool`); `sandbox`: `WarmPool`, its runs (served,
  agent, wrapper), cold and floor runs.
- `runport`: the host side of oh-run's protocol on ``org.openhosting.run``; `run`: one command in a
  running VM, by that port or the guest agent.
- `purge`: cleanup of sandbox VMs after a crash; `workspace`: long-lived workspace VMs; `spares`:
  QEMUs started ahead for workspace creates and resumes; `ws_exec`: a workspace exec's run port.

Ownership: every VM is a domain of this installation with an owner kind in its metadata:
``sandbox`` (templates, pooled clones, cold runs: `purge` removes them at agent start) or
``workspace`` (never touched by the sandbox pool's purge or reaper; the server reconciler only
looks at kind ``server``).
"""

from .errors import PoolBroken, PoolClosed, PoolTimeout, SandboxError, TemplateFailed
from .image import GUEST_WORKDIR, KIND, SandboxImage
from .purge import purge, purge_workspaces
from .run import INLINE_FILES, MAX_OUTPUT_CAP, RunResult
from .runport import RUN_CHANNEL
from .sandbox import WarmPool

__all__ = ["SandboxImage", "RunResult", "WarmPool", "purge", "purge_workspaces", "SandboxError", "PoolClosed", "PoolTimeout",
           "PoolBroken", "TemplateFailed", "GUEST_WORKDIR", "MAX_OUTPUT_CAP", "KIND", "INLINE_FILES",
           "RUN_CHANNEL"]
