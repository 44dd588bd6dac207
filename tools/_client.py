"""What the three command line tools share: the endpoint and credentials from the environment, an HTTP
client that speaks the cloud API's error convention, retries with backoff, chunk bookkeeping that
survives a crash, and progress output.

Standard library only: the tools are copied onto users' machines and must run with a bare Python 3.11.
"""

from __future__ import annotations

import base64
import getpass
import http.client
import json
import os
import random
import shlex
import shutil
import signal
import ssl
import sys
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

VERSION = "1.0"
USER_AGENT = f"openhosting-tools/{VERSION}"

# Exit statuses, the same for the three tools.
EXIT_OK = 0
EXIT_FAILED = 1  # the server refused, the network failed, or the data did not match
EXIT_USAGE = 2  # bad command line or environment (argparse uses 2 as well)
EXIT_INTERRUPTED = 130

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class UsageError(Exception):
    """The command line or the environment is wrong; nothing was sent."""


class Failure(Exception):
    """The work cannot go on (bad image, drive too small, data mismatch); the message says why."""


class TransportError(Exception):
    """The request did not get an HTTP answer (refused, reset, timed out, truncated)."""

    retryable = True

    def __str__(self) -> str:
        cause = self.__cause__
        return str(self.args[0]) if self.args else f"{type(cause).__name__}: {cause}"


class ApiError(Exception):
    """The server answered with an error: its status, `X-Elastic-Error` type and one-line message."""

    # Worth another try: the server or something in front of it is having a bad moment, or the
    # drive is briefly busy. Everything else (usage, auth, missing, full…) will not change by waiting.
    RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}

    def __init__(self, status: int, kind: str, message: str):
        self.status = status
        self.kind = kind
        self.message = message
        super().__init__(f"{status} {kind}: {message}")

    @property
    def retryable(self) -> bool:
        return self.status in self.RETRYABLE_STATUS

    @classmethod
    def from_response(cls, resp: "Response") -> "ApiError":
        kind = resp.headers.get("X-Elastic-Error") or ("failed" if resp.status >= 500 else "usage")
        text = resp.body.decode("utf-8", "replace").strip()
        if text.startswith("{"):
            try:
                text = str(json.loads(text).get("message") or text)
            except (ValueError, AttributeError):
                pass
        message = " ".join(text.splitlines()[:1]) if text else resp.reason
        return cls(resp.status, kind, message)


def parse_size(text: str) -> int:
    """`5242880`, `64k`, `4M`, `1G` → bytes (binary units, as the server reads them)."""
    text = str(text).strip()
    unit = text[-1:].lower() if text[-1:].isalpha() else ""
    number = text[:-1] if unit else text
    if unit not in _UNITS or not number.isdigit():
        raise UsageError(f"'{text}' is not a size (bytes, or a number with k, M, G or T)")
    return int(number) * _UNITS[unit]


def size_arg(text: str) -> int:
    """argparse type for sizes."""
    import argparse

    try:
        return parse_size(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ---- endpoint and credentials ----------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    uri: str
    user: str
    secret: str

    @classmethod
    def from_env(cls, env: dict | None = None, prompt: Callable[[str], str] = getpass.getpass) -> "Endpoint":
        """`OHURI` and `OHAUTH=<uuid>:<key>`; with only the uuid in `OHAUTH`, ask for the key."""
        env = os.environ if env is None else env
        uri = env.get("OHURI", "").strip()
        if not uri:
            raise UsageError("OHURI is not set (for example: export OHURI=https://api.example.com/)")
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"OHURI must be an http:// or https:// URL, not '{uri}'")
        auth = env.get("OHAUTH", "").strip()
        if not auth:
            raise UsageError("OHAUTH is not set (export OHAUTH=<user uuid>:<secret API key>)")
        user, sep, secret = auth.partition(":")
        if not sep:
            try:
                secret = prompt(f"Secret API key for {user}: ")
            except (EOFError, KeyboardInterrupt):
                raise UsageError("no secret API key given") from None
        return cls(uri=uri, user=user, secret=secret.strip())


# ---- HTTP ------------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes


class Client:
    """One keep-alive connection per thread to the API at `OHURI`; paths are relative to it.

    `request` returns any answer; `call` raises ApiError for a status of 400 and above and
    TransportError when no answer came. Safe to use from many threads at once.
    """

    def __init__(self, endpoint: Endpoint, timeout: float = 120, trace=None):
        self.endpoint = endpoint
        parts = urllib.parse.urlsplit(endpoint.uri)
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.trace = trace  # a text stream for -v, or None
        token = base64.b64encode(f"{endpoint.user}:{endpoint.secret}".encode()).decode()
        self._auth = f"Basic {token}"
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def url(self, path: str) -> str:
        return self.prefix + path

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.https:
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                   context=ssl.create_default_context())
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _discard(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            with self._lock:
                self._all.remove(conn)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()

    def request(self, method: str, path: str, body=None, headers: dict | None = None) -> Response:
        """Send one request and read the whole answer.

        `body` is bytes or a seekable binary file (sent with its remaining length). A keep-alive
        connection the server closed while idle is reopened once, transparently.
        """
        hdrs = {"Authorization": self._auth, "User-Agent": USER_AGENT, "Accept": "*/*"}
        hdrs.update(headers or {})
        if body is None:
            body = b""
        start = body.tell() if hasattr(body, "read") else None
        if start is not None:
            hdrs["Content-Length"] = str(os.fstat(body.fileno()).st_size - start)
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.sock is not None
            if start is not None:
                body.seek(start)
            self._trace_request(method, path, hdrs)
            sent_error = None
            try:
                try:
                    conn.request(method, self.url(path), body=body, headers=hdrs)
                except (BrokenPipeError, ConnectionResetError) as exc:
                    # The server may have answered (401, 413…) and closed before reading the whole
                    # body; its answer is still worth reading.
                    sent_error = exc
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self._discard()
                stale = isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError,
                                         BrokenPipeError))
                if attempt == 1 and reused and stale:
                    continue
                raise TransportError() from (sent_error or exc)
            if resp.will_close:
                self._discard()
            answer = Response(resp.status, resp.reason, resp.headers, data)
            self._trace_response(answer)
            return answer
        raise AssertionError("unreachable")

    def call(self, method: str, path: str, body=None, headers: dict | None = None) -> Response:
        resp = self.request(method, path, body, headers)
        if resp.status >= 400:
            raise ApiError.from_response(resp)
        return resp

    def call_json(self, path: str, fields: dict | None = None):
        """POST `fields` as JSON (or nothing) and decode the JSON answer."""
        body = json.dumps(fields).encode() if fields is not None else b""
        resp = self.call("POST", path, body, {"Content-Type": "application/json",
                                              "Accept": "application/json"})
        return json.loads(resp.body) if resp.body.strip() else None

    # -v: the exchange on standard error, curl style, without the secret.
    def _trace_request(self, method: str, path: str, headers: dict) -> None:
        if self.trace is None:
            return
        lines = [f"> {method} {self.url(path)} HTTP/1.1", f"> Host: {self.host}:{self.port}"]
        for key, value in headers.items():
            lines.append(f"> {key}: {'Basic ***' if key == 'Authorization' else value}")
        print("\n".join(lines) + "\n>", file=self.trace, flush=True)

    def _trace_response(self, resp: Response) -> None:
        if self.trace is None:
            return
        lines = [f"< HTTP/1.1 {resp.status} {resp.reason}"]
        lines += [f"< {key}: {value}" for key, value in resp.headers.items()]
        print("\n".join(lines) + "\n<", file=self.trace, flush=True)


def with_retries(action: Callable[[], object], retries: int, delay: float, stop: threading.Event,
                 warn: Callable[[str], None], what: str):
    """Run `action`, retrying transport errors and retryable API errors with exponential backoff.

    Waits `delay`, 2×, 4×… (capped at 30 s, with jitter) between `retries` further attempts; gives up
    at once on a non-retryable error or when `stop` is set. Raises the last error.
    """
    attempt = 0
    while True:
        try:
            return action()
        except (TransportError, ApiError) as exc:
            if not exc.retryable or attempt >= retries or stop.is_set():
                raise
            pause = min(30.0, delay * 2**attempt) * random.uniform(0.8, 1.2)
            attempt += 1
            warn(f"{what}: {exc}; retry {attempt} of {retries} in {pause:.1f} s")
            if stop.wait(pause):
                raise


def describe(exc: BaseException) -> str:
    """The one line a user sees for an error."""
    if isinstance(exc, ApiError):
        return f"{exc.kind}: {exc.message} (HTTP {exc.status})"
    if isinstance(exc, TransportError):
        return f"no answer from the server ({exc})"
    return str(exc)


def read_range(client: Client, drive: str, offset: int, length: int) -> bytes:
    """`length` bytes of a drive from `offset`; a short answer is a TransportError (retryable)."""
    resp = client.call("GET", f"/drives/{drive}/read/{offset}/{length}")
    if len(resp.body) != length:
        raise TransportError(f"short read: {len(resp.body)} of {length} bytes at offset {offset}")
    return resp.body


def drive_info(client: Client, drive: str) -> dict:
    return client.call_json(f"/drives/{drive}/info")


# ---- chunks ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    index: int
    offset: int
    length: int


_zeros: dict[int, bytes] = {}
_zeros_lock = threading.Lock()


def is_zero(data: bytes) -> bool:
    """Whether `data` is all zero bytes (one memcmp against a cached zero buffer)."""
    if not isinstance(data, bytes):
        data = bytes(data)  # bytes == bytes is one memcmp; memoryview == bytes compares item by item
    n = len(data)
    zeros = _zeros.get(n)
    if zeros is None:
        with _zeros_lock:
            zeros = _zeros.setdefault(n, bytes(n))
    return data == zeros


def chunk_plan(start: int, end: int, size: int) -> list[Chunk]:
    """[start, end) cut into chunks of `size` bytes (the last one shorter)."""
    return [Chunk(i, off, min(size, end - off)) for i, off in enumerate(range(start, end, size))]


def to_ranges(indices: Iterable[int]) -> list[list[int]]:
    """{0,1,2,5,6} → [[0,3],[5,7]] (half-open), the compact form kept in state files."""
    out: list[list[int]] = []
    for i in sorted(indices):
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


def from_ranges(ranges) -> set[int]:
    return {i for a, b in ranges for i in range(int(a), int(b))}


class StateFile:
    """A small JSON file beside the data that records finished chunks, so an interrupted transfer can
    resume without repeating them. Rewritten atomically after every finished chunk (thread-safe);
    a crash loses at most the chunks whose acknowledgement had not been recorded yet.
    """

    def __init__(self, path: Path, fields: dict, done: set[int] | None = None):
        self.path = path
        self.fields = dict(fields)
        self.done: set[int] = set(done or ())
        self._lock = threading.Lock()
        self.writable = True

    @staticmethod
    def load(path: Path) -> dict | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("version") == 1 else None

    def mark(self, index: int) -> None:
        with self._lock:
            self.done.add(index)
            self._save()

    def save(self) -> None:
        with self._lock:
            self._save()

    def _save(self) -> None:
        if not self.writable:
            return
        data = {"version": 1, **self.fields, "done": to_ranges(self.done)}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(data) + "\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            self.writable = False
            warn(f"cannot keep the resume state in {self.path} ({exc.strerror}); "
                 "--resume will ask the server instead")

    def remove(self) -> None:
        with self._lock:
            self.writable = False
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


# ---- output ----------------------------------------------------------------------------------------

PROG = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "openhosting"


def warn(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def command_name(name: str) -> str:
    """How to type this tool again: its bare name when that is what PATH finds, else its path."""
    argv0 = sys.argv[0] if sys.argv else ""
    if not argv0 or not os.path.exists(argv0):
        return name
    found = shutil.which(name)
    if found and os.path.samefile(found, argv0):
        return name
    return shlex.quote(argv0 if os.sep in argv0 else f".{os.sep}{argv0}")


class Progress:
    """Progress of a chunked transfer on `stream`.

    Not a terminal: the label, then one dot per finished chunk, then ` completed` (the originals'
    output, which scripts may parse). A terminal: the label and a bar with bytes, rate and ETA,
    redrawn at most ten times a second. `advance` may be called from any thread.
    """

    def __init__(self, label: str, total_bytes: int, stream=None, tty: bool | None = None):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.label = label
        self.total = max(total_bytes, 1)
        self.done = 0
        self.started = time.monotonic()
        self._samples: deque[tuple[float, int]] = deque([(self.started, 0)])
        self._drawn = 0.0
        self._lock = threading.Lock()
        self._write(label)

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self.done += nbytes
            if not self.tty:
                self._write(".")
                return
            now = time.monotonic()
            self._samples.append((now, self.done))
            while len(self._samples) > 2 and now - self._samples[0][0] > 5:
                self._samples.popleft()
            if now - self._drawn >= 0.1:
                self._drawn = now
                self._draw(now)

    def rate(self, now: float) -> float:
        t0, b0 = self._samples[0]
        return (self.done - b0) / (now - t0) if now > t0 else 0.0

    def _draw(self, now: float, final: bool = False) -> None:
        rate = (self.done / (now - self.started)) if final and now > self.started else self.rate(now)
        left = self.total - self.done
        eta = left / rate if rate > 0 else None
        tail = f" {100 * self.done // self.total:3d}% {_mb(self.done)} {rate / 1e6:.1f}MB/s"
        tail += f" in {_clock(now - self.started)}" if final else f" ETA {_clock(eta)}"
        width = shutil.get_terminal_size((80, 24)).columns
        room = width - len(self.label) - len(tail) - 3
        bar = ""
        if room >= 5:
            filled = room * self.done // self.total
            bar = "[" + "#" * filled + "." * (room - filled) + "]"
        self._write(f"\r{self.label}{bar}{tail}\x1b[K")

    def finish(self, ok: bool = True) -> None:
        with self._lock:
            if self.tty:
                self._draw(time.monotonic(), final=ok)
            self._write(" completed\n" if ok else " failed\n")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}MB" if n < 10e9 else f"{n / 1e9:.1f}GB"


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


def terminate_as_interrupt() -> None:
    """Let SIGTERM (and SIGHUP) unwind like Ctrl-C, so state is saved and the resume hint printed."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            signal.signal(sig, handler)
        except (ValueError, OSError):
            pass


class Transfer:
    """Runs one task per chunk on `jobs` threads, with at most 2×`jobs` chunks in memory.

    The first error stops the transfer: no new chunk starts, running ones finish (their retries end
    early), and `error` holds it. Ctrl-C and SIGTERM do the same and set `interrupted`.
    Tasks run on the pool's threads; they must record their own results under a lock.
    """

    def __init__(self, jobs: int):
        self.jobs = max(1, jobs)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.interrupted = False
        self._lock = threading.Lock()

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc
        self.stop.set()

    def _run(self, task, item) -> None:
        if self.stop.is_set():
            return
        try:
            task(*item)
        except BaseException as exc:  # noqa: BLE001 - any failure of a chunk stops the transfer
            self.fail(exc)

    def run(self, items: Iterable[tuple], task: Callable) -> None:
        from concurrent.futures import ThreadPoolExecutor

        slots = threading.Semaphore(self.jobs * 2)
        pool = ThreadPoolExecutor(self.jobs)
        try:
            for item in items:
                while not slots.acquire(timeout=0.2):
                    if self.stop.is_set():
                        break
                if self.stop.is_set():
                    break
                future = pool.submit(self._run, task, item)
                future.add_done_callback(lambda _: slots.release())
        except KeyboardInterrupt:
            self.interrupted = True
            self.stop.set()
        except BaseException as exc:  # noqa: BLE001 - reading the source failed
            self.fail(exc)
        while True:
            try:
                # Chunks not started yet are dropped only when stopping; otherwise they all run.
                pool.shutdown(wait=True, cancel_futures=self.stop.is_set())
                return
            except KeyboardInterrupt:
                self.interrupted = True
                self.stop.set()

    @property
    def ok(self) -> bool:
        return self.error is None and not self.interrupted


def run_transfer(prog: str, work: Callable[[Client], int]) -> int:
    """Run one transfer command: `work` gets a client from the environment and returns the exit status;
    errors become one line on stderr and the documented exit status, and the client is always closed."""
    terminate_as_interrupt()
    client = None
    try:
        client = Client(Endpoint.from_env())
        return work(client)
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ApiError, TransportError, Failure) as exc:
        print(f"{prog}: {describe(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if client is not None:
            client.close()
