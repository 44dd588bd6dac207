"""The SSH gateway to workspaces (paramiko's server side), inside the terminal service.

``ssh -p PORT <workspace id>@HOST`` with a key the workspace's owner registered (`services/ssh_keys`)
opens the same shell a browser terminal gets (`hub.PtyHub`): ``pty-req`` and ``window-change`` set
the terminal's size, ``shell`` starts the login shell (in a terminal when the client asked for one,
else with plain pipes), ``exec`` runs a command through ``bash -lc`` and returns its exit status (its
stdout and stderr apart, unless a terminal was asked for). No port forwarding, no subsystems (sftp).

Refusals: a key nobody registered fails authentication (``Permission denied (publickey)``); a key
someone registered is let in and then told, on stderr with exit status 1, why there is no shell: "no
workspace X for this user" (whether X is another user's or does not exist), "is stopped (auto_resume
is off)", "was removed", … The host key is made once (ed25519) under the state directory.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path

import paramiko

from ..services.ssh_keys import SshKeys
from .hub import PtyHub, Refused

log = logging.getLogger("openhosting.terminal.ssh")


def host_key(path: Path) -> paramiko.PKey:
    """The gateway's ed25519 host key at `path`, made the first time (0600)."""
    if not path.exists():
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                         serialization.NoEncryption())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        try:
            os.link(tmp, path)       # the first writer wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return paramiko.Ed25519Key(filename=str(path))


class _Request:
    """What the client asked of one session channel: a terminal (rows, cols), then a shell or a command."""

    def __init__(self):
        self.pty: tuple[int, int] | None = None
        self.kind: str | None = None
        self.command: str | None = None
        self.session = None
        self.ready = threading.Event()


class _Server(paramiko.ServerInterface):
    """One connection's answers to the client's requests (paramiko calls these on its thread); a
    connection may open several session channels (one per command of a client that reuses it)."""

    def __init__(self, gate: "Gateway"):
        self.gate = gate
        self.workspace_id = ""
        self.owner: str | None = None
        self.requests: dict[int, _Request] = {}

    def request(self, channel) -> _Request:
        return self.requests.setdefault(channel.get_id(), _Request())

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        blob = key.asbytes()
        owner = self.gate.owner_of(username)
        if owner is not None and self.gate.keys.owns(owner, blob):
            self.workspace_id, self.owner = username, owner
            return paramiko.AUTH_SUCCESSFUL
        if self.gate.keys.known(blob):   # a user of ours: let in to be told why there is no shell
            self.workspace_id, self.owner = username, None
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        if kind == "session":
            self.requests[chanid] = _Request()
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_pty_request(self, channel, term, width, height, pixelwidth, pixelheight, modes):
        self.request(channel).pty = (height or 24, width or 80)
        return True

    def check_channel_window_change_request(self, channel, width, height, pixelwidth, pixelheight):
        req = self.request(channel)
        req.pty = (height or 24, width or 80)
        if req.session is not None:
            try:
                req.session.resize(*req.pty)
            except Exception:  # noqa: BLE001 (a session that just ended)
                pass
        return True

    def check_channel_shell_request(self, channel):
        req = self.request(channel)
        if req.kind is not None:
            return False
        req.kind = "shell"
        req.ready.set()
        return True

    def check_channel_exec_request(self, channel, command):
        req = self.request(channel)
        if req.kind is not None:
            return False
        req.kind = "exec"
        req.command = command.decode("utf-8", "replace")
        req.ready.set()
        return True

    def check_channel_env_request(self, channel, name, value):
        return False


class Gateway:
    def __init__(self, hub: PtyHub, keys: SshKeys, key: paramiko.PKey):
        self.hub = hub
        self.keys = keys
        self.key = key
        self.listener: socket.socket | None = None

    def owner_of(self, workspace_id: str) -> str | None:
        from ..models import Workspace

        if len(workspace_id) != 32:
            return None
        with self.hub.db.read_session() as s:
            ws = s.get(Workspace, workspace_id)
            return ws.owner if ws is not None else None

    def listen(self, bind: str) -> socket.socket:
        host, _, port = bind.rpartition(":")
        sock = socket.create_server((host.strip("[]") or "127.0.0.1", int(port)), reuse_port=False)
        self.listener = sock
        return sock

    def serve_forever(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return              # closed: the service is stopping
            threading.Thread(target=self.handle, args=(client,), name="ssh-session", daemon=True).start()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()

    # --- one connection -----------------------------------------------------------------------

    def handle(self, client: socket.socket) -> None:
        transport = paramiko.Transport(client)
        transport.add_server_key(self.key)
        server = _Server(self)
        try:
            transport.start_server(server=server)
            idle_since = time.monotonic()
            while transport.is_active():
                chan = transport.accept(1.0)
                if chan is None:
                    if not transport.is_authenticated() and time.monotonic() - idle_since > 120:
                        log.info("ssh: no authentication within 120 s")
                        return
                    continue
                threading.Thread(target=self._channel, args=(chan, server), name="ssh-channel",
                                 daemon=True).start()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            log.info("ssh: connection ended: %s", exc)
        except Exception:  # noqa: BLE001
            log.exception("ssh: connection failed")
        finally:
            transport.close()

    def _channel(self, chan: paramiko.Channel, server: _Server) -> None:
        try:
            req = server.request(chan)
            if not req.ready.wait(60):
                self._refuse(chan, "no shell or command requested")
                return
            self._session(chan, server, req)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            log.info("ssh: session ended: %s", exc)
        except Exception:  # noqa: BLE001
            log.exception("ssh: session failed")
            chan.close()

    def _refuse(self, chan: paramiko.Channel, reason: str) -> None:
        chan.sendall_stderr(f"openhosting: {reason}\r\n".encode())
        chan.send_exit_status(1)
        chan.shutdown_write()
        chan.close()

    def _session(self, chan: paramiko.Channel, server: _Server, req: _Request) -> None:
        if server.owner is None:
            self._refuse(chan, f"no workspace {server.workspace_id[:64]} for this user")
            return
        try:
            entry = self.hub.enter(server.owner, server.workspace_id, auto_resume=True)
            if req.kind == "shell" and req.pty is not None:
                proc = self.hub.open_shell(entry, *req.pty)
            else:
                proc = self.hub.run(entry, req.command, pty=req.pty)
        except Refused as exc:
            self._refuse(chan, str(exc))
            return
        try:
            if hasattr(proc, "resize"):
                req.session = proc
                status, reason = self._relay_pty(chan, proc, entry.workspace_id)
            else:
                status, reason = self._relay_exec(chan, proc, entry.workspace_id)
        finally:
            self.hub.closed(entry)
        if reason:
            chan.sendall_stderr(f"\r\nopenhosting: {reason}\r\n".encode())
        chan.send_exit_status(status)
        chan.shutdown_write()
        chan.close()

    def _relay_pty(self, chan: paramiko.Channel, session, workspace_id: str) -> tuple[int, str]:
        from hypervisor.microvm.guestd import GuestError

        def keys():
            try:
                while data := chan.recv(65536):
                    session.write(data)
            except (GuestError, OSError, EOFError):
                pass
            session.chan.cancel()           # the client went: hang up, as a terminal does

        threading.Thread(target=keys, name="ssh-keys", daemon=True).start()
        try:
            while data := session.read():
                chan.sendall(data)
        except GuestError:
            return 255, self.hub.end_reason(workspace_id)
        except OSError:
            session.chan.cancel()
            return 255, ""
        return status_of(session.exit_code, session.signal), ""

    def _relay_exec(self, chan: paramiko.Channel, proc, workspace_id: str) -> tuple[int, str]:
        from hypervisor.microvm.guestd import GuestError

        def stdin():
            try:
                while data := chan.recv(65536):
                    proc.write(data)
                if chan.closed:
                    proc.cancel()
                else:
                    proc.close_stdin()
            except (GuestError, OSError, EOFError):
                pass

        threading.Thread(target=stdin, name="ssh-stdin", daemon=True).start()
        try:
            for stream, data in proc:
                (chan.sendall if stream == "stdout" else chan.sendall_stderr)(data)
        except GuestError:
            return 255, self.hub.end_reason(workspace_id)
        except OSError:
            proc.cancel()
            return 255, ""
        result = proc.result
        return status_of(result.exit_code, result.signal), ""


def status_of(code: int | None, signal: int | None) -> int:
    if code is not None:
        return code
    return 128 + signal if signal else 255

