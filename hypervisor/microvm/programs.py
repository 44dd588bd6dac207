"""The guest programs every template starts before its state is saved (so every clone has them).

Each entry names the program, its own virtio-serial port (a ``<channel>`` in every micro VM's XML,
after the guest agent's) and a ``build(cache_dir)`` that returns the host-built binary and the argv
that starts it in the guest (``argv[0]``: where the template copies the binary, under
``image.GUEST_CONTROL``), or None when it cannot be built (no C compiler: the program is left out).

The hook: adding a program is one line here, e.g.
``GuestProgram("oh-guest", guestd.GUEST_CHANNEL, guestd.build)`` with ``hypervisor/microvm/guestd.py``
holding the host side and ``guest/oh-guest.c`` the source (compiled by `build.compile_static`). The
template key covers every entry (name, port, binary, argv), so templates are made again when the list
changes. The template starts each program in its own session under ``image.RUN_ENV`` (stdin /dev/null,
output discarded; a program sets its own oom_score_adj, as oh-run does), its pid in
``GUEST_CONTROL/<name>.pid``; `template.Template.running` lists those still alive when the state was
saved. A pool made with ``serve=False`` copies the programs but starts none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import guestd, runport


@dataclass(frozen=True)
class GuestProgram:
    name: str
    port: str
    build: Callable[[Path], "tuple[Path, list[str]] | None"]


PROGRAMS: tuple[GuestProgram, ...] = (
    GuestProgram("oh-run", runport.RUN_CHANNEL, runport.build),
    GuestProgram("oh-guest", guestd.GUEST_CHANNEL, guestd.program),
    # the terminal port: the same binary serving only PTY sessions and commands, one connection
    # held by the terminal service (controlplane/terminal) for browser terminals and SSH
    GuestProgram("oh-pty", guestd.PTY_CHANNEL, guestd.pty_program),
)


def ports() -> list[str]:
    """The virtio-serial ports of every micro VM, in registry order."""
    return [program.port for program in PROGRAMS]
