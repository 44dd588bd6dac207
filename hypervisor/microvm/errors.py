"""The errors of the lightweight-VM substrate (all `HypervisorError`s)."""

from __future__ import annotations

from ..errors import HypervisorError


class SandboxError(HypervisorError):
    template = "sandbox: {reason}"


class PoolClosed(SandboxError):
    template = "the sandbox pool of image {image} is closed"


class PoolTimeout(SandboxError):
    template = "no sandbox VM of image {image} became free within {timeout} s"


class PoolBroken(SandboxError):
    """The template or the clones keep failing; the pool retries in the background."""
    template = "the sandbox pool of image {image} cannot make VMs: {reason}"


class TemplateFailed(SandboxError):
    template = "preparing the template of image {image} failed: {reason}"


class VmUnusable(SandboxError):
    """A pooled VM failed before its run started; the run takes another one."""

    def __init__(self, reason: str):
        super().__init__(reason=reason)
