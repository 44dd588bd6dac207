"""``<serial>``: the guest's ttyS0, as a pty with a log file (or a plain file) the host can read."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..xmlbuilder import INT, ONOFF, XMLObject, prop


class SerialType(enum.StrEnum):
    PTY = "pty"
    FILE = "file"
    NULL = "null"


@dataclass
class Serial(XMLObject):
    TAG = "serial"
    type: SerialType | None = prop("./@type", SerialType)
    # type=file: where QEMU writes; type=pty: the pty libvirt allocated (live XML only).
    source_path: str | None = prop("./source/@path")
    port: int | None = prop("./target/@port", INT)
    # type=pty: virtlogd copies everything the guest writes here, read by nobody or not.
    log_file: str | None = prop("./log/@file")
    log_append: bool | None = prop("./log/@append", ONOFF)
