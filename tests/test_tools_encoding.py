"""Round trips of the tools' pure parts: chunk bodies, gzip image reading, state ranges, sizes."""

from __future__ import annotations

import gzip
import io
import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.codec import gunzip_chunk
from tools._client import UsageError, chunk_plan, from_ranges, parse_size, to_ranges
from tools.download import runs
from tools.upload import SEGMENT, Failure, _Stream, encode, gunzip_pieces, regrid

# A chunk is a sequence of pieces, each zeros, random bytes or text (compressible).
piece = st.tuples(st.sampled_from(["zero", "random", "text"]), st.integers(1, 3 * SEGMENT // 2))


def build(pieces) -> bytes:
    out = []
    for kind, n in pieces:
        if kind == "zero":
            out.append(bytes(n))
        elif kind == "random":
            out.append(os.urandom(n))
        else:
            out.append((b"the quick brown fox %d " * (n // 20 + 1))[:n])
    return b"".join(out)


@settings(max_examples=60, deadline=None)
@given(st.lists(piece, min_size=1, max_size=8))
def test_encode_round_trips_through_the_servers_gunzip(pieces):
    data = build(pieces)
    body, headers = encode(data)
    if headers.get("Content-Encoding") == "gzip":
        assert gunzip_chunk(body, 64 * 1024**2) == data  # what the server does with it
        assert gzip.decompress(body) == data  # and what gzip -d does
        assert len(body) < len(data)
    else:
        assert body == data


def test_encode_stores_what_does_not_compress():
    noise = os.urandom(4 * SEGMENT)
    assert encode(noise) == (noise, {"Content-Type": "application/octet-stream"})
    mixed = noise + bytes(4 * SEGMENT)
    body, headers = encode(mixed)
    assert headers["Content-Encoding"] == "gzip" and len(noise) < len(body) < len(noise) + 4096


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=4), st.integers(0, 100),
       st.lists(st.integers(1, 5000), min_size=1, max_size=10))
def test_gunzip_pieces_reads_members_and_padding(members, padding, reads):
    raw = b"".join(gzip.compress(m, 1) for m in members) + bytes(padding)
    stream = _Stream(gunzip_pieces(io.BytesIO(raw)))
    expected = b"".join(members)
    got, pos = [], 0
    for n in reads:
        n = min(n, len(expected) - pos)
        got.append(stream.read(n))
        pos += n
    assert b"".join(got) == expected[:pos]


def test_gunzip_pieces_refuses_bad_files():
    good = gzip.compress(os.urandom(10000))
    for bad, message in [(good[:-9], "truncated"), (good + b"junk", "trailing garbage"),
                         (b"plain", "not gzip"), (good[:20] + bytes(50) + good[70:], "corrupt")]:
        with pytest.raises(Failure, match=message):
            b"".join(gunzip_pieces(io.BytesIO(bad)))


def test_gunzip_pieces_bounds_memory_on_a_zero_bomb():
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = c.compress(bytes(64 * 1024**2)) + c.flush()  # 64 MiB from 64 kB
    sizes = [len(p) for p in gunzip_pieces(io.BytesIO(bomb))]
    assert max(sizes) <= 4 * 1024**2 and sum(sizes) == 64 * 1024**2


@given(st.sets(st.integers(0, 300)))
def test_state_ranges_round_trip(indices):
    assert from_ranges(to_ranges(indices)) == indices


@given(st.integers(0, 10**7), st.integers(0, 1000), st.integers(1, 10**6))
def test_chunk_plan_covers_exactly(start, count, size):
    length = count * size // 7
    chunks = chunk_plan(start, start + length, size)
    assert sum(c.length for c in chunks) == length
    assert all(c.length <= size for c in chunks)
    assert [c.offset for c in chunks] == list(range(start, start + length, size))


@given(st.binary(max_size=20000).map(lambda b: bytes(b if b[:1] != b"\x01" else len(b))),
       st.integers(0, 10000))
def test_download_runs_cover_the_data(data, offset):
    rs = runs(data, offset)
    assert b"".join(bytes(e - s) if zero else data[s:e] for s, e, zero in rs) == data
    for s, e, zero in rs:
        assert zero == (not any(data[s:e]))


def test_sizes():
    assert parse_size("5242880") == 5242880 and parse_size("64k") == 65536 and parse_size("4M") == 4 * 1024**2
    for bad in ("", "1.5M", "-1", "4X", "M"):
        with pytest.raises(UsageError):
            parse_size(bad)


@given(st.sets(st.integers(0, 40)), st.integers(1, 300), st.integers(1, 300), st.integers(0, 999))
def test_regrid_keeps_only_wholly_finished_bytes(done, old, new, base):
    end = base + 41 * old - old // 2
    done = {i for i in done if base + i * old < end}
    finished = {b for i in done for b in range(base + i * old, min(end, base + (i + 1) * old))}
    got = regrid(done, base, old, new, end)
    for c in chunk_plan(base, end, new):
        inside = all(b in finished for b in range(c.offset, c.offset + c.length))
        assert (c.index in got) == inside
