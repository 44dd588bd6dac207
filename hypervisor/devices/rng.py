"""``<rng>``: a virtio entropy source, so a fresh guest does not block on getrandom()."""

from __future__ import annotations

from dataclasses import dataclass

from ..xmlbuilder import XMLObject, prop


@dataclass
class Rng(XMLObject):
    TAG = "rng"
    model: str | None = prop("./@model")                 # "virtio"
    backend_model: str | None = prop("./backend/@model")  # "random"
    backend: str | None = prop("./backend")               # "/dev/urandom"
