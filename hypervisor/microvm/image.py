"""What a lightweight VM boots from (`SandboxImage`) and the fixed layout of its guest.

The guest layout is shared by the template (which prepares it once, before its state is saved),
the run paths and the guest programs' argv: a tmpfs directory GUEST_CONTROL for the programs and
the run's own files, a working directory GUEST_WORKDIR for a sandbox run's files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The owner kind of sandbox VMs (template, pooled clones, cold runs) in their libvirt metadata.
KIND = "sandbox"
#: The owner kind of long-lived workspace VMs (`workspace`): never touched by the sandbox purge.
WORKSPACE_KIND = "workspace"
#: Where a run's files land in the guest, and where the pool keeps its own few files.
GUEST_WORKDIR = "/sandbox"
GUEST_CONTROL = "/run/oh"
GUEST_COMMAND = f"{GUEST_CONTROL}/command"
GUEST_OUTPUT = f"{GUEST_CONTROL}/output"
#: The environment of a run and of the guest programs (qemu-ga replaces the whole environment).
#: Unbuffered Python keeps stdout and stderr in the order the program wrote them, and keeps the
#: output written before a timeout.
RUN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
#: Run by the template before its state is saved (page cache) and by every clone before it joins
#: the pool (under TCG, QEMU's translation cache starts empty in every new process): Python's start,
#: and, in the same process, a file and a directory made, changed and removed on the root file
#: system, so the kernel's paths that lay a submission's files are translated (12 files: 0.047 s ->
#: 0.025 s in a fresh clone).
DEFAULT_WARMUP = ("command -v python3 >/dev/null && python3 -c 'import os, sys; p = \"/var/tmp/.oh-warm\"; "
                  "f = open(p, \"w\"); f.write(p); f.close(); os.chmod(p, 0o600); os.utime(p, (0, 0)); "
                  "os.unlink(p); os.mkdir(p); os.rmdir(p)'; true")


@dataclass(frozen=True)
class SandboxImage:
    """What a sandbox VM boots from: the image's read-only raw root file system (``base``), the
    uncompressed kernel and boot initramfs, the kernel command line, and the guest's memory."""
    slug: str
    base: Path
    kernel: Path
    initramfs: Path
    cmdline: str
    memory_mib: int
    warmup: str = DEFAULT_WARMUP
    #: What each pooled clone runs (in /tmp, through oh-run) before it joins the pool: under TCG,
    #: QEMU's translation cache starts empty in every new QEMU, and a clone's warm-up fills it with
    #: what the run will execute (at the same addresses: pool templates turn the guest's address
    #: randomisation off). The agent gives a language image its compiler's hello world here.
    clone_warmup: str = DEFAULT_WARMUP
