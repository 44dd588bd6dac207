#!/usr/bin/env python3
"""openhosting-upload: upload a drive image in gzipped chunks.

    openhosting-upload [-c CHUNK] [-d DRIVE] [-n NAME] [-o OFFSET] [-z] [-j JOBS]
                       [--resume] [--verify] IMAGE

Creates the drive (named after IMAGE, sized to it) unless -d names one, then writes IMAGE to
/drives/<DRIVE>/write/<offset> chunk by chunk with Content-Encoding: gzip, several chunks at once.
All-zero chunks of a drive it created are not sent at all (a new drive reads as zeros). A failed
chunk is retried with backoff; on giving up the exact command that resumes is printed. Finished
chunks are recorded in IMAGE.oh-upload, so `--resume` never sends them again.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import os
import shlex
import sys
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

if __package__ in (None, ""):  # run as tools/upload.py from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools._client import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ApiError, Chunk, Client,
                           Failure, Progress, StateFile, Transfer, UsageError,
                           chunk_plan, command_name, describe, drive_info, from_ranges, is_zero,
                           read_range, run_transfer, size_arg, to_ranges, warn, with_retries)

PROG = "openhosting-upload"
DEFAULT_CHUNK = 5242880
DEFAULT_JOBS = 4
DEFAULT_RETRIES = 6
STATE_SUFFIX = ".oh-upload"
GZIP_LEVEL = 1
READ_SIZE = 1 << 20
PIECE = 4 << 20
GZIP_MAGIC = b"\x1f\x8b"
BLOCK = 4096


# ---- the image ------------------------------------------------------------------------------------


def gunzip_pieces(f) -> Iterator[bytes]:
    """The decompressed content of a gzip file, in pieces of at most PIECE bytes.

    Several concatenated members are one stream (as gzip -d reads them); zero padding after the last
    member is allowed; a truncated, corrupt or garbage-trailed file raises Failure. The ISIZE trailer
    is never used: it holds the size modulo 4 GiB.
    """
    d = zlib.decompressobj(31)
    data = f.read(READ_SIZE)
    if data[:2] != GZIP_MAGIC:
        raise Failure("the image is not gzip-compressed (leave out -z)")
    while True:
        try:
            out = d.decompress(data, PIECE)
        except zlib.error as exc:
            raise Failure(f"corrupt gzip data ({exc})") from None
        if out:
            yield out
        if d.eof:
            rest = d.unused_data
            while len(rest) < 2:
                more = f.read(READ_SIZE)
                if not more:
                    break
                rest += more
            if rest[:2] == GZIP_MAGIC:
                d, data = zlib.decompressobj(31), rest
                continue
            while rest:  # dd and tar pad with zeros; anything else is not ours to ignore
                if rest.strip(b"\0"):
                    raise Failure("trailing garbage after the gzip data")
                rest = f.read(READ_SIZE)
            return
        data = d.unconsumed_tail
        if not data and len(out) < PIECE:
            data = f.read(READ_SIZE)
            if not data:
                raise Failure("truncated gzip data (the file ends inside the stream)")


class _Stream:
    """Sequential exact-size reads over an iterator of byte pieces."""

    def __init__(self, pieces: Iterator[bytes]):
        self.pieces = pieces
        self.current = memoryview(b"")

    def read(self, n: int, keep: bool = True) -> bytes | None:
        parts = []
        while n:
            if not self.current:
                piece = next(self.pieces, None)
                if piece is None:
                    raise Failure("the image ended early (changed while uploading?)")
                self.current = memoryview(piece)
            part, self.current = self.current[:n], self.current[n:]
            n -= len(part)
            if keep:
                parts.append(part)
        return b"".join(parts) if keep else None


@dataclass
class Image:
    """IMAGE on disk: raw (read at any offset) or gzip (decompressed front to back)."""

    path: Path
    gz: bool
    stat: os.stat_result
    size: int = 0  # uncompressed

    @classmethod
    def open(cls, path: str, gz: bool) -> "Image":
        p = Path(path)
        try:
            st = p.stat()
            with open(p, "rb") as f:
                magic = f.read(2)
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        if not p.is_file():
            raise UsageError(f"{path} is not a regular file")
        if gz and magic != GZIP_MAGIC:
            raise UsageError(f"{path} is not gzip-compressed (leave out -z)")
        if not gz and magic == GZIP_MAGIC and p.suffix in (".gz", ".tgz"):
            warn(f"{path} looks gzip-compressed; it is uploaded as it is (add -z to uncompress it)")
        return cls(p, gz, st, 0 if gz else st.st_size)

    def identity(self) -> dict:
        """What a state file must match to apply to this image."""
        return {"image": str(self.path.resolve()), "image_bytes": self.stat.st_size,
                "image_mtime_ns": self.stat.st_mtime_ns, "gzip": self.gz}

    def measure(self) -> int:
        """The uncompressed size of a gzip image, by decompressing it all."""
        with open(self.path, "rb") as f:
            self.size = sum(len(piece) for piece in gunzip_pieces(f))
        return self.size

    def pieces(self, chunks: list[Chunk], wanted) -> Iterator[tuple[Chunk, bytes]]:
        """(chunk, data) for the chunks `wanted` says yes to, in order."""
        with open(self.path, "rb") as f:
            if not self.gz:
                fd = f.fileno()
                for chunk in chunks:
                    if wanted(chunk):
                        data = os.pread(fd, chunk.length, chunk.offset)
                        if len(data) != chunk.length:
                            raise Failure(f"{self.path} became shorter while uploading")
                        yield chunk, data
                return
            stream = _Stream(gunzip_pieces(f))
            pos = 0
            for chunk in chunks:
                if chunk.offset > pos:
                    stream.read(chunk.offset - pos, keep=False)
                keep = wanted(chunk)
                data = stream.read(chunk.length, keep=keep)
                pos = chunk.offset + chunk.length
                if keep:
                    yield chunk, data


# ---- encoding --------------------------------------------------------------------------------------
#
# A chunk goes out as one gzip body made of members, one per run of similar 256 KiB segments: zeros
# and compressible data at gzip -1, incompressible data stored (level 0: a copy and a CRC, where
# deflate would burn CPU to gain nothing). Concatenated members are plain gzip (RFC 1952; `gzip -d`
# reads them). A chunk with nothing to gain goes out raw.

SEGMENT = 256 * 1024
SAMPLE = 16 * 1024
ZERO, PACK, STORE = "zero", "pack", "store"
_zero_members: dict[int, bytes] = {}
_zero_lock = threading.Lock()


def gzip_member(data, level: int) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def _zero_member(n: int) -> bytes:
    member = _zero_members.get(n)
    if member is None:
        with _zero_lock:
            member = _zero_members.setdefault(n, gzip_member(bytes(n), 9))  # made once: pack hard
    return member


def _kind(segment) -> str:
    if is_zero(segment):
        return ZERO
    middle = max(0, len(segment) // 2 - SAMPLE // 2)
    sample = segment[middle:middle + SAMPLE]
    return PACK if len(zlib.compress(sample, GZIP_LEVEL)) < len(sample) * 0.9 else STORE


def encode(data: bytes) -> tuple[bytes, dict]:
    """The request body and headers for a chunk (see above)."""
    plain = {"Content-Type": "application/octet-stream"}
    view = memoryview(data)
    runs: list[list] = []  # [kind, start, end]
    for start in range(0, len(data), SEGMENT):
        end = min(len(data), start + SEGMENT)
        kind = _kind(data[start:end])  # a copy: comparing bytes is a memcmp, a memoryview is not
        if runs and runs[-1][0] == kind:
            runs[-1][2] = end
        else:
            runs.append([kind, start, end])
    if all(kind == STORE for kind, _, _ in runs):
        return data, plain
    members = []
    for kind, start, end in runs:
        if kind == ZERO:
            members.append(_zero_member(end - start))
        else:
            members.append(gzip_member(view[start:end], GZIP_LEVEL if kind == PACK else 0))
    body = b"".join(members)
    if len(body) >= len(data):
        return data, plain
    return body, {**plain, "Content-Encoding": "gzip"}


# ---- the upload ------------------------------------------------------------------------------------


@dataclass
class Plan:
    drive: str
    drive_size: int
    chunk: int
    base: int  # where the chunk grid starts
    created: bool  # the drive was made by this upload, so its unwritten parts read as zeros
    compare: bool  # ask the server: read each chunk back and send only those that differ
    done: set[int] = field(default_factory=set)


def find_drive(client: Client, name: str, size: int) -> str | None:
    """The one drive of ours with this name and size (an earlier upload of the same image)."""
    mine = [d for d in client.call_json("/drives/info") or []
            if d.get("name") == name and int(d.get("size", -1)) == size and d.get("user")]
    if len(mine) > 1:
        raise Failure(f"several drives are named '{name}' with size {size} "
                      f"({', '.join(d['drive'] for d in mine)}); say which with -d")
    return mine[0]["drive"] if mine else None


def regrid(done: set[int], base: int, old: int, new: int, end: int) -> set[int]:
    """The chunks of a grid of `new`-byte chunks that lie wholly inside finished `old`-byte chunks."""
    spans = [(base + a * old, min(end, base + b * old)) for a, b in to_ranges(done)]
    starts = [s for s, _ in spans]
    out = set()
    for c in chunk_plan(base, end, new):
        i = bisect.bisect_right(starts, c.offset) - 1
        if i >= 0 and c.offset + c.length <= spans[i][1]:
            out.add(c.index)
    return out


class Uploader:
    def __init__(self, args, client: Client, image: Image):
        self.args = args
        self.client = client
        self.image = image
        self.state_path = image.path.with_name(image.path.name + STATE_SUFFIX)
        self.transfer = Transfer(args.jobs)
        self.say = print

    # -- deciding what to do

    def plan(self) -> Plan:
        args, image = self.args, self.image
        saved = StateFile.load(self.state_path)
        if saved and not args.resume:
            warn(f"{self.state_path} records an unfinished upload to drive {saved.get('drive')}; "
                 "starting afresh (use --resume to continue it)")
        usable = (saved and all(saved.get(k) == v for k, v in image.identity().items())
                  and saved.get("uri") == self.client.endpoint.uri
                  and (not args.drive or saved.get("drive") == args.drive.lower()))
        if args.resume and saved and not usable:
            warn(f"ignoring {self.state_path}: it is for another image, drive or server")
        if args.resume and usable:
            image.size = int(saved["size"])
            info = drive_info(self.client, saved["drive"])
            chunk, base = int(saved["chunk"]), int(saved["base"])
            done = from_ranges(saved.get("done", []))
            if args.chunk_given and args.chunk != chunk:  # e.g. after a 413: same bytes, new grid
                done = regrid(done, base, chunk, args.chunk, image.size)
                chunk = args.chunk
            plan = Plan(saved["drive"], int(info["size"]), chunk, base, bool(saved["created"]), False, done)
            self.say(f"Resuming upload to drive {plan.drive} from {self.state_path.name}")
            return plan
        if image.gz:
            self.say(f"Measuring {image.path.name}: ", end="", flush=True)
            self.say(f"{image.measure()} bytes uncompressed")
        if image.size == 0:
            raise Failure(f"{image.path} is empty")
        name = args.name or image.path.name
        drive = args.drive
        if args.resume and not drive:
            drive = find_drive(self.client, name, image.size)
            if drive is None:
                self.say(f"No earlier upload of {name} found; starting a new one")
        if drive:
            info = drive_info(self.client, drive)
            plan = Plan(info["drive"], int(info["size"]), args.chunk, args.offset, False, args.resume)
            if args.resume:
                self.say(f"Resuming upload to drive {plan.drive}: comparing with the drive's content")
        else:
            info = self.client.call_json("/drives/create", {"name": name, "size": image.size})
            plan = Plan(info["drive"], int(info["size"]), args.chunk, args.offset, True, False)
            self.say(f"Created drive {plan.drive} of size {plan.drive_size}")
        if image.size > plan.drive_size:
            raise Failure(f"{image.path} ({image.size} bytes) is larger than drive {plan.drive} "
                          f"({plan.drive_size} bytes)")
        return plan

    # -- doing it

    def run(self) -> int:
        args = self.args
        plan = self.plan()
        self.drive = plan.drive
        chunks = chunk_plan(plan.base, self.image.size, plan.chunk)
        # With -o on a resumed grid, chunks wholly before OFFSET count as done.
        plan.done |= {c.index for c in chunks if c.offset + c.length <= args.offset}
        self.chunks, self.plan_ = chunks, plan
        self.state = StateFile(self.state_path, {
            **self.image.identity(), "uri": self.client.endpoint.uri, "drive": plan.drive,
            "size": self.image.size, "chunk": plan.chunk, "base": plan.base, "created": plan.created,
        }, plan.done)
        self.state.save()  # before the first chunk: a drive we created must be found again
        todo = [c for c in chunks if c.index not in plan.done]
        if plan.done:
            self.say(f"{len(chunks) - len(todo)} of {len(chunks)} chunks were uploaded before")
        self.progress = Progress(f"Uploading {len(todo)} chunks of {plan.chunk} bytes: ",
                                 sum(c.length for c in todo))
        self.transfer.run(self._work(todo), self._send)
        if not self.transfer.ok:
            return self._give_up()
        self.progress.finish(True)
        self.state.remove()
        if args.verify:
            return self.verify()
        return EXIT_OK

    def _work(self, todo: list[Chunk]):
        """(chunk, data) pairs still to send; all-zero chunks of a new drive are done on the spot."""
        known_zero = self.plan_.created
        for chunk, data in self.image.pieces(todo, lambda c: not self.transfer.stop.is_set()):
            if self.transfer.stop.is_set():
                return
            if known_zero and is_zero(data):
                self._finished(chunk)
                continue
            yield chunk, data

    def _finished(self, chunk: Chunk) -> None:
        self.state.mark(chunk.index)
        self.progress.advance(chunk.length)

    def _retry(self, action, what: str):
        return with_retries(action, self.args.retries, self.args.retry_delay, self.transfer.stop,
                            self._warn, what)

    def _warn(self, message: str) -> None:
        if self.progress.tty:
            print(file=sys.stdout)
        warn(message)

    def _send(self, chunk: Chunk, data: bytes) -> None:
        """Runs on a pool thread: (compare,) send, record."""
        where = f"chunk at offset {chunk.offset}"
        if self.plan_.compare:
            remote = self._retry(lambda: read_range(self.client, self.drive, chunk.offset, chunk.length),
                                 f"reading {where}")
            if remote == data:
                self._finished(chunk)
                return
        body, headers = encode(data)
        path = f"/drives/{self.drive}/write/{chunk.offset}"
        self._retry(lambda: self.client.call("POST", path, body, headers), f"writing {where}")
        self._finished(chunk)

    def _give_up(self) -> int:
        self.state.save()
        self.progress.finish(False)
        error = self.transfer.error
        if error is not None:
            warn(describe(error))
            if isinstance(error, ApiError) and error.status == 413:
                warn("the server takes smaller chunks: the command below resumes with a smaller -c")
        else:
            warn("interrupted")
        left = [c for c in self.chunks if c.index not in self.state.done]
        low = left[0].offset if left else self.image.size
        print(f"{len(self.chunks) - len(left)} of {len(self.chunks)} chunks are on drive {self.drive}. "
              f"To resume, run:\n  {self.resume_command(low)}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED if self.transfer.interrupted else EXIT_FAILED

    def resume_command(self, low: int) -> str:
        a = self.args
        words = [command_name(PROG), "--resume", "-d", self.drive, "-o", str(low)]
        chunk = self.plan_.chunk
        error = self.transfer.error
        if isinstance(error, ApiError) and error.status == 413:  # the server takes smaller bodies
            chunk = DEFAULT_CHUNK if chunk > DEFAULT_CHUNK else max(BLOCK, chunk // 2 // BLOCK * BLOCK)
            words += ["-c", str(chunk)]  # explicit: it overrides the chunk size in the state file
        elif chunk != DEFAULT_CHUNK:
            words += ["-c", str(chunk)]
        if a.jobs != DEFAULT_JOBS:
            words += ["-j", str(a.jobs)]
        if self.image.gz:
            words.append("-z")
        if a.verify:
            words.append("--verify")
        words = words[:1] + [shlex.quote(w) for w in words[1:]]
        image = a.image if not a.image.startswith("-") else f"./{a.image}"
        return " ".join(words + [shlex.quote(image)])

    # -- --verify

    def verify(self) -> int:
        chunks = chunk_plan(0, self.image.size, self.plan_.chunk)
        digest = hashlib.sha256()
        mismatches: list[int] = []
        lock = threading.Lock()
        transfer = self.transfer = Transfer(self.args.jobs)
        self.progress = Progress(f"Verifying {len(chunks)} chunks of {self.plan_.chunk} bytes: ",
                                 self.image.size)

        def pairs():
            for chunk, data in self.image.pieces(chunks, lambda c: True):
                digest.update(data)
                yield chunk, data

        def check(chunk: Chunk, data: bytes) -> None:
            remote = self._retry(lambda: read_range(self.client, self.drive, chunk.offset, chunk.length),
                                 f"reading chunk at offset {chunk.offset}")
            if remote != data:
                with lock:
                    mismatches.append(chunk.offset)
            self.progress.advance(chunk.length)

        transfer.run(pairs(), check)
        self.progress.finish(transfer.ok and not mismatches)
        if not transfer.ok:
            warn(describe(transfer.error) if transfer.error else "interrupted")
            return EXIT_INTERRUPTED if transfer.interrupted else EXIT_FAILED
        if mismatches:
            warn(f"verification FAILED: drive {self.drive} differs from {self.image.path} in "
                 f"{len(mismatches)} chunk(s), the first at offset {min(mismatches)}")
            return EXIT_FAILED
        print(f"Verified: drive {self.drive} matches {self.image.path.name} "
              f"(sha256 {digest.hexdigest()})", flush=True)
        return EXIT_OK


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Upload a drive image to the cloud API at $OHURI ($OHAUTH=<user uuid>:<secret key>).",
        epilog=f"Finished chunks are recorded in IMAGE{STATE_SUFFIX} until the upload completes.",
    )
    parser.add_argument("-c", dest="chunk", type=size_arg, default=None, metavar="CHUNK",
                        help=f"chunk size in bytes, k/M suffixes allowed (default {DEFAULT_CHUNK})")
    parser.add_argument("-d", dest="drive", metavar="DRIVE", help="write into this existing drive")
    parser.add_argument("-n", dest="name", metavar="NAME", help="name of the new drive (default: IMAGE's name)")
    parser.add_argument("-o", dest="offset", type=size_arg, default=0, metavar="OFFSET",
                        help="start at this byte of the image (the resume point; default 0)")
    parser.add_argument("-z", dest="gz", action="store_true", help="IMAGE is gzip-compressed")
    parser.add_argument("-j", dest="jobs", type=int, default=DEFAULT_JOBS, metavar="JOBS",
                        help=f"chunks in flight at once (default {DEFAULT_JOBS})")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted upload without sending finished chunks again")
    parser.add_argument("--verify", action="store_true",
                        help="read the drive back afterwards and compare it with IMAGE")
    parser.add_argument("--retries", type=int, default=DEFAULT_RETRIES, metavar="N",
                        help=f"retries of a failed chunk before giving up (default {DEFAULT_RETRIES})")
    parser.add_argument("--retry-delay", type=float, default=1.0, metavar="SECONDS",
                        help="first pause between retries, doubled each time (default 1)")
    parser.add_argument("image", metavar="IMAGE")
    args = parser.parse_args(argv)
    args.chunk_given = args.chunk is not None
    args.chunk = DEFAULT_CHUNK if args.chunk is None else args.chunk
    if args.chunk < 1:
        parser.error("-c must be at least 1 byte")
    if args.jobs < 1:
        parser.error("-j must be at least 1")
    if args.name and args.drive:
        parser.error("-n names a new drive; it cannot go with -d")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        image = Image.open(args.image, args.gz)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_transfer(PROG, lambda client: Uploader(args, client, image).run())

if __name__ == "__main__":
    sys.exit(main())
