"""Errors of the guest-image builder, in the storage layer's family."""

from ..errors import StorageError


class GuestImageError(StorageError):
    template = "guest image error"


class UnknownImage(GuestImageError):
    template = "no guest image named {name!r} in the manifest"


class BadManifest(GuestImageError):
    template = "image manifest {path}: {reason}"


class KernelNotFound(GuestImageError):
    template = "no usable guest kernel: {reason}"


class BuildFailed(GuestImageError):
    template = "{step} failed: {detail}"
