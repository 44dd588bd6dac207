"""Errors of the storage layer; the control plane maps them to HTTP in one place."""


class StorageError(Exception):
    template = "storage error"

    def __init__(self, template: str | None = None, **context):
        self.context = context
        self.message = (template or self.template).format(**context)
        super().__init__(self.message)


class PoolFull(StorageError):
    template = "storage pool full: {needed} bytes needed, {available} available"


class OutOfBounds(StorageError):
    template = "{what}: offset {offset} + {length} bytes is past the end of the drive ({size} bytes)"


class BadData(StorageError):
    template = "{reason}"


class ChunkTooLarge(StorageError):
    template = "chunk decompresses to more than {limit} bytes"
