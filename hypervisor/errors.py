"""Errors of the hypervisor layer, and the one place where libvirt's errors become them.

Every public call in `hypervisor/` raises only `HypervisorError` subclasses; callers never see
`libvirt.libvirtError`. Messages come from a template on the class filled with keyword context, so a
caller can log `exc.context` and map the class to an HTTP status without parsing text. The libvirt
message, when there is one, is kept in `context["reason"]` for logs; it is not meant for API clients.
"""

from __future__ import annotations

import contextlib

import libvirt


class HypervisorError(Exception):
    template = "hypervisor error: {reason}"

    def __init__(self, template: str | None = None, **context):
        self.context = context
        try:
            self.message = (template or self.template).format(**context)
        except (KeyError, IndexError):
            self.message = f"{type(self).__name__}: {context}"
        super().__init__(self.message)


class ConnectionFailed(HypervisorError):
    template = "cannot connect to {uri}: {reason}"


class ConnectionLost(HypervisorError):
    template = "connection to libvirt lost: {reason}"


class InvalidConfig(HypervisorError):
    """The configuration cannot be expressed, or libvirt rejected its XML."""
    template = "invalid configuration: {reason}"


class Unsupported(HypervisorError):
    template = "not supported here: {reason}"


class OperationFailed(HypervisorError):
    """Anything libvirt reported that has no more precise class."""
    template = "{operation} failed: {reason}"


class NetworkUnavailable(HypervisorError):
    """A network of ours could not start because something on the host took its range meanwhile."""
    template = "network {network} cannot start: {reason}"


class Timeout(HypervisorError):
    template = "{what} did not happen within {timeout} s"


class DomainNotFound(HypervisorError):
    template = "domain {domain} not found"


class NotOwned(DomainNotFound):
    """The object exists but belongs to another installation; callers treat it as absent."""
    template = "{domain} is not owned by this installation"


class DomainExists(HypervisorError):
    template = "domain {domain} already exists"


class InvalidState(HypervisorError):
    """The verb does not apply in the domain's current state (start a running domain, …)."""
    template = "domain {domain}: {reason}"


class DomainBusy(HypervisorError):
    """Another job holds the domain (libvirt's state change lock) or a resource is in use."""
    template = "domain {domain} is busy: {reason}"


class NetworkNotFound(HypervisorError):
    template = "network {network} not found"


class NetworkExists(HypervisorError):
    template = "network {network} already exists"


class AgentError(HypervisorError):
    template = "guest agent of {domain}: {reason}"


class AgentUnavailable(AgentError):
    """No agent channel, agent not connected, or not answering."""
    template = "guest agent of {domain} is not available: {reason}"


class AgentTimeout(AgentUnavailable):
    template = "guest agent of {domain} did not answer within {timeout} s"


class GuestExecTimeout(AgentTimeout):
    template = "command {path} in {domain} did not finish within {timeout} s (guest pid {pid})"


class AgentCommandFailed(AgentError):
    """The agent answered with an error (file not found, command disabled, …)."""
    template = "guest agent command {command} failed in {domain}: {reason}"


# --- translation ---------------------------------------------------------------------------------

_CONNECTION_CODES = {libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_ERR_RPC}
_CONNECTION_DOMAINS = {libvirt.VIR_FROM_REMOTE, libvirt.VIR_FROM_RPC}


def is_connection_error(exc: libvirt.libvirtError) -> bool:
    code, origin = exc.get_error_code(), exc.get_error_domain()
    if code in (libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_NO_CONNECT):
        return True
    return code in _CONNECTION_CODES and origin in _CONNECTION_DOMAINS


def translate(exc: libvirt.libvirtError, **context) -> HypervisorError:
    """Turn a libvirtError into the matching HypervisorError.

    ``context`` carries what the caller knows (``domain``, ``network``, ``operation``, ``command``,
    ``timeout``); templates use it.
    """
    code = exc.get_error_code()
    reason = exc.get_error_message() or str(exc)
    context = {"domain": "?", "network": "?", "operation": "libvirt call", **context, "reason": reason}
    context["libvirt_code"] = code

    if is_connection_error(exc):
        return ConnectionLost(**context)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return DomainNotFound(**context)
    if code == libvirt.VIR_ERR_NO_NETWORK:
        return NetworkNotFound(**context)
    if code == libvirt.VIR_ERR_DOM_EXIST:
        return DomainExists(**context)
    if code == libvirt.VIR_ERR_NETWORK_EXIST:
        return NetworkExists(**context)
    if code == libvirt.VIR_ERR_AGENT_UNRESPONSIVE:
        # "Guest agent not available for now" is libvirt's own wait timing out; "is not connected"
        # means nothing listens on the channel yet.
        if "not available for now" in reason or "timed out" in reason:
            context.setdefault("timeout", "?")
            return AgentTimeout(**context)
        return AgentUnavailable(**context)
    if code == libvirt.VIR_ERR_AGENT_UNSYNCED:
        return AgentUnavailable(**context)
    if code == libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED and "agent" in reason:
        return AgentUnavailable(**context)   # "QEMU guest agent is not configured"
    if code == libvirt.VIR_ERR_INTERNAL_ERROR and "agent command" in reason:
        context.setdefault("command", "?")
        return AgentCommandFailed(**context)
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return InvalidState(**context)
    if code in (libvirt.VIR_ERR_RESOURCE_BUSY, libvirt.VIR_ERR_OPERATION_TIMEOUT):
        return DomainBusy(**context)
    if code == libvirt.VIR_ERR_INVALID_ARG and "unsupported flags" in reason:
        return Unsupported(**context)
    if code in (libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_XML_DETAIL, libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
                libvirt.VIR_ERR_INVALID_ARG):
        return InvalidConfig(**context)
    if code in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
                libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED):
        return Unsupported(**context)
    return OperationFailed(**context)


@contextlib.contextmanager
def translated(**context):
    """Run a block of libvirt calls; any libvirtError leaves it as a HypervisorError."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise translate(exc, **context) from exc
