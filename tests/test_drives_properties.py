"""Property tests over HTTP: whatever is written at any offset, raw or gzip, reads back."""

import gzip
import zlib

from hypothesis import HealthCheck, given, settings, strategies as st

SIZE = 256 * 1024

writes = st.lists(
    st.tuples(
        st.integers(0, SIZE - 1),
        st.one_of(st.binary(min_size=1, max_size=20_000),
                  st.integers(1, 70_000).map(bytes),  # runs of zeros, to exercise hole punching
                  st.binary(min_size=1, max_size=64).map(lambda b: b * 300)),
        st.booleans(),
    ),
    min_size=1, max_size=6,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=writes)
def test_write_then_read_matches_a_model(alice, ops):
    drive = alice.create_drive(SIZE)
    model = bytearray(SIZE)
    for offset, data, compressed in ops:
        data = data[: SIZE - offset]
        body = gzip.compress(data, compresslevel=1) if compressed else data
        headers = {"Content-Encoding": "gzip"} if compressed else {}
        r = alice.post(f"/drives/{drive}/write/{offset}", body, headers=headers)
        assert r.status == 204, r.text
        model[offset:offset + len(data)] = data
    assert alice.get(f"/drives/{drive}/read/0/{SIZE}").body == bytes(model)
    alice.post(f"/drives/{drive}/destroy")


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=50_000), st.integers(1, 9), st.integers(0, 200))
def test_gunzip_chunk_round_trip_and_truncation(data, level, cut):
    from storage.codec import gunzip_chunk
    from storage.errors import BadData

    packed = zlib.compressobj(level, zlib.DEFLATED, 31)
    body = packed.compress(data) + packed.flush()
    assert gunzip_chunk(body, len(data) or 1) == data
    if cut and cut < len(body):
        try:
            gunzip_chunk(body[:-cut], len(data) or 1)
        except BadData:
            pass
        else:
            raise AssertionError("a truncated gzip body was accepted")
