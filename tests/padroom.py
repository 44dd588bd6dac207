"""Helpers of the pad room tests: the pad page process, and a Yjs client (pycrdt) over a real
WebSocket that speaks what y-websocket speaks, plus our control messages."""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import time
from dataclasses import dataclass, field

import pytest
import websockets
from pycrdt import Doc, Text

from controlplane.padroom.room import (CONTROL, awareness_payload, control, frame, parse_awareness, read_bytes,
                                       read_var_uint, sync_frame)
from controlplane.services.pad_docs import TEXT

from .support import ADMIN, Installation, free_port


@dataclass
class RoomProcess:
    inst: Installation
    port: int = 0
    proc: subprocess.Popen | None = None

    def start(self) -> "RoomProcess":
        self.port = self.port or free_port()
        log = open(self.inst.state_dir / "padroom.log", "ab")
        env = {**self.inst.env, "OPENHOSTING_CONSOLE_BIND": f"127.0.0.1:{self.port}", "OPENHOSTING_PAD_ROOM_POLL": "0.2"}
        env.pop("OPENHOSTING_CONSOLE_URL", None)
        self.proc = subprocess.Popen([ADMIN, "console-proxy", "--bind", f"127.0.0.1:{self.port}"],
                                     env=env, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.inst.state_dir / "padroom.log").read_text()[-2000:])
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("pad room process did not start")

    def stop(self, sig: int = 15) -> None:
        Installation._stop(self.proc, sig)
        log = self.inst.state_dir / "padroom.log"
        if log.exists():
            print(log.read_text()[-4000:])   # shown by pytest when a test fails

    def request(self, method: str, path: str, body: dict | None = None, cookie: str | None = None,
                origin: str | None = None) -> tuple[int, dict | str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": "application/json"}
        if cookie:
            headers["Cookie"] = f"session-access-key={cookie}"
        if origin:
            headers["Origin"] = origin
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        resp = conn.getresponse()
        raw = resp.read().decode()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def socket(self, pad: str, ticket: str, origin: str | None = None):
        """A WebSocket to the pad's room, as the page opens it (ticket as a subprotocol, our Origin)."""
        return await websockets.connect(f"ws://127.0.0.1:{self.port}/rooms/{pad}", max_size=None,
                                        subprotocols=[f"ticket.{ticket}", "y"], origin=origin or self.origin)

    def ticket(self, pad: str, name: str = "", cookie: str | None = None, invisible: bool = False) -> str:
        status, body = self.request("POST", f"/pads/{pad}/ticket", {"name": name, "invisible": invisible}, cookie)
        assert status == 200, body
        return body["ticket"]


@dataclass
class YClient:
    """One browser's worth of the protocol: a pycrdt document kept in sync with the room."""

    room: RoomProcess
    pad: str
    name: str = ""
    cookie: str | None = None
    doc: Doc = field(default_factory=Doc)
    controls: list = field(default_factory=list)
    awareness: dict = field(default_factory=dict)
    ws: object = None
    reader: asyncio.Task | None = None
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    _remote: bool = False

    @property
    def text(self) -> str:
        return str(self.doc.get(TEXT, type=Text))

    async def connect(self, invisible: bool = False) -> "YClient":
        ticket = await asyncio.to_thread(self.room.ticket, self.pad, self.name, self.cookie, invisible)
        self.ws = await self.room.socket(self.pad, ticket)
        if not hasattr(self, "_sub"):
            self._sub = self.doc.observe(self._local)
        self.synced = asyncio.Event()
        self.reader = asyncio.create_task(self._read())
        await self.ws.send(sync_frame(0, self.doc.get_state()))
        await asyncio.wait_for(self.synced.wait(), 30)
        return self

    def _local(self, event) -> None:
        if not self._remote and self.ws is not None:
            asyncio.get_running_loop().create_task(self._send(sync_frame(2, event.update)))

    async def _send(self, data: bytes) -> None:
        try:
            await self.ws.send(data)
        except websockets.ConnectionClosed:
            pass

    async def _read(self) -> None:
        try:
            async for data in self.ws:
                kind, pos = read_var_uint(data, 0)
                if kind == 0:
                    sub, pos = read_var_uint(data, pos)
                    payload, _ = read_bytes(data, pos)
                    if sub == 0:
                        await self.ws.send(sync_frame(1, self.doc.get_update(payload)))
                    else:
                        self._remote = True
                        try:
                            self.doc.apply_update(payload)
                        finally:
                            self._remote = False
                        if sub == 1:
                            self.synced.set()
                elif kind == 1:
                    payload, _ = read_bytes(data, pos)
                    for client, clock, state in parse_awareness(payload):
                        self.awareness[client] = json.loads(state)
                elif kind == CONTROL:
                    payload, _ = read_bytes(data, pos)
                    self.controls.append(json.loads(payload))
        except websockets.ConnectionClosed:
            pass

    async def type(self, chars: str, at: int | None = None) -> None:
        text = self.doc.get(TEXT, type=Text)
        text.insert(len(text) if at is None else at, chars)

    async def set_awareness(self, client: int, state: dict, clock: int = 1) -> None:
        await self.ws.send(frame(1, awareness_payload([(client, clock, json.dumps(state))])))

    async def command(self, obj: dict) -> None:
        await self.ws.send(control(obj))

    async def wait(self, check, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting; text={self.text!r} controls={self.controls[-5:]}")

    def control_ops(self, op: str) -> list[dict]:
        return [c for c in self.controls if c.get("op") == op]

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


@pytest.fixture(scope="module")
def vm_site(tmp_path_factory):
    """An installation with the python3 image (base) built, for runs from the pad page (SQLite)."""
    from .conftest import new_installation

    port = free_port()   # the console URL set, so that the API's pad `url` is the page's address
    inst, drop = new_installation(tmp_path_factory.mktemp("padrun"), "sqlite", OPENHOSTING_SANDBOX_POOL_SIZE="1",
                                  OPENHOSTING_CONSOLE_BIND=f"127.0.0.1:{port}",
                                  OPENHOSTING_CONSOLE_URL=f"http://127.0.0.1:{port}")
    inst.start(("image", "build", "base"))
    from .test_pads_run import warm_up

    warm_up(inst, ["base"])   # the pool's template boots once (minutes under TCG): readiness, not timing
    yield inst
    inst.stop()
    inst.purge_libvirt()
    drop()


def login(inst: Installation, name: str):
    """(PadApi, session token) of a new pads user."""
    from .pads import PadApi, make_user

    user = make_user(inst, name)
    api = PadApi(inst, user)
    r = api.post("/api/auth/login", json_body={"username": user.email, "password": user.secret}, auth=False)
    assert r.status == 200, r.text
    return api, r.json()["token"]
