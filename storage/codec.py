"""gzip in both directions for write chunks and imaging, validated whole before use."""

from __future__ import annotations

import zlib

from .errors import BadData, ChunkTooLarge

GZIP_WBITS = 31  # gzip header and trailer, no zlib wrapper


def gunzip_chunk(body: bytes, limit: int) -> bytes:
    """Decompress a whole gzip body (one or more members) or raise; never returns a partial result.

    Truncation, a bad CRC or length trailer, trailing garbage and output above `limit` bytes are
    all refused before the caller writes anything.
    """
    if not body:
        raise BadData(reason="empty gzip body")
    out: list[bytes] = []
    produced = 0
    data = body
    while data:
        d = zlib.decompressobj(GZIP_WBITS)
        try:
            piece = d.decompress(data, limit - produced + 1)
        except zlib.error as exc:
            raise BadData(reason=f"corrupt gzip data ({exc.args[0]})") from None
        produced += len(piece)
        if produced > limit or d.unconsumed_tail:
            raise ChunkTooLarge(limit=limit)
        out.append(piece)
        if not d.eof:
            raise BadData(reason="truncated gzip data")
        data = d.unused_data
        # Some writers pad with zeros after the last member; anything else is garbage.
        if data and not data.startswith(b"\x1f\x8b"):
            if data.strip(b"\0"):
                raise BadData(reason="trailing garbage after gzip data")
            break
    return b"".join(out)


def gzip_compressor(level: int = 1):
    return zlib.compressobj(level, zlib.DEFLATED, GZIP_WBITS)


def gunzip_stream():
    return zlib.decompressobj(GZIP_WBITS)
