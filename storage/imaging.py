"""Drive-to-drive copies for the imaging API: plain, gzip (compress) or gunzip (decompress)."""

from __future__ import annotations

import os
import zlib
from typing import Callable

from .codec import gunzip_stream, gzip_compressor
from .errors import BadData, OutOfBounds
from .pool import DrivePool

STEP = 4 * 1024 * 1024

# progress(consumed_source_bytes, checkpoint) -> keep going?; checkpoint is a resumable offset or None
Progress = Callable[[int, int | None], bool]


class Cancelled(Exception):
    pass


def copy(pool: DrivePool, source: str, source_format: str, dest: str, mode: str,
         progress: Progress, resume_from: int = 0) -> int:
    """Image `dest` from `source`; returns the number of bytes that landed in dest.

    mode: "" copies the stored bytes; "gzip" compresses them; "gunzip" decompresses a gzip source
    (and copies a raw one as is). Plain copies resume from `resume_from`; the others restart.
    Whatever dest held beyond the new image is zeroed.
    """
    decompress = mode == "gunzip" and source_format == "gzip"
    compress = mode == "gzip"
    plain = not decompress and not compress
    start = resume_from if plain else 0
    with pool.open_reader(source, source_format) as src, pool.open(dest) as dst:
        size = dst.size
        src_size = os.fstat(src.fileno()).st_size
        if plain and src_size > size:
            raise OutOfBounds(what="image", offset=0, length=src_size, size=size)
        transform = gzip_compressor() if compress else gunzip_stream() if decompress else None
        src.seek(start)
        consumed, out = start, start

        def put(data: bytes) -> None:
            nonlocal out
            if out + len(data) > size:
                raise OutOfBounds(what="image", offset=out, length=len(data), size=size)
            dst.write(out, data, what="image")
            out += len(data)

        while piece := src.read(STEP):
            consumed += len(piece)
            if transform is None:
                put(piece)
            elif compress:
                put(transform.compress(piece))
            else:
                try:
                    data = transform.decompress(piece, STEP)
                    put(data)
                    while transform.unconsumed_tail:
                        put(transform.decompress(transform.unconsumed_tail, STEP))
                except zlib.error as exc:
                    raise BadData(reason=f"source is not valid gzip ({exc.args[0]})") from None
                if transform.eof and transform.unused_data:
                    # a further gzip member: continue with a fresh decompressor
                    rest = transform.unused_data
                    transform = gunzip_stream()
                    put(transform.decompress(rest, STEP))
            dst.sync()
            if not progress(consumed, out if plain else None):
                raise Cancelled()
        if compress:
            put(transform.flush())
        elif decompress and not transform.eof:
            raise BadData(reason="source gzip data is truncated")
        dst.punch(out, size - out)
        dst.sync()
        return out
