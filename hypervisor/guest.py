"""Verbs on one domain (nova's `guest.py` shape): lifecycle, state, counters, VNC, guest agent.

A `Guest` wraps one `virDomain` of one connection; get it from `Host` (which checks ownership) and do
not keep it across a `ConnectionLost`: look the domain up again, it is cheap.

Every libvirt error leaves as a `HypervisorError` (see `errors.translate`).
"""

from __future__ import annotations

import base64
import enum
import json
import time
from dataclasses import dataclass
from typing import NamedTuple

import libvirt
import libvirt_qemu

from .devices import VNC_PASSWORD_MAX
from .domain import DomainConfig
from .errors import (AgentCommandFailed, AgentError, AgentTimeout, AgentUnavailable, ConnectionLost, DomainNotFound,
                     GuestExecTimeout, HypervisorError, InvalidConfig, InvalidState, is_connection_error,
                     translate)
from .slots import DeviceSlot, nic_index


class ApiState(enum.StrEnum):
    """The API's server states (cloud-api.md)."""
    ACTIVE = "active"
    STOPPED = "stopped"
    PAUSED = "paused"
    DUMPED = "dumped"     # memory state saved to a file (save / managed save)
    DEAD = "dead"         # crashed or failed: QEMU is gone without a clean shutdown


#: THE table from libvirt's (state, reason) to the API state. ``None`` as reason is the state's
#: default; a specific reason overrides it. Nothing else in the project maps states.
LIBVIRT_STATE: dict[tuple[int, int | None], ApiState] = {
    (libvirt.VIR_DOMAIN_NOSTATE, None): ApiState.ACTIVE,
    (libvirt.VIR_DOMAIN_RUNNING, None): ApiState.ACTIVE,
    (libvirt.VIR_DOMAIN_BLOCKED, None): ApiState.ACTIVE,
    (libvirt.VIR_DOMAIN_PAUSED, None): ApiState.PAUSED,
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_CRASHED): ApiState.DEAD,
    (libvirt.VIR_DOMAIN_SHUTDOWN, None): ApiState.ACTIVE,   # shutting down: still running
    (libvirt.VIR_DOMAIN_SHUTOFF, None): ApiState.STOPPED,
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SAVED): ApiState.DUMPED,
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED): ApiState.DEAD,
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_FAILED): ApiState.DEAD,
    (libvirt.VIR_DOMAIN_CRASHED, None): ApiState.DEAD,
    (libvirt.VIR_DOMAIN_PMSUSPENDED, None): ApiState.PAUSED,
}


def api_state(state: int, reason: int | None = None) -> ApiState:
    return LIBVIRT_STATE.get((state, reason)) or LIBVIRT_STATE.get((state, None), ApiState.DEAD)


class InterfaceCounters(NamedTuple):
    """Bytes and packets as the guest sees them (libvirt swaps the tap's rx/tx for us)."""
    rx: int
    tx: int
    rx_packets: int
    tx_packets: int


class BlockCounters(NamedTuple):
    read_bytes: int
    read_requests: int
    write_bytes: int
    write_requests: int


class ExecResult(NamedTuple):
    exit_code: int | None     # None when a signal ended the process
    stdout: bytes
    stderr: bytes
    signal: int | None = None
    truncated: bool = False   # qemu-ga caps each stream at 16 MiB


@dataclass(frozen=True)
class VncAddress:
    listen: str
    port: int


#: virDomain methods that only read, so they are retried once after a reconnect.
_IDEMPOTENT = frozenset({"state", "isActive", "isPersistent", "hasManagedSaveImage", "XMLDesc", "interfaceStats",
                         "blockStats", "setMetadata", "setSchedulerParametersFlags", "updateDeviceFlags"})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Guest:
    # One guest-file-write/read moves base64 in one JSON message. Measured here (QEMU 7.2, TCG): a
    # 100 KB write answers in 60 ms, a 200 KB one stalls the agent until the timeout; 48 KiB slices
    # move 300 KB in 0.3 s.
    FILE_CHUNK = 48 * 1024

    def __init__(self, domain: libvirt.virDomain, *, connection=None, agent=None):
        """``connection`` (a `Connection`) lets the guest find its domain again after libvirtd
        restarts; ``agent`` stands in for `libvirt_qemu.qemuAgentCommand` (tests fake qemu-ga)."""
        self._dom = domain
        self._connection = connection
        self._agent = agent or libvirt_qemu.qemuAgentCommand
        self.name = domain.name()
        self.uuid = domain.UUIDString()

    def __repr__(self) -> str:
        return f"Guest({self.name!r})"

    def _call(self, operation: str, method: str, *args, **context):
        """Call ``virDomain.<method>(*args)``, translating errors.

        When the connection turns out dead (libvirtd restarted), the handle is looked up again on a
        fresh connection; a read (a method in `_IDEMPOTENT`) is then retried once, a verb is not,
        since it may or may not have happened: it raises ConnectionLost and the caller decides.
        """
        for attempt in (1, 2):
            try:
                return getattr(self._dom, method)(*args)
            except libvirt.libvirtError as exc:
                if attempt == 1 and is_connection_error(exc) and self._reconnect() and method in _IDEMPOTENT:
                    continue
                raise translate(exc, domain=self.name, operation=operation, **context) from exc

    def _reconnect(self) -> bool:
        if self._connection is None:
            return False
        self._connection.invalidate()
        try:
            self._dom = self._connection.get().lookupByUUIDString(self.uuid)
        except (libvirt.libvirtError, HypervisorError):
            return False
        return True

    # --- lifecycle -------------------------------------------------------------------------
    def start(self, *, paused: bool = False) -> None:
        """Boot a defined, stopped domain (``paused``: create it with its CPUs stopped)."""
        self._call("start", "createWithFlags", libvirt.VIR_DOMAIN_START_PAUSED if paused else 0)

    def destroy(self) -> None:
        """Cut the power at once (the API's ``stop``). A persistent domain stays defined."""
        self._call("destroy", "destroyFlags", 0)

    def shutdown(self) -> None:
        """Press the ACPI power button; returns at once, the guest decides when to power off."""
        self._call("shutdown", "shutdownFlags", libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)

    def agent_shutdown(self) -> None:
        """Ask the guest agent to power off (`guest-shutdown`); needs a running qemu-ga."""
        self._call("shutdown", "shutdownFlags", libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT)

    def reset(self) -> None:
        """Hardware reset: the guest reboots without shutting down."""
        self._call("reset", "reset", 0)

    def suspend(self) -> None:
        self._call("suspend", "suspend")

    def resume(self) -> None:
        self._call("resume", "resume")

    def save(self, path: str, *, paused: bool = False) -> None:
        """Write memory and device state to ``path`` and stop the domain (a transient one is gone).

        ``paused``: a later restore leaves the CPUs stopped (a warm pool resumes them on demand).
        """
        self._call("save", "saveFlags", path, None, libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else 0)

    def undefine(self) -> None:
        """Forget a persistent definition (with its managed-save image); a running domain becomes
        transient and keeps running."""
        flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        self._call("undefine", "undefineFlags", flags)

    def remove(self) -> None:
        """Destroy if running, then undefine if persistent; absent afterwards, whatever it was.
        Safe to repeat, so it is retried once across a libvirtd restart."""
        for attempt in (1, 2):
            try:
                if self.is_active():
                    try:
                        self.destroy()
                    except InvalidState:
                        pass    # it stopped by itself meanwhile
                if self._call("remove", "isPersistent"):
                    self.undefine()
                return
            except DomainNotFound:
                return
            except ConnectionLost:
                if attempt == 2:
                    raise

    # --- state ------------------------------------------------------------------------------
    def libvirt_state(self) -> tuple[int, int]:
        state, reason = self._call("read state", "state", 0)
        return state, reason

    def state(self) -> ApiState:
        """The API state, through `LIBVIRT_STATE`."""
        state, reason = self.libvirt_state()
        if state == libvirt.VIR_DOMAIN_SHUTOFF and self._call("read state", "hasManagedSaveImage", 0):
            return ApiState.DUMPED
        return api_state(state, reason)

    def is_active(self) -> bool:
        return bool(self._call("read state", "isActive"))

    def is_persistent(self) -> bool:
        return bool(self._call("read state", "isPersistent"))

    def xml(self, *, inactive: bool = False, secure: bool = False) -> str:
        flags = (libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0) | (
            libvirt.VIR_DOMAIN_XML_SECURE if secure else 0)
        return self._call("read XML", "XMLDesc", flags)

    def config(self, *, inactive: bool = False) -> DomainConfig:
        """The domain parsed back into a `DomainConfig` (live XML unless ``inactive``)."""
        return DomainConfig.from_xml(self.xml(inactive=inactive, secure=True))

    # --- settings that may change while active ----------------------------------------------
    def set_title(self, title: str) -> None:
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if self.is_active() else 0)
        if not self.is_persistent():
            flags &= ~libvirt.VIR_DOMAIN_AFFECT_CONFIG
        self._call("set title", "setMetadata", libvirt.VIR_DOMAIN_METADATA_TITLE, title, None, None, flags)

    def set_cpu(self, shares: int, global_quota: int, global_period: int = 100_000) -> None:
        """Change the cgroup CPU controls (see `defaults.cpu_tune`) live and in the definition."""
        params = {"cpu_shares": shares, "global_period": global_period, "global_quota": global_quota}
        self._call("set cpu", "setSchedulerParametersFlags", params, self._affect())

    def set_vnc_password(self, password: str | None) -> None:
        """Change (or with None, clear) the VNC password of a domain with VNC, live and in the definition."""
        if password is not None and len(password) > VNC_PASSWORD_MAX:
            raise InvalidConfig(reason=f"VNC password longer than {VNC_PASSWORD_MAX} characters")
        graphics = self.config().vnc()
        if graphics is None:
            raise InvalidState(domain=self.name, reason="it has no VNC server")
        graphics.passwd = password
        if graphics.autoport:
            graphics.port = -1
        self._call("set VNC password", "updateDeviceFlags", graphics.to_xml(), self._affect())

    def _affect(self) -> int:
        flags = 0
        if self.is_active():
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        if self.is_persistent():
            flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
        return flags

    # --- counters and VNC ---------------------------------------------------------------------
    def interface_stats(self) -> dict[int, InterfaceCounters]:
        """Counters per NIC index (``nic:N``) of a running domain. NICs without a host-side device
        (user-mode networking) have none and are left out."""
        result: dict[int, InterfaceCounters] = {}
        for position, nic in enumerate(self.config().interfaces):
            device = nic.target_dev or nic.mac
            if not device or nic.type == "user":
                continue
            rx_bytes, rx_packets, _re, _rd, tx_bytes, tx_packets, _te, _td = self._call(
                "read interface counters", "interfaceStats", device)
            index = nic_index(nic.alias)
            result[position if index is None else index] = InterfaceCounters(
                rx_bytes, tx_bytes, rx_packets, tx_packets)
        return result

    def interface_totals(self) -> InterfaceCounters:
        """The API's ``rx``, ``tx``, ``rx:packets``, ``tx:packets``: the sum over all NICs."""
        return InterfaceCounters(*(sum(c[i] for c in self.interface_stats().values()) for i in range(4)))

    def block_stats(self) -> dict[str, BlockCounters]:
        """Counters per disk of a running domain, keyed by API device name (``ide:0:0``) where the
        disk has one, else by its target (``vda``)."""
        result: dict[str, BlockCounters] = {}
        for disk in self.config().disks:
            if not disk.source:
                continue        # an empty CD-ROM tray has no block backend
            rd_req, rd_bytes, wr_req, wr_bytes, _errs = self._call(
                "read block counters", "blockStats", disk.target)
            slot = DeviceSlot.from_alias(disk.alias)
            result[str(slot) if slot else disk.target] = BlockCounters(rd_bytes, rd_req, wr_bytes, wr_req)
        return result

    def vnc_address(self) -> VncAddress | None:
        """Where the running VNC server listens (the port libvirt chose), or None without VNC."""
        graphics = DomainConfig.from_xml(self.xml()).vnc()
        if graphics is None or graphics.port is None or graphics.port < 0:
            return None
        return VncAddress(listen=graphics.listen or "127.0.0.1", port=graphics.port)

    def console_log(self) -> str | None:
        """The file that holds ttyS0's output, if the console is logged."""
        for serial in self.config(inactive=not self.is_active()).serials:
            return serial.log_file or (serial.source_path if serial.type == "file" else None)
        return None

    # --- guest agent ---------------------------------------------------------------------------
    def agent_command(self, command: dict | str, timeout: float = 5):
        """Send one QMP command to qemu-ga and return its ``return`` value.

        Through libvirt, not qemu.qmp: libvirtd holds the agent channel's only connection (and
        resynchronises it with guest-sync), so there is no socket for another client to open.

        ``timeout`` is in seconds (libvirt counts whole seconds; at least 1). Raises AgentUnavailable
        (no channel, not connected), AgentTimeout, AgentCommandFailed (the agent said no).
        """
        text = command if isinstance(command, str) else json.dumps(command)
        name = json.loads(text).get("execute", "?")
        seconds = max(1, int(round(timeout)))
        try:
            reply = self._agent(self._dom, text, seconds, 0)
        except libvirt.libvirtError as exc:
            if is_connection_error(exc):
                self._reconnect()
            raise translate(exc, domain=self.name, operation=name, command=name, timeout=seconds) from exc
        if reply is None:
            raise AgentUnavailable(domain=self.name, reason="empty reply")
        data = json.loads(reply)
        if "error" in data:
            raise AgentCommandFailed(domain=self.name, command=name,
                                     reason=data["error"].get("desc", str(data["error"])))
        return data.get("return")

    def agent_ping(self, timeout: float = 1) -> bool:
        """True when qemu-ga answers `guest-ping` now; False when it is not (yet) there."""
        try:
            self.agent_command({"execute": "guest-ping"}, timeout)
            return True
        except AgentUnavailable:
            return False

    def wait_for_agent(self, timeout: float = 60, interval: float = 0.05) -> float:
        """Poll `guest-ping` until the agent answers; returns the seconds waited, or raises AgentTimeout."""
        start = time.monotonic()
        while True:
            if self.agent_ping(timeout=1):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AgentTimeout(domain=self.name, timeout=timeout)
            if not self.is_active():
                raise InvalidState(domain=self.name, reason="stopped while waiting for its guest agent")
            time.sleep(interval)

    def agent_exec(self, path: str, args: list[str] | tuple[str, ...] = (), input_data: bytes | None = None,
                   env: dict[str, str] | None = None, timeout: float = 60) -> ExecResult:
        """Run ``path args…`` in the guest and wait for it: `guest-exec`, then `guest-exec-status`
        until it exits. qemu-ga has no timeout of its own; past ``timeout`` this raises
        GuestExecTimeout and the process keeps running in the guest (destroy the VM to end it).
        Pass code as files (`agent_file_write`), not in ``args`` (the guest's argv limit applies).
        """
        arguments: dict = {"path": path, "arg": list(args), "capture-output": True}
        if input_data is not None:
            arguments["input-data"] = _b64(input_data)
        if env:
            arguments["env"] = [f"{k}={v}" for k, v in env.items()]
        deadline = time.monotonic() + timeout
        pid = self.agent_command({"execute": "guest-exec", "arguments": arguments}, min(timeout, 30))["pid"]
        delay = 0.002
        while True:
            left = deadline - time.monotonic()
            status = self.agent_command({"execute": "guest-exec-status", "arguments": {"pid": pid}},
                                        max(1.0, min(left, 10)))
            if status.get("exited"):
                return ExecResult(
                    exit_code=status.get("exitcode"),
                    stdout=base64.b64decode(status.get("out-data", "")),
                    stderr=base64.b64decode(status.get("err-data", "")),
                    signal=status.get("signal"),
                    truncated=bool(status.get("out-truncated") or status.get("err-truncated")))
            if time.monotonic() >= deadline:
                raise GuestExecTimeout(domain=self.name, path=path, timeout=timeout, pid=pid)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.05)

    def agent_file_write(self, path: str, data: bytes, *, mode: str = "w", timeout: float = 10) -> None:
        """Write ``data`` to ``path`` in the guest (created or truncated with the default ``mode``)."""
        handle = self.agent_command({"execute": "guest-file-open", "arguments": {"path": path, "mode": mode}},
                                    timeout)
        try:
            view = memoryview(data)
            for offset in range(0, len(view), self.FILE_CHUNK) if len(view) else ():
                chunk = bytes(view[offset:offset + self.FILE_CHUNK])
                self.agent_command({"execute": "guest-file-write",
                                    "arguments": {"handle": handle, "buf-b64": _b64(chunk)}}, timeout)
        finally:
            self.agent_command({"execute": "guest-file-close", "arguments": {"handle": handle}}, timeout)

    def agent_file_read(self, path: str, *, limit: int = 64 * 1024**2, timeout: float = 10) -> bytes:
        """Read a file from the guest, at most ``limit`` bytes."""
        handle = self.agent_command({"execute": "guest-file-open", "arguments": {"path": path, "mode": "r"}},
                                    timeout)
        parts: list[bytes] = []
        size = 0
        try:
            while size < limit:
                reply = self.agent_command({"execute": "guest-file-read", "arguments": {
                    "handle": handle, "count": min(self.FILE_CHUNK, limit - size)}}, timeout)
                chunk = base64.b64decode(reply.get("buf-b64", ""))
                parts.append(chunk)
                size += len(chunk)
                if reply.get("eof") or not chunk:
                    break
        finally:
            self.agent_command({"execute": "guest-file-close", "arguments": {"handle": handle}}, timeout)
        return b"".join(parts)

    def agent_set_time(self, now: float | None = None) -> None:
        """Set the guest clock to the host's (after every restore: clones share a stale clock)."""
        now = time.time() if now is None else now
        seconds = int(now)
        self._call("guest-set-time", "setTime", {"seconds": seconds, "nseconds": int((now - seconds) * 1e9)}, 0,
                   command="guest-set-time", timeout="?")


__all__ = ["ApiState", "LIBVIRT_STATE", "api_state", "Guest", "InterfaceCounters", "BlockCounters",
           "ExecResult", "VncAddress", "AgentError", "HypervisorError"]
