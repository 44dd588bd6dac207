"""Declare a libvirt XML mapping once and use it both to build and to parse.

The idea is virtinst's `XMLProperty("./@model")`, carried by dataclass fields: each field names an
XPath-like location relative to its object's element, and one generic walker turns an object into an
element tree (`to_xml`) and an element tree back into an object (`from_xml`). There is no policy here:
every mapped field defaults to "absent" (None, False or an empty list); defaults live in
`hypervisor.defaults`.

Paths understood (relative to the object's own element):
  ``./@attr``            an attribute of the object's element
  ``./a/b``              the text of a descendant (created on build when missing)
  ``./a/b/@attr``        an attribute of a descendant
  ``./ns:a``             a namespaced element; the prefix must be in ``NAMESPACES``
Fields are written in declaration order, which keeps the output stable for golden files.
"""

from __future__ import annotations

import dataclasses
import enum
import xml.etree.ElementTree as ET
from typing import Any, ClassVar, TypeVar

#: The namespace of the ``<metadata>`` element that marks the objects an installation owns.
OPENHOSTING_NS = "https://openhosting.org/xmlns/libvirt/1"
NAMESPACES = {"openhosting": OPENHOSTING_NS}
ET.register_namespace("openhosting", OPENHOSTING_NS)


# --- codecs: text <-> value ------------------------------------------------------------------

class Codec:
    """Converts between the text of one XML location and a Python value."""

    def parse(self, text: str) -> Any:
        return text

    def format(self, value: Any) -> str:
        return str(value)

    # Element-text locations go through these two, so a codec may also use the element's
    # attributes (see MemoryCodec).
    def read(self, elem: ET.Element) -> Any:
        return None if elem.text is None else self.parse(elem.text)

    def write(self, elem: ET.Element, value: Any) -> None:
        elem.text = self.format(value)


class _Int(Codec):
    def parse(self, text: str) -> int:
        return int(text, 0) if text.lower().startswith("0x") else int(text)


class _Bool(Codec):
    def __init__(self, true: str, false: str):
        self.true, self.false = true, false

    def parse(self, text: str) -> bool:
        return text == self.true

    def format(self, value: bool) -> str:
        return self.true if value else self.false


class EnumCodec(Codec):
    """A StrEnum; a value the enum does not know (say, from a hand-made domain) stays a plain str."""

    def __init__(self, enum_type: type[enum.StrEnum]):
        self.enum_type = enum_type

    def parse(self, text: str):
        try:
            return self.enum_type(text)
        except ValueError:
            return text


_MEMORY_UNITS = {
    "b": 1, "bytes": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}


class MemoryCodec(Codec):
    """A memory size in MiB, written as ``<x unit='MiB'>N</x>``; any libvirt unit is read back."""

    def read(self, elem):
        if elem.text is None:
            return None
        unit = _MEMORY_UNITS[(elem.get("unit") or "KiB").lower()]
        return int(elem.text.strip()) * unit // 1024**2

    def write(self, elem, value):
        elem.set("unit", "MiB")
        elem.text = str(value)


STR = Codec()
INT = _Int()
YESNO = _Bool("yes", "no")
ONOFF = _Bool("on", "off")
MEMORY_MIB = MemoryCodec()


# --- field declarations ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Spec:
    kind: str            # "prop" | "flag" | "child" | "children"
    steps: tuple[str, ...]
    attr: str | None
    codec: Codec | None = None
    cls: type | None = None


def _qualify(step: str) -> str:
    if ":" in step:
        prefix, local = step.split(":", 1)
        return "{%s}%s" % (NAMESPACES[prefix], local)
    return step


def _split(path: str) -> tuple[tuple[str, ...], str | None]:
    if not path.startswith("."):
        raise ValueError(f"XML paths are relative and start with '.': {path!r}")
    parts = [p for p in path.split("/")[1:] if p]
    attr = None
    if parts and parts[-1].startswith("@"):
        attr = _qualify(parts.pop()[1:])
    return tuple(_qualify(p) for p in parts), attr


def prop(path: str, codec: Codec | type[enum.StrEnum] = STR, **kw):
    """A scalar at ``path``; absent means None."""
    if isinstance(codec, type) and issubclass(codec, enum.StrEnum):
        codec = EnumCodec(codec)
    steps, attr = _split(path)
    return dataclasses.field(default=None, metadata={"xml": _Spec("prop", steps, attr, codec)}, **kw)


def flag(path: str, **kw):
    """True when the element at ``path`` exists (``<readonly/>``, ``<acpi/>``)."""
    steps, attr = _split(path)
    if attr or not steps:
        raise ValueError(f"a flag names an element: {path!r}")
    return dataclasses.field(default=False, metadata={"xml": _Spec("flag", steps, None)}, **kw)


def child(path: str, cls: type, **kw):
    """One nested object whose own element is the last step of ``path``; absent means None."""
    steps, attr = _split(path)
    if attr or not steps:
        raise ValueError(f"a child names an element: {path!r}")
    return dataclasses.field(default=None, metadata={"xml": _Spec("child", steps, None, cls=cls)}, **kw)


def children(path: str, cls: type, **kw):
    """A list of nested objects, one element each, at ``path`` (``./devices/disk``)."""
    steps, attr = _split(path)
    if attr or not steps:
        raise ValueError(f"children name an element: {path!r}")
    return dataclasses.field(
        default_factory=list, metadata={"xml": _Spec("children", steps, None, cls=cls)}, **kw)


# --- the walker --------------------------------------------------------------------------------

def _find(elem: ET.Element, steps: tuple[str, ...]) -> ET.Element | None:
    for step in steps:
        elem = elem.find(step)
        if elem is None:
            return None
    return elem


def _find_or_make(elem: ET.Element, steps: tuple[str, ...]) -> ET.Element:
    for step in steps:
        found = elem.find(step)
        elem = found if found is not None else ET.SubElement(elem, step)
    return elem


T = TypeVar("T", bound="XMLObject")


class XMLObject:
    """Base of every mapped object. Subclasses are dataclasses and set ``TAG``."""

    TAG: ClassVar[str]

    @classmethod
    def _specs(cls):
        for f in dataclasses.fields(cls):
            spec = f.metadata.get("xml")
            if spec is not None:
                yield f.name, spec

    # build
    def fill(self, elem: ET.Element) -> ET.Element:
        """Write this object's fields into ``elem`` (its own element) and return it."""
        for name, spec in self._specs():
            value = getattr(self, name)
            if spec.kind == "prop":
                if value is None:
                    continue
                if spec.attr is not None:
                    _find_or_make(elem, spec.steps).set(spec.attr, spec.codec.format(value))
                else:
                    spec.codec.write(_find_or_make(elem, spec.steps), value)
            elif spec.kind == "flag":
                if value:
                    _find_or_make(elem, spec.steps)
            elif spec.kind == "child":
                if value is not None:
                    parent = _find_or_make(elem, spec.steps[:-1])
                    value.fill(ET.SubElement(parent, spec.steps[-1]))
            elif spec.kind == "children":
                if value:
                    parent = _find_or_make(elem, spec.steps[:-1])
                    for item in value:
                        item.fill(ET.SubElement(parent, spec.steps[-1]))
        return elem

    def to_element(self) -> ET.Element:
        return self.fill(ET.Element(_qualify(self.TAG)))

    def to_xml(self) -> str:
        root = self.to_element()
        ET.indent(root, space="  ")
        return ET.tostring(root, encoding="unicode") + "\n"

    # parse
    @classmethod
    def from_element(cls: type[T], elem: ET.Element) -> T:
        values: dict[str, Any] = {}
        for name, spec in cls._specs():
            if spec.kind == "prop":
                node = _find(elem, spec.steps)
                if node is None:
                    continue
                if spec.attr is not None:
                    text = node.get(spec.attr)
                    if text is not None:
                        values[name] = spec.codec.parse(text)
                else:
                    values[name] = spec.codec.read(node)
            elif spec.kind == "flag":
                values[name] = _find(elem, spec.steps) is not None
            elif spec.kind == "child":
                node = _find(elem, spec.steps)
                if node is not None:
                    values[name] = spec.cls.from_element(node)
            elif spec.kind == "children":
                parent = _find(elem, spec.steps[:-1])
                if parent is not None:
                    values[name] = [spec.cls.from_element(n) for n in parent.findall(spec.steps[-1])]
        return cls(**values)

    @classmethod
    def from_xml(cls: type[T], text: str) -> T:
        return cls.from_element(ET.fromstring(text))
