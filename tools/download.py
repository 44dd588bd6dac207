#!/usr/bin/env python3
"""openhosting-download: download a drive into a file.

    openhosting-download [-c CHUNK] [-o OFFSET] [-j JOBS] DRIVE FILE

Reads the drive's size from /drives/<DRIVE>/info and fetches /drives/<DRIVE>/read/<offset>/<len>
chunk by chunk, several at once, into FILE at the same offsets. Blocks that are all zeros are not
written, so FILE stays sparse where the drive is empty. An interrupted download resumes by itself:
finished chunks are recorded in FILE.oh-download (and a partial FILE without one continues from its
end, as the original tool did).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as tools/download.py from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools._client import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Chunk, Client,
                           Failure, Progress, StateFile, Transfer, UsageError,
                           chunk_plan, command_name, describe, drive_info, from_ranges, is_zero,
                           read_range, run_transfer, size_arg, warn, with_retries)

PROG = "openhosting-download"
DEFAULT_CHUNK = 5242880
DEFAULT_JOBS = 4
DEFAULT_RETRIES = 6
STATE_SUFFIX = ".oh-download"
BLOCK = 4096
ZERO_BLOCK = bytes(BLOCK)


def runs(data: bytes, offset: int) -> list[tuple[int, int, bool]]:
    """`data` (to be placed at file `offset`) as (start, end, is_zero) runs on BLOCK boundaries."""
    n = len(data)
    if is_zero(data):
        return [(0, n, True)]
    first = min(n, (-offset) % BLOCK or BLOCK)
    edges = [0, *range(first, n, BLOCK), n]
    out: list[tuple[int, int, bool]] = []
    for start, end in zip(edges, edges[1:]):
        piece = data[start:end]
        zero = piece == ZERO_BLOCK if end - start == BLOCK else piece.count(0) == end - start
        if out and out[-1][2] == zero:
            out[-1] = (out[-1][0], end, zero)
        else:
            out.append((start, end, zero))
    return out


def pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class Downloader:
    def __init__(self, args, client: Client):
        self.args = args
        self.client = client
        self.path = Path(args.file)
        self.state_path = self.path.with_name(self.path.name + STATE_SUFFIX)
        self.transfer = Transfer(args.jobs)

    def run(self) -> int:
        args = self.args
        info = drive_info(self.client, args.drive)
        self.drive, size = info["drive"], int(info["size"])
        if args.offset > size:
            raise Failure(f"offset {args.offset} is beyond the end of drive {self.drive} ({size} bytes)")
        try:
            existing = self.path.stat().st_size if self.path.exists() else None
        except OSError as exc:
            raise UsageError(f"cannot use {self.path}: {exc.strerror}") from None
        if existing is not None and not self.path.is_file():
            raise UsageError(f"{self.path} is not a regular file")
        saved = StateFile.load(self.state_path) if existing is not None else None
        identity = {"uri": self.client.endpoint.uri, "drive": self.drive, "size": size}
        if saved and any(saved.get(k) != v for k, v in identity.items()):
            raise Failure(f"{self.path} holds a partial download of drive {saved.get('drive')} "
                          f"({self.state_path.name} says so); remove both or choose another FILE")
        if existing is not None and existing > size:
            raise Failure(f"{self.path} ({existing} bytes) is larger than drive {self.drive} "
                          f"({size} bytes); remove it or choose another FILE")
        if saved:
            chunk, base, done = int(saved["chunk"]), int(saved["base"]), from_ranges(saved.get("done", []))
            print(f"Resuming download of drive {self.drive} into {self.path.name}")
        else:
            chunk, done = args.chunk, set()
            base = args.offset if args.offset or existing is None else existing
            if existing and base == existing:
                if base == size:
                    print(f"{self.path} is complete already ({size} bytes)")
                    return EXIT_OK
                print(f"Resuming {self.path.name} at offset {base}")
        chunks = chunk_plan(base, size, chunk)
        done |= {c.index for c in chunks if c.offset + c.length <= args.offset}
        self.chunks = chunks
        self.state = StateFile(self.state_path, {**identity, "chunk": chunk, "base": base}, done)
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot write {self.path}: {exc.strerror}") from None
        try:
            # Below this, FILE may hold bytes from before (a partial download); above, it reads as zeros.
            self.old_end = os.fstat(self.fd).st_size
            self.state.save()
            todo = [c for c in chunks if c.index not in done]
            self.progress = Progress(f"Downloading {len(todo)} chunks of {chunk} bytes: ",
                                     sum(c.length for c in todo))
            self.transfer.run(((c,) for c in todo), self._fetch)
            os.fsync(self.fd)
            if not self.transfer.ok:
                return self._give_up(chunk)
            if os.fstat(self.fd).st_size < size:
                os.ftruncate(self.fd, size)  # the zero tail, as a hole
                os.fsync(self.fd)
        finally:
            os.close(self.fd)
        self.state.remove()
        self.progress.finish(True)
        return EXIT_OK

    def _fetch(self, chunk: Chunk) -> None:
        """Runs on a pool thread: read one chunk, write its non-zero blocks, record it."""
        data = with_retries(lambda: read_range(self.client, self.drive, chunk.offset, chunk.length),
                            self.args.retries, self.args.retry_delay, self.transfer.stop, self._warn,
                            f"reading chunk at offset {chunk.offset}")
        for start, end, zero in runs(data, chunk.offset):
            at = chunk.offset + start
            if not zero:
                pwrite_all(self.fd, memoryview(data)[start:end], at)
            elif at < self.old_end:
                # An earlier, interrupted run may have left bytes here; zeros must read back as zeros.
                length = min(end - start, self.old_end - at)
                if not is_zero(os.pread(self.fd, length, at)):
                    pwrite_all(self.fd, bytes(length), at)
        self.state.mark(chunk.index)
        self.progress.advance(chunk.length)

    def _warn(self, message: str) -> None:
        if self.progress.tty:
            print(file=sys.stdout)
        warn(message)

    def _give_up(self, chunk: int) -> int:
        self.state.save()
        self.progress.finish(False)
        error = self.transfer.error
        warn(describe(error) if error is not None else "interrupted")
        left = sum(1 for c in self.chunks if c.index not in self.state.done)
        words = [command_name(PROG)]
        if chunk != DEFAULT_CHUNK:
            words += ["-c", str(chunk)]
        if self.args.jobs != DEFAULT_JOBS:
            words += ["-j", str(self.args.jobs)]
        print(f"{left} of {len(self.chunks)} chunks are still to fetch. To resume, run:\n  "
              + " ".join(words + [self.drive, _quote_path(self.args.file)]), file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED if self.transfer.interrupted else EXIT_FAILED


def _quote_path(path: str) -> str:
    import shlex

    return shlex.quote(path if not path.startswith("-") else f"./{path}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Download a drive from the cloud API at $OHURI ($OHAUTH=<user uuid>:<secret key>) "
                    "into FILE, resuming a partial FILE.",
    )
    parser.add_argument("-c", dest="chunk", type=size_arg, default=DEFAULT_CHUNK, metavar="CHUNK",
                        help=f"chunk size in bytes, k/M suffixes allowed (default {DEFAULT_CHUNK})")
    parser.add_argument("-o", dest="offset", type=size_arg, default=0, metavar="OFFSET",
                        help="start at this byte of the drive (FILE mirrors the drive's offsets)")
    parser.add_argument("-j", dest="jobs", type=int, default=DEFAULT_JOBS, metavar="JOBS",
                        help=f"chunks in flight at once (default {DEFAULT_JOBS})")
    parser.add_argument("--retries", type=int, default=DEFAULT_RETRIES, metavar="N",
                        help=f"retries of a failed chunk before giving up (default {DEFAULT_RETRIES})")
    parser.add_argument("--retry-delay", type=float, default=1.0, metavar="SECONDS",
                        help="first pause between retries, doubled each time (default 1)")
    parser.add_argument("drive", metavar="DRIVE")
    parser.add_argument("file", metavar="FILE")
    args = parser.parse_args(argv)
    if args.chunk < 1:
        parser.error("-c must be at least 1 byte")
    if args.jobs < 1:
        parser.error("-j must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_transfer(PROG, lambda client: Downloader(args, client).run())


if __name__ == "__main__":
    sys.exit(main())
