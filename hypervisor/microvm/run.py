"""One command in a running micro VM: oh-run serving on its port, or through the guest agent.

Paths, fastest first: **served** (a request on RUN_CHANNEL, output frames and the status back; no
guest agent involved), **agent** (oh-run started one-shot by guest-exec, its records on stdin, ringing
the port when done) and **wrapper** (a shell script doing oh-run's work, for hosts without a C
compiler and for cold VMs, which have no oh-run). `execute` picks; every outcome after the program
started is a `RunResult`, and after a timeout, a cancel or a lost agent the VM is stopped through the
caller's ``stop`` before returning. Failures before the program starts raise `VmUnusable`.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..errors import AgentCommandFailed, AgentUnavailable, DomainNotFound, HypervisorError, InvalidState
from ..guest import Guest
from . import runport
from .errors import SandboxError, VmUnusable
from .image import GUEST_COMMAND, GUEST_OUTPUT, GUEST_WORKDIR, RUN_ENV
from .runport import GUEST_HELPER, RUN_CHANNEL

#: Files up to this many bytes in all go to oh-run on its stdin, beside the command (base64 in one
#: guest-exec request, well below libvirt's 4 MiB limit for a string); larger ones are written
#: through the guest agent first.
INLINE_FILES = 1024**2
#: A served run's request must be in the guest and acknowledged within this many seconds, plus one
#: per MiB of files; past it the VM is taken for broken and the run takes another.
ACK_TIMEOUT = 15.0
#: The largest output a run returns. Replies of the guest agent travel as one libvirt RPC string
#: (4 MiB at most) in base64, so the cap is enforced inside the guest, well below that.
MAX_OUTPUT_CAP = 2 * 1024**2
#: Seconds between guest-exec-status polls during a run's first second. Each poll costs the
#: guest a little CPU; under TCG 10 ms measured best (docs/sandboxes.md).
POLL = 0.01
#: After a ring the program is ending: qemu-ga still has to reap it and close its pipes, so ask
#: again after these pauses (seconds) before going back to waiting for the bell.
RING_RETRIES = (0.0, 0.002, 0.005, 0.01, 0.02, 0.05)
#: With a bell, qemu-ga is still asked this often (a lost ring costs at most this much).
BELL_FALLBACK = 0.25

# Where no C compiler was found to build oh-run, this shell wrapper does the same (slower under
# TCG: four more execs per run): ``/bin/sh -c WRAPPER oh-run <clock> <cap+1> <seed>``; only host
# values travel in argv, the user's command is the file GUEST_COMMAND.
# - the clock and the seed (octal escapes for printf) come from the host;
# - qemu-ga was made unkillable by the guest's OOM killer in the template; its children inherit
#   that, so the run gives it up;
# - the command runs in its own session; when it exits, whatever it left behind in its process
#   group is killed, so a stray background job cannot hold the output pipe open;
# - stdout and stderr share one pipe (interleaved as written); `head` caps what reaches qemu-ga
#   and `tee` keeps a copy the host reads if the run is cut short; `cat` drains the rest so the
#   program is never killed by SIGPIPE and its exit status stays real;
# - the exit status leaves on fd 3 (the wrapper's stderr), which the command does not inherit.
WRAPPER = f"""\
date -s "@$1" >/dev/null 2>&1
printf "$3" >/dev/urandom 2>/dev/null
echo 0 >/proc/self/oom_score_adj 2>/dev/null
cd {GUEST_WORKDIR} 2>/dev/null || {{ echo "rc=125" >&2; exit 125; }}
{{
  setsid /bin/sh {GUEST_COMMAND} </dev/null 2>&1 3>&- &
  wait $!
  rc=$?
  kill -9 -$! 2>/dev/null
  echo "rc=$rc" >&3
}} 3>&2 | {{ head -c "$2" | tee {GUEST_OUTPUT}; cat >/dev/null; }}
"""

_RC_RE = re.compile(rb"rc=(\d+)\s*$")


@dataclass
class RunResult:
    exit_code: int | None   # 137 when timed out or killed; None when the VM or its agent was lost
    output: bytes           # stdout and stderr interleaved as the program wrote them, capped
    timed_out: bool
    truncated: bool         # output hit the cap (caller appends a marker)
    killed: bool            # cancelled through the cancel event
    seconds: float          # the whole call, waiting for a VM included
    wait_seconds: float = 0.0   # of which waiting for an idle VM
    vm: str | None = None       # the libvirt name of the VM that ran it
    error: str | None = None    # what went wrong on the host side, if anything (exit_code is None)
    rang: bool = False          # the guest announced the end itself (not found by polling qemu-ga)


def inline_files(files: dict[str, bytes]) -> dict[str, bytes]:
    """The files that travel to oh-run on its stdin, with the command: small ones first, up to
    INLINE_FILES bytes in all. The others are written through the guest agent beforehand (three
    round trips per file, plus one per MiB)."""
    chosen: dict[str, bytes] = {}
    total = 0
    for name, data in sorted(files.items(), key=lambda item: len(item[1])):
        if total + len(data) > INLINE_FILES:
            break
        chosen[name] = data
        total += len(data)
    return chosen


def _octal(data: bytes) -> str:
    return "".join(f"\\{b:03o}" for b in data)


def wait_agent(guest: Guest, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not guest.agent_ping(timeout=1):
        if time.monotonic() > deadline:
            raise VmUnusable(f"{guest.name}: guest agent silent for {timeout} s")
        time.sleep(0.005)


def exec_plain(guest: Guest, script: str, *, args: list[str] | None = None, timeout: float) -> dict:
    """``/bin/sh -c script`` through guest-exec; the final guest-exec-status."""
    pid = guest.agent_command({"execute": "guest-exec", "arguments": {
        "path": "/bin/sh", "arg": ["-c", script, "oh", *(args or [])], "capture-output": True}}, 10)["pid"]
    status, _, _ = poll(guest, pid, time.monotonic() + timeout, None)
    if status is None:
        raise SandboxError(reason=f"{guest.name}: command did not finish within {timeout} s")
    return status


def poll(guest: Guest, pid: int, deadline: float, cancel: threading.Event | None,
         bell: socket.socket | None = None) -> tuple[dict | None, bool, bool]:
    """guest-exec-status until the process exits (its status), the deadline passes or ``cancel``
    is set (None); whether the agent answered the last poll; whether the bell rang.

    With a ``bell`` (oh-run rings RUN_CHANNEL when the run ends) qemu-ga is asked right after
    the ring and otherwise every BELL_FALLBACK seconds. Without one it is polled: each poll costs
    the guest a little CPU (see POLL); a guest too busy to answer (a fork bomb) costs at most a
    second past the deadline."""
    begun = time.monotonic()
    retries: tuple[float, ...] = ()
    answering, ever_rang = True, False
    while True:
        if bell is not None and not retries:
            rang = runport.wait_bell(bell, min(deadline, time.monotonic() + BELL_FALLBACK), cancel)
            if rang is None:       # the port closed under us: poll from now on
                bell = None
            retries = RING_RETRIES if rang else (0.0,)
            ever_rang = ever_rang or bool(rang)
        if cancel is not None and cancel.is_set():
            return None, answering, ever_rang
        if retries:
            pause, retries = retries[0], retries[1:]
            if pause and (cancel.wait(pause) if cancel is not None else time.sleep(pause)):
                return None, answering, ever_rang
        left = deadline - time.monotonic()
        try:
            status = guest.agent_command({"execute": "guest-exec-status", "arguments": {"pid": pid}},
                                         max(1.0, min(left, 2.0)))
            answering = True
        except AgentUnavailable:
            status, answering = {}, False     # keep trying until the deadline
        if status.get("exited"):
            return status, True, ever_rang
        now = time.monotonic()
        if now >= deadline or (cancel is not None and cancel.is_set()):
            return None, answering, ever_rang
        if bell is not None:
            continue
        elapsed = now - begun
        pause = POLL if elapsed < 1 else 0.02 if elapsed < 5 else 0.1
        pause = min(pause, max(0.0, deadline - now))
        if cancel is not None:
            if cancel.wait(pause):
                return None, answering, ever_rang
        else:
            time.sleep(pause)


def partial_output(guest: Guest, cap: int) -> bytes:
    """What the program wrote before it was cut short (the wrapper's copy), if the agent answers."""
    try:
        return guest.agent_file_read(GUEST_OUTPUT, limit=cap + 1, timeout=1)
    except HypervisorError:
        return b""


def execute(guest: Guest, port: socket.socket | None, files: dict[str, bytes], command: str, *,
            timeout: float, cap: int, cancel: threading.Event | None, helper: bool, served: bool,
            stop: Callable[[], None]) -> RunResult:
    """Write the files, start the program, wait, collect. The VM is running.

    ``port``: the host end of RUN_CHANNEL (or None); ``helper``: oh-run is in the guest; ``served``:
    it serves runs on ``port``. ``stop`` cuts the VM's power; it is called after a timeout, a cancel
    or a lost agent, before returning. Failures before the program starts raise VmUnusable.
    """
    if helper and served and port is not None:
        return execute_served(guest, port, files, command, timeout=timeout, cap=cap, cancel=cancel, stop=stop)
    try:
        inline = inline_files(files) if helper else {}
        for name, data in files.items():
            if name not in inline:
                guest.agent_file_write(f"{GUEST_WORKDIR}/{name}", bytes(data))
        now = time.time_ns()
        seed = os.urandom(64)
        if helper:
            records = [runport.record(b"F", name, data) for name, data in inline.items()]
            records.append(runport.record(b"C", "", command.encode() + b"\n" if command else b""))
            arguments = {"path": GUEST_HELPER, "arg": [
                str(now // 10**9), str(now % 10**9), seed.hex(), GUEST_WORKDIR, GUEST_COMMAND, GUEST_OUTPUT,
                str(cap + 1)], "input-data": base64.b64encode(b"".join(records)).decode()}
        else:
            guest.agent_file_write(GUEST_COMMAND, command.encode() + b"\n")
            arguments = {"path": "/bin/sh", "arg": [
                "-c", WRAPPER, "oh-run", f"{now // 10**9}.{now % 10**9:09d}", str(cap + 1), _octal(seed)]}
        arguments.update({"env": [f"{k}={v}" for k, v in RUN_ENV.items()], "capture-output": True})
        bell = port if helper else None
        if bell is not None and runport.drain(bell) is None:
            bell = None
        pid = guest.agent_command({"execute": "guest-exec", "arguments": arguments}, 10)["pid"]
    except AgentCommandFailed as exc:
        raise VmUnusable(str(exc)) from exc
    begun = time.monotonic()
    try:
        status, answering, rang = poll(guest, pid, begun + timeout, cancel, bell)
    except AgentCommandFailed as exc:
        # the agent forgot the process: something in the guest killed or restarted qemu-ga
        output = partial_output(guest, cap)
        stop()
        return RunResult(None, output[:cap], False, len(output) > cap, False, time.monotonic() - begun,
                         error=f"lost track of the program: {exc.context.get('reason', exc)}")
    except (DomainNotFound, InvalidState) as exc:
        stop()
        return RunResult(None, b"", False, False, False, time.monotonic() - begun,
                         error=f"the VM stopped during the run: {exc.context.get('reason', exc)}")
    if status is None:
        killed = cancel is not None and cancel.is_set()
        output = partial_output(guest, cap) if answering else b""
        stop()
        return RunResult(137, output[:cap], not killed, len(output) > cap, killed, time.monotonic() - begun)
    out = base64.b64decode(status.get("out-data", ""))
    if helper:
        exit_code = status.get("exitcode")
        if exit_code is None and status.get("signal") is not None:
            exit_code = 128 + int(status["signal"])
        error = None
    else:
        match = _RC_RE.search(base64.b64decode(status.get("err-data", "")))
        exit_code = int(match.group(1)) if match else None
        error = None if match else "no exit status from the wrapper"
    return RunResult(exit_code, out[:cap], False, len(out) > cap, False, time.monotonic() - begun, error=error,
                     rang=rang)


def execute_served(guest: Guest, port: socket.socket, files: dict[str, bytes], command: str, *, timeout: float,
                   cap: int, cancel: threading.Event | None, stop: Callable[[], None],
                   ack_timeout: float = ACK_TIMEOUT) -> RunResult:
    """A run through oh-run's port: send the request, wait for its acknowledgement (the program
    starts then), read the output frames up to the exit status. Same contract as `execute`; the
    output arrives as it is written, so a timeout keeps it without asking the guest. A pool VM that
    does not acknowledge within ``ack_timeout`` is given up for another; a caller with one VM only
    (a workspace) waits longer. An empty ``command`` runs nothing: status 0, the clock and seed set."""
    if runport.drain(port) is None:
        raise VmUnusable(f"{guest.name}: its {RUN_CHANNEL} port closed")
    now = time.time_ns()
    header = f"{now // 10**9} {now % 10**9} {os.urandom(64).hex()} {cap + 1}".encode()
    request = b"".join([runport.record(b"H", "", header), *(runport.record(b"F", n, d) for n, d in files.items()),
                        runport.record(b"C", "", command.encode() + b"\n" if command else b""), runport.record(b"E", "", b"")])
    reply = runport.Reply(cap)
    ack_by = time.monotonic() + ack_timeout + len(request) / 1024**2
    try:
        runport.send_all(port, request, ack_by, cancel)
        while not reply.acked:
            if not runport.receive(port, reply, ack_by, cancel):
                break
    except runport.Garbled as exc:
        raise VmUnusable(f"{guest.name}: oh-run answered nonsense: {exc}") from exc
    except TimeoutError:
        pass                 # cancelled, or the guest did not read: decided below
    except OSError as exc:
        raise VmUnusable(f"{guest.name}: its {RUN_CHANNEL} port failed: {exc}") from exc
    if not reply.acked:
        if cancel is not None and cancel.is_set():
            stop()
            return RunResult(137, b"", False, False, True, 0.0)
        raise VmUnusable(f"{guest.name}: oh-run did not take the run within {ack_timeout:.0f} s")
    begun = time.monotonic()
    deadline = begun + timeout
    error = None
    try:
        while reply.status is None and runport.receive(port, reply, deadline, cancel):
            pass
    except runport.Garbled as exc:
        error = f"oh-run answered nonsense: {exc}"
    except OSError as exc:
        error = f"the port of the VM failed: {exc}"
    output = bytes(reply.output)
    if reply.status is not None:
        return RunResult(reply.status, output[:cap], False, len(output) > cap, False,
                         time.monotonic() - begun, rang=True)
    stop()
    if error is None and reply.closed:
        error = "the VM stopped during the run"
    if error is not None:
        return RunResult(None, output[:cap], False, len(output) > cap, False, time.monotonic() - begun,
                         error=error)
    killed = cancel is not None and cancel.is_set()
    return RunResult(137, output[:cap], not killed, len(output) > cap, killed, time.monotonic() - begun)
