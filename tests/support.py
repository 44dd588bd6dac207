"""Test support: a real openhosting installation (gunicorn API + agent) on loopback, and an HTTP client.

Nothing here is mocked: the server is `openhosting-admin serve`, the schema comes from `db upgrade`.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADMIN = str(Path(sys.executable).parent / "openhosting-admin")


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range (32768 and up by default): a port from
    bind(0) is ephemeral, so an outgoing connection could take it before our server binds it (CI saw
    a console proxy fail so). Random, so concurrent tests rarely pick the same one; checked free."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        port = random.randrange(10000, max(10001, low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def error(self) -> str | None:
        return self.headers.get("x-elastic-error")

    def kv(self) -> dict[str, str]:
        out = {}
        for line in self.text.split("\n"):
            if line:
                key, _, value = line.partition(" ")
                out[key] = value
        return out

    def blocks(self) -> list[dict[str, str]]:
        return [Response(self.status, self.headers, b.encode()).kv()
                for b in self.text.split("\n\n") if b.strip()]

    def json(self):
        return json.loads(self.body)


@dataclass
class User:
    uuid: str
    secret: str


class Api:
    """A small HTTP client bound to one user; every call opens a fresh loopback connection."""

    def __init__(self, port: int, user: User | None):
        self.port = port
        self.user = user

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict | None = None, auth: tuple[str, str] | None | bool = True,
                timeout: float = 120) -> Response:
        hdrs = dict(headers or {})
        if auth is True and self.user:
            auth = (self.user.uuid, self.user.secret)
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            hdrs["Authorization"] = f"Basic {token}"
        if isinstance(body, str):
            body = body.encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            conn.close()

    def get(self, path: str, **kw) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body=None, **kw) -> Response:
        return self.request("POST", path, body=body, **kw)

    def post_kv(self, path: str, fields: dict, as_json: bool = False, **kw) -> Response:
        if as_json:
            return self.post(path, json.dumps(fields), headers={"Content-Type": "application/json",
                                                              "Accept": "application/json"}, **kw)
        body = "".join(f"{k} {v}\n" for k, v in fields.items())
        return self.post(path, body, headers={"Content-Type": "application/octet-stream"}, **kw)

    def create_drive(self, size: int | str = 1 << 20, name: str = "test", **extra) -> str:
        r = self.post_kv("/drives/create", {"name": name, "size": size, **extra})
        assert r.status == 200, r.text
        return r.kv()["drive"]


@dataclass
class Installation:
    """One openhosting installation: a state directory, a database, an API server and an agent."""

    state_dir: Path
    database_url: str
    env_extra: dict = field(default_factory=dict)
    port: int = 0
    api: subprocess.Popen | None = None
    agent: subprocess.Popen | None = None
    terminal: subprocess.Popen | None = None   # the terminal service (SSH gateway + proxy sessions)
    ssh_port: int = 0
    console_port: int = 0                     # the console proxy's (picked on first use)
    proxy: subprocess.Popen | None = None
    _accounts: object = None

    @property
    def env(self) -> dict:
        env = dict(os.environ)
        env.update({
            "OPENHOSTING_STATE_DIR": str(self.state_dir),
            "OPENHOSTING_DATABASE_URL": self.database_url,
            "OPENHOSTING_JOB_POLL_INTERVAL": "0.05",
            "OPENHOSTING_CONSOLE_BIND": f"127.0.0.1:{self.console_port or self._pick_console_port()}",
        })
        env.update({k: v for k, v in self.env_extra.items() if v is not None})
        for key in [k for k, v in self.env_extra.items() if v is None]:   # None: unset
            env.pop(key, None)
        return env

    def _pick_console_port(self) -> int:
        self.console_port = free_port()
        return self.console_port

    @property
    def console_url(self) -> str:
        """The console proxy's base URL (what the API puts in console links)."""
        return self.env.get("OPENHOSTING_CONSOLE_URL") or f"http://{self.env['OPENHOSTING_CONSOLE_BIND']}"

    def admin(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([ADMIN, *args], env=self.env, capture_output=True, text=True, check=check,
                              timeout=300)

    def start(self, *setup: tuple[str, ...]) -> "Installation":
        """Migrate, run any `setup` admin commands (e.g. ("image", "build", "base")), start API and agent."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.admin("db", "upgrade")
        for command in setup:
            self.admin(*command)
        self.start_api()
        self.start_proxy()
        self.start_agent()
        return self

    def start_api(self) -> None:
        self.port = self.port or free_port()
        log = open(self.state_dir / "api.log", "ab")
        self.api = subprocess.Popen([ADMIN, "serve", "--bind", f"127.0.0.1:{self.port}", "--workers", "2"],
                                    env=self.env, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise RuntimeError(f"API server exited: {(self.state_dir / 'api.log').read_text()[-2000:]}")
            # A real HTTP answer, not just an open port: a killed server's last workers may still
            # hold the listening socket for a moment and reset the connection.
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/drives/list")
                if conn.getresponse().status == 401:
                    conn.close()
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("API server did not start")

    def start_proxy(self) -> None:
        """`openhosting-admin console-proxy` on this installation's console port; waits for /health."""
        bind = self.env["OPENHOSTING_CONSOLE_BIND"]
        host, port = bind.rsplit(":", 1)
        log = open(self.state_dir / "proxy.log", "ab")
        self.proxy = subprocess.Popen([ADMIN, "console-proxy", "--bind", bind], env=self.env, stdout=log,
                                      stderr=log, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proxy.poll() is not None:
                raise RuntimeError(f"console proxy exited: {(self.state_dir / 'proxy.log').read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection(host, int(port), timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("console proxy did not start")

    def stop_proxy(self, sig: int = signal.SIGTERM) -> None:
        self._stop(self.proxy, sig)

    def start_agent(self) -> None:
        log = open(self.state_dir / "agent.log", "ab")
        self.agent = subprocess.Popen([ADMIN, "agent"], env=self.env, stdout=log, stderr=log,
                                      start_new_session=True)

    def start_terminal(self) -> None:
        """The terminal service (workspaces' terminal ports): SSH on a free loopback port, the
        proxy's Unix socket under the run directory; waits until both listen."""
        self.ssh_port = self.ssh_port or free_port()
        log = open(self.state_dir / "terminal.log", "ab")
        self.terminal = subprocess.Popen([ADMIN, "terminal-service", "--ssh-bind", f"127.0.0.1:{self.ssh_port}"],
                                         env=self.env, stdout=log, stderr=log, start_new_session=True)
        sock = self.state_dir / "run" / "terminal.sock"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.terminal.poll() is not None:
                raise RuntimeError(f"terminal service exited: {(self.state_dir / 'terminal.log').read_text()[-2000:]}")
            if sock.exists():      # made after the SSH listener
                return
            time.sleep(0.05)
        raise RuntimeError("terminal service did not start")

    def stop_terminal(self, sig: int = signal.SIGTERM) -> None:
        self._stop(self.terminal, sig)

    @staticmethod
    def _stop(proc: subprocess.Popen | None, sig: int) -> None:
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_api(self, sig: int = signal.SIGTERM) -> None:
        self._stop(self.api, sig)

    def stop_agent(self, sig: int = signal.SIGTERM) -> None:
        self._stop(self.agent, sig)

    def stop(self) -> None:
        self.stop_terminal()
        self.stop_agent()
        self.stop_proxy()
        self.stop_api()
        if self._accounts is not None:
            self._accounts.db.dispose()
            self._accounts = None

    def purge_libvirt(self) -> None:
        """Remove every libvirt domain and network this installation created (and nothing else)."""
        id_file = self.state_dir / "installation-id"
        if not id_file.exists():
            return
        from hypervisor.host import Host

        host = Host(id_file.read_text().strip())
        for guest in host.guests():
            guest.remove()
        for net in host.networks():
            net.remove()

    def create_user(self, name: str = "") -> User:
        """A new account, made through the accounts service on this installation's database (the
        `openhosting-admin user create` command itself is tested in test_admin.py)."""
        if self._accounts is None:
            from controlplane.config import Settings
            from controlplane.db import Database
            from controlplane.services.accounts import Accounts

            self._accounts = Accounts(Database(Settings.from_env(self.env)))
        user, secret = self._accounts.create(name)
        return User(uuid=user, secret=secret)

    def client(self, user: User | None = None) -> Api:
        return Api(self.port, user)


def make_database(kind: str) -> tuple[str, callable]:
    """A fresh database URL of the given kind and a function that drops it."""
    if kind == "sqlite":
        return "", lambda: None
    admin_url = os.environ["OPENHOSTING_TEST_POSTGRES_URL"]
    import psycopg

    name = f"oh_test_{uuid.uuid4().hex[:12]}"
    plain = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return admin_url.rsplit("/", 1)[0] + "/" + name, drop
