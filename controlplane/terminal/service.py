"""``openhosting-admin terminal-service``: the one process that holds workspaces' terminal ports.

Why one process of its own: a virtio-serial port takes one connection, and oh-guest drops the
sessions of a connection when another one says HELLO, so browser terminals and SSH must share one
holder. The console proxy may run several workers and restarts on its own; the SSH gateway needs a
long-lived listener anyway. So the terminal service holds the ports (`hub.PtyHub`), serves SSH on
``--ssh-bind`` (a thread per connection, `sshgate`), and serves the proxy's terminal WebSockets on a
Unix socket (``RUN_DIR/terminal.sock``, 0600; protocol in `wire`): the proxy checks the Origin and
claims the ticket, then hands the session over here. Restarting this service ends the open sessions
(their shells get SIGHUP); nothing else needs a restart.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from pathlib import Path

from ..config import Settings
from . import wire
from .hub import PtyHub, Refused

log = logging.getLogger("openhosting.terminal")


def default_socket(settings: Settings) -> Path:
    return settings.run_dir / "terminal.sock"


class ProxySessions:
    """The Unix socket the console proxy connects to, one connection per terminal WebSocket."""

    def __init__(self, hub: PtyHub, path: Path):
        self.hub = hub
        self.path = path
        self.listener: socket.socket | None = None

    def listen(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        sock.listen(128)
        self.listener = sock

    def serve_forever(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), name="terminal-session", daemon=True).start()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.path.unlink(missing_ok=True)

    def handle(self, conn: socket.socket) -> None:
        from hypervisor.microvm.guestd import GuestError

        with conn:
            try:
                first = wire.recv(conn)
                if first is None or first[0] != wire.OPEN:
                    return
                ask = wire.as_json(first[1])
                entry = self.hub.enter(ask.get("owner"), str(ask.get("workspace", "")),
                                       auto_resume=bool(ask.get("auto_resume", True)))
                session = self.hub.open_shell(entry, ask.get("rows"), ask.get("cols"))
            except Refused as exc:
                _send(conn, wire.ANSWER, {"ok": False, "reason": str(exc)})
                return
            except (wire.WireError, OSError):
                return
            try:
                _send(conn, wire.ANSWER, {"ok": True, "resumed": entry.resumed})
                threading.Thread(target=self._keys, args=(conn, session), name="terminal-keys",
                                 daemon=True).start()
                try:
                    while data := session.read():
                        if not _send(conn, wire.DATA, data):
                            session.chan.cancel()
                            return
                except GuestError:
                    _send(conn, wire.END, {"reason": self.hub.end_reason(entry.workspace_id), "exit": None})
                    return
                code = session.exit_code
                words = f"the shell exited ({code})" if code is not None else \
                    f"the shell ended (signal {session.signal})" if session.signal else "the terminal was closed"
                _send(conn, wire.END, {"reason": words, "exit": code})
            finally:
                self.hub.closed(entry)

    @staticmethod
    def _keys(conn: socket.socket, session) -> None:
        """Keys and resizes from the proxy; when it goes, hang the terminal up."""
        from hypervisor.microvm.guestd import GuestError

        try:
            while (got := wire.recv(conn)) is not None:
                kind, payload = got
                if kind == wire.DATA:
                    session.write(payload)
                elif kind == wire.RESIZE:
                    size = wire.as_json(payload)
                    from .hub import clamp

                    session.resize(clamp(size.get("rows"), 24), clamp(size.get("cols"), 80))
        except (GuestError, wire.WireError, OSError):
            pass
        if not session.ended:
            session.chan.cancel()


def _send(conn: socket.socket, kind: int, payload) -> bool:
    try:
        conn.sendall(wire.pack(kind, payload))
        return True
    except OSError:
        return False


def serve(settings: Settings, *, ssh_bind: str | None, socket_path: str | None = None) -> None:
    """Run the terminal service until SIGTERM/SIGINT."""
    from hypervisor.host import Host

    from ..db import Database
    from ..doorbell import notifier
    from ..services.ssh_keys import SshKeys
    from ..services.workspace_guest import workspace_vms
    from .sshgate import Gateway, host_key

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("paramiko").setLevel(logging.DEBUG if os.environ.get("OPENHOSTING_SSH_DEBUG") else
                                            logging.WARNING)
    db = Database(settings)
    host = Host(settings.installation_id, uri=settings.libvirt_uri)
    hub = PtyHub(settings, db, workspace_vms(settings, host), notify=notifier(settings.run_dir / "agent.sock"))
    proxy = ProxySessions(hub, Path(socket_path) if socket_path else default_socket(settings))
    gateway = None
    threads = []
    if ssh_bind and ssh_bind.lower() != "none":
        gateway = Gateway(hub, SshKeys(db), host_key(settings.state_dir / "ssh_host_ed25519_key"))
        gateway.listen(ssh_bind)
        threads.append(threading.Thread(target=gateway.serve_forever, name="ssh-gateway", daemon=True))
    proxy.listen()     # last: its socket appearing says the service is ready
    threads.append(threading.Thread(target=proxy.serve_forever, name="terminal-proxy", daemon=True))
    for thread in threads:
        thread.start()
    log.info("terminal service: proxy socket %s, ssh %s", proxy.path, ssh_bind if gateway else "off")
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    proxy.close()
    if gateway is not None:
        gateway.close()
    hub.close()
