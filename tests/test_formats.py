"""The key/value codec and size parsing, as round trips."""

import json

import pytest
from hypothesis import given, strategies as st

from controlplane import formats
from controlplane.config import parse_size
from controlplane.errors import Usage

keys = st.from_regex(r"[a-z][a-z0-9:_\-]{0,20}", fullmatch=True)
values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


@given(st.dictionaries(keys, values, max_size=12))
def test_kv_round_trip(obj):
    assert formats.decode_kv(formats.encode_kv(obj)) == obj


@given(st.lists(st.dictionaries(keys, values, min_size=1, max_size=6), max_size=5))
def test_many_objects_split_on_blank_lines(objs):
    text = formats.render_many(objs, as_json=False)
    blocks = [b for b in text.split("\n\n") if b.strip()]
    # A block that only has keys with empty values still decodes to the same object.
    assert [formats.decode_kv(b) for b in blocks] == [o for o in objs if o]


@given(st.dictionaries(keys, st.one_of(values, st.integers())))
def test_json_round_trip(obj):
    decoded = formats.decode_json(json.dumps(obj))
    assert decoded == {k: str(v) for k, v in obj.items()}


def test_kv_rejects_repeated_keys_and_bad_lines():
    with pytest.raises(Usage):
        formats.decode_kv("name a\nname b\n")
    with pytest.raises(Usage):
        formats.decode_kv(" name a\n")


@pytest.mark.parametrize("body", ["[1]", "{\"a\": {\"b\": 1}}", "{\"a\": null}", "not json"])
def test_json_rejects_non_flat_objects(body):
    with pytest.raises(Usage):
        formats.decode_json(body)


def test_lists_render_one_uuid_per_line_or_objects():
    assert formats.render_list("drive", ["a", "b"], False) == "a\nb\n"
    assert json.loads(formats.render_list("drive", ["a"], True)) == [{"drive": "a"}]


@given(st.integers(0, 2**40), st.sampled_from(["", "k", "K", "M", "G", "T"]))
def test_parse_size(n, unit):
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[unit.lower()]
    assert parse_size(f"{n}{unit}") == n * scale


@pytest.mark.parametrize("bad", ["", "-1", "1.5G", "G", "10X", "1 0", "0x10"])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)
