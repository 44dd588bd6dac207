"""The operations of `GuestChannel` (exec, spawn, files, untar, PTY, time), one method each.

Every method opens one channel of oh-guest (protocol in `guestd`) and may be called from any
thread. Paths are the guest's: relative ones are relative to the workspace directory; with
``beneath=DIR`` a path may not resolve outside DIR (`GuestOutside`). Operations run as the
workspace user unless ``uid`` says otherwise.
"""

from __future__ import annotations

import io
import secrets
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable, Iterator

from . import tarcheck
from .guestd import (DATA, END, EOF, ERROR, MAX_PAYLOAD, RESIZE, STDERR, GuestBadArchive, GuestTimeout, error_from,
                     parse_records)

CHUNK = MAX_PAYLOAD


@dataclass(frozen=True)
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int | None        # None when ended by a signal
    signal: int | None
    timed_out: bool = False
    cancelled: bool = False


@dataclass(frozen=True)
class GuestStat:
    type: str                    # f d l c b p s
    size: int
    mode: int                    # permission bits
    mtime: float
    uid: int
    gid: int


@dataclass(frozen=True)
class DirEntry:
    name: str
    type: str                    # as lstat: f d l c b p s
    target_type: str             # links: f d o, or - when broken; others: as type
    size: int
    mode: int
    mtime: int


def _stat(fields: dict[str, str]) -> GuestStat:
    return GuestStat(fields["type"], int(fields["size"]), int(fields["mode"], 8), float(fields["mtime"]),
                     int(fields["uid"]), int(fields["gid"]))


def _ids(uid: int | None, gid: int | None, beneath: str | None) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    if uid is not None:
        out.append(("uid", uid))
    if gid is not None:
        out.append(("gid", gid))
    if beneath is not None:
        out.append(("beneath", beneath))
    return out


def _chunks(data) -> Iterator[bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = io.BytesIO(bytes(data))
    if hasattr(data, "read"):
        while chunk := data.read(4 * CHUNK):
            yield chunk
    else:
        yield from data


class ExecProcess:
    """A running exec: iterate for ``("stdout" | "stderr", bytes)``; `wait` for the result."""

    def __init__(self, chan, pid: int):
        self.chan, self.pid = chan, pid
        self.result: ExecResult | None = None
        self._out: list[bytes] = []
        self._err: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chan.write(data)

    def close_stdin(self) -> None:
        if not self.chan.ended:
            self.chan.owner.send(EOF, self.chan.id)

    def cancel(self) -> None:
        """SIGTERM to its process group, SIGKILL kill_after later; the result says cancelled."""
        self.chan.cancel()

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        while self.result is None:
            kind, payload = self.chan.next()
            if kind == DATA:
                yield "stdout", payload
            elif kind == STDERR:
                yield "stderr", payload
            elif kind == END:
                self._end(parse_records(payload))
            elif kind == ERROR:
                raise error_from(payload)

    def _end(self, f: dict[str, str]) -> None:
        self.result = ExecResult(b"".join(self._out), b"".join(self._err),
                                 int(f["exit"]) if "exit" in f else None,
                                 int(f["signal"]) if "signal" in f else None,
                                 "timed_out" in f, "cancelled" in f)

    def wait(self, on_stdout: Callable[[bytes], None] | None = None,
             on_stderr: Callable[[bytes], None] | None = None) -> ExecResult:
        """Run to the end; output goes to the callbacks, or is collected into the result."""
        for stream, data in self:
            if stream == "stdout":
                (on_stdout or self._out.append)(data)
            else:
                (on_stderr or self._err.append)(data)
        return self.result


class FileReader:
    """A file being read from the guest: iterate for its bytes; `stat` came first."""

    def __init__(self, chan, stat: GuestStat):
        self.chan, self.stat = chan, stat

    def __iter__(self) -> Iterator[bytes]:
        try:
            while True:
                kind, payload = self.chan.next()
                if kind == DATA:
                    yield payload
                elif kind == END:
                    return
                elif kind == ERROR:
                    raise error_from(payload)
        finally:
            self.close()

    def read(self) -> bytes:
        return b"".join(self)

    def close(self) -> None:
        self.chan.cancel()


class PtySession:
    """An interactive terminal in the guest: `write` keys, `read` output, `resize`, `close`."""

    def __init__(self, chan, pid: int):
        self.chan, self.pid = chan, pid
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.ended = False

    def write(self, data: bytes) -> None:
        self.chan.write(data)

    def resize(self, rows: int, cols: int) -> None:
        self.chan.owner.send(RESIZE, self.chan.id, rows.to_bytes(2, "big") + cols.to_bytes(2, "big"))

    def read(self, timeout: float | None = None) -> bytes | None:
        """Output as it comes; b"" once the session ended, None at ``timeout``."""
        while not self.ended:
            got = self.chan.next(timeout)
            if got is None:
                return None
            kind, payload = got
            if kind == DATA:
                return payload
            if kind == END:
                f = parse_records(payload)
                self.exit_code = int(f["exit"]) if "exit" in f else None
                self.signal = int(f["signal"]) if "signal" in f else None
                self.ended = True
            elif kind == ERROR:
                self.ended = True
                raise error_from(payload)
        return b""

    def __iter__(self) -> Iterator[bytes]:
        while data := self.read():
            yield data

    def read_until(self, marker: bytes, timeout: float) -> bytes:
        """Output up to and including ``marker`` (GuestTimeout after ``timeout`` s)."""
        deadline, seen = time.monotonic() + timeout, b""
        while marker not in seen:
            data = self.read(max(0.0, deadline - time.monotonic()))
            if data is None or (data == b"" and self.ended):
                raise GuestTimeout(timeout=timeout, what=f"{marker!r} on the terminal; got {seen[-200:]!r}")
            seen += data
        return seen

    def close(self) -> None:
        """Hang up: the shell gets SIGHUP as on a real terminal; nohup/setsid processes survive."""
        if not self.ended:
            self.chan.cancel()
            while not self.ended:
                try:
                    self.read()
                except Exception:
                    self.ended = True


class GuestOps:
    """Operations over `open(op, pairs) -> channel` (provided by GuestChannel)."""

    def exec_stream(self, argv: list[str] | str, *, env: dict[str, str] | None = None, cwd: str | None = None,
                    uid: int | None = None, gid: int | None = None, stdin: bool = False,
                    timeout: float | None = None, kill_after: float = 2.0, clearenv: bool = False) -> ExecProcess:
        """Start a process (a string runs as ``/bin/sh -c``); `ExecProcess` streams its output."""
        if isinstance(argv, str):
            argv = ["/bin/sh", "-c", argv]
        pairs = [("argv", a) for a in argv] + [("env", f"{k}={v}") for k, v in (env or {}).items()]
        pairs += _ids(uid, gid, None) + [("kill_after_ms", int(kill_after * 1000))]
        if cwd is not None:
            pairs.append(("cwd", cwd))
        if stdin:
            pairs.append(("stdin", 1))
        if clearenv:
            pairs.append(("clearenv", 1))
        if timeout is not None:
            pairs.append(("timeout_ms", max(1, int(timeout * 1000))))
        chan = self.open("exec", pairs)
        return ExecProcess(chan, int(chan.expect_start(30.0)["pid"]))

    def exec(self, argv: list[str] | str, *, input: bytes | BinaryIO | None = None, **kw) -> ExecResult:
        """Run to the end and collect stdout and stderr apart (see `exec_stream` for the options)."""
        proc = self.exec_stream(argv, stdin=input is not None, **kw)
        if input is not None:
            for chunk in _chunks(input):
                proc.write(chunk)
            proc.close_stdin()
        return proc.wait()

    def spawn(self, argv: list[str] | str, *, env: dict[str, str] | None = None, cwd: str | None = None,
              uid: int | None = None, gid: int | None = None, stdout: str | None = None,
              stderr: str | None = None) -> int:
        """Start a process in its own session that outlives the call (output to files, or dropped)."""
        if isinstance(argv, str):
            argv = ["/bin/sh", "-c", argv]
        pairs = [("argv", a) for a in argv] + [("env", f"{k}={v}") for k, v in (env or {}).items()]
        pairs += _ids(uid, gid, None)
        pairs += [(k, v) for k, v in (("cwd", cwd), ("stdout", stdout), ("stderr", stderr)) if v is not None]
        return int(self.open("spawn", pairs).expect_start(30.0)["pid"])

    def put_file(self, path: str, stream: bytes | BinaryIO | Iterable[bytes], *, mode: int = 0o644,
                 uid: int | None = None, gid: int | None = None, beneath: str | None = None,
                 limit: int | None = None) -> int:
        """Write a file (created or replaced whole, at the end), streamed; its size."""
        pairs = [("path", path), ("mode", f"0{mode:o}")] + _ids(uid, gid, beneath)
        if limit is not None:
            pairs.append(("limit", limit))
        chan = self.open("put", pairs)
        chan.expect_start(30.0)
        for chunk in _chunks(stream):
            chan.write(chunk)
            if chan.ended:
                break
        if not chan.ended:
            chan.owner.send(EOF, chan.id)
        return int(chan.finish()["size"])

    def get_file(self, path: str, *, uid: int | None = None, gid: int | None = None,
                 beneath: str | None = None) -> FileReader:
        """Open a regular file for reading (errors raise here); iterate the result for its bytes."""
        chan = self.open("get", [("path", path)] + _ids(uid, gid, beneath))
        return FileReader(chan, _stat(chan.expect_start(30.0)))

    def stat(self, path: str, *, follow: bool = True, uid: int | None = None, gid: int | None = None,
             beneath: str | None = None) -> GuestStat:
        chan = self.open("stat", [("path", path), ("follow", int(follow))] + _ids(uid, gid, beneath))
        return _stat(chan.expect_start(30.0))

    def listdir(self, path: str = "", *, uid: int | None = None, gid: int | None = None,
                beneath: str | None = None) -> list[DirEntry]:
        """One directory level, sorted by name."""
        chan = self.open("list", [("path", path)] + _ids(uid, gid, beneath))
        chan.expect_start(30.0)
        entries: list[DirEntry] = []
        while True:
            kind, payload = chan.next()
            if kind == ERROR:
                raise error_from(payload)
            if kind == END:
                return sorted(entries, key=lambda e: e.name)
            fields = payload.split(b"\0")
            for i in range(0, len(fields) - 5, 6):
                name, typ, target, size, mode, mtime = fields[i:i + 6]
                entries.append(DirEntry(name.decode(errors="surrogateescape"), typ.decode(), target.decode(),
                                        int(size), int(mode, 8), int(mtime)))

    def untar(self, dest: str, fileobj: bytes | BinaryIO, *, uid: int | None = None, gid: int | None = None,
              beneath: str | None = None, limits: tarcheck.Limits = tarcheck.LIMITS) -> int:
        """Extract a tar.gz into ``dest`` as the user, after `tarcheck.check` accepted it here;
        the number of members. Raises GuestUnsafeArchive (here, or from the guest's own check).
        A small archive travels unpacked, written again by `tarcheck.canonical`: oh-guest extracts
        that itself into an empty ``dest``, and otherwise runs tar on it without gzip. A guest
        whose oh-guest predates plain archives (a workspace saved before an upgrade) refuses it as
        not a tar.gz, and gets the tar.gz."""
        data = fileobj if isinstance(fileobj, bytes) else fileobj.read(limits.compressed + 1)
        members = tarcheck.check(data, limits)
        plain = tarcheck.canonical(data)
        if plain is not None:
            try:
                return self._untar(dest, plain, uid, gid, beneath, members, lay=True)
            except GuestBadArchive:
                pass
        return self._untar(dest, data, uid, gid, beneath, members)

    def _untar(self, dest: str, data: bytes, uid, gid, beneath, members: int, *, lay: bool = False) -> int:
        # lay: the archive is tarcheck.canonical's, which oh-guest extracts itself into an empty
        # destination (no exec of tar); an oh-guest that predates it ignores the key and runs tar
        chan = self.open("untar", [("dest", dest), ("limit", max(len(data), tarcheck.LIMITS.compressed))]
                         + [("lay", 1)] * lay + _ids(uid, gid, beneath))
        chan.expect_start(30.0)
        for at in range(0, len(data), CHUNK):
            chan.write(data[at:at + CHUNK])
            if chan.ended:
                break
        if not chan.ended:
            chan.owner.send(EOF, chan.id)
        # the count is the host's check's: a canonical archive leaves "." out, and the guest
        # counts only what it lists or lays
        chan.finish()
        return members

    def pty_open(self, rows: int = 24, cols: int = 80, *, cwd: str | None = None,
                 env: dict[str, str] | None = None, argv: list[str] | None = None,
                 uid: int | None = None, gid: int | None = None) -> PtySession:
        """A terminal running the user's login shell (or ``argv``) in the workspace."""
        pairs = [("rows", rows), ("cols", cols)] + [("env", f"{k}={v}") for k, v in (env or {}).items()]
        pairs += [("argv", a) for a in argv or ()] + _ids(uid, gid, None)
        if cwd is not None:
            pairs.append(("cwd", cwd))
        chan = self.open("pty", pairs)
        return PtySession(chan, int(chan.expect_start(30.0)["pid"]))

    def sync_time(self, *, now: float | None = None) -> dict[str, str]:
        """Set the guest clock to the host's and reseed its RNG with host randomness (after a
        resume). The guest's answer: ``clock`` (set, skipped, or the error) and ``seeded`` bytes."""
        ns = time.time_ns() if now is None else int(now * 1e9)
        pairs = [("sec", ns // 10**9), ("nsec", ns % 10**9), ("seed", secrets.token_hex(64))]
        return self.open("sync-time", pairs).expect_start(30.0)
