"""The guest-agent protocol against a fake qemu-ga (injected, no monkeypatching).

The real agent is exercised in test_hypervisor_vm.py when a qemu-ga binary is available.
"""

from __future__ import annotations

import base64
import json
import time

import libvirt
import pytest

from hypervisor import errors
from hypervisor.guest import ExecResult, Guest


class FakeDomain:
    def name(self):
        return "oh-fake-1"

    def UUIDString(self):
        return "00000000-0000-4000-8000-000000000001"

    def isActive(self):
        return 1


def libvirt_error(code: int, message: str) -> libvirt.libvirtError:
    exc = libvirt.libvirtError(message)
    exc.err = (code, libvirt.VIR_FROM_QEMU, message, libvirt.VIR_ERR_ERROR, None, None, None, 0, 0)
    return exc


class FakeAgent:
    """Speaks qemu-ga's JSON for the commands the layer uses; a process exits after ``polls`` polls."""

    def __init__(self, polls: int = 2, exitcode: int = 0):
        self.polls, self.exitcode = polls, exitcode
        self.files: dict[str, bytes] = {}
        self.handles: dict[int, list] = {}
        self.calls: list[dict] = []
        self.timeouts: list[int] = []
        self.exec_args = None
        self.fail_with: libvirt.libvirtError | None = None

    def __call__(self, dom, text, timeout, flags):
        assert isinstance(dom, FakeDomain) and flags == 0 and isinstance(timeout, int) and timeout >= 1
        self.timeouts.append(timeout)
        if self.fail_with is not None:
            raise self.fail_with
        cmd = json.loads(text)
        self.calls.append(cmd)
        args = cmd.get("arguments", {})
        name = cmd["execute"]
        if name == "guest-ping":
            return json.dumps({"return": {}})
        if name == "guest-exec":
            self.exec_args = args
            self.left = self.polls
            return json.dumps({"return": {"pid": 42}})
        if name == "guest-exec-status":
            assert args == {"pid": 42}
            self.left -= 1
            if self.left > 0:
                return json.dumps({"return": {"exited": False}})
            stdin = base64.b64decode(args.get("input-data", "") or self.exec_args.get("input-data", ""))
            out = b"out:" + stdin
            return json.dumps({"return": {"exited": True, "exitcode": self.exitcode,
                                          "out-data": base64.b64encode(out).decode(),
                                          "err-data": base64.b64encode(b"err").decode()}})
        if name == "guest-file-open":
            if args["path"].startswith("/missing/"):
                return json.dumps({"error": {"class": "GenericError", "desc": "No such file or directory"}})
            handle = 1000 + len(self.handles)
            self.handles[handle] = [args["path"], bytearray(self.files.get(args["path"], b"")
                                                            if args["mode"] == "r" else b""), 0]
            return json.dumps({"return": handle})
        if name == "guest-file-write":
            self.handles[args["handle"]][1] += base64.b64decode(args["buf-b64"])
            return json.dumps({"return": {"count": 0, "eof": False}})
        if name == "guest-file-read":
            path, data, pos = self.handles[args["handle"]]
            chunk = bytes(data[pos:pos + args["count"]])
            self.handles[args["handle"]][2] = pos + len(chunk)
            return json.dumps({"return": {"count": len(chunk), "buf-b64": base64.b64encode(chunk).decode(),
                                          "eof": pos + len(chunk) >= len(data)}})
        if name == "guest-file-close":
            path, data, _ = self.handles.pop(args["handle"])
            self.files[path] = bytes(data)
            return json.dumps({"return": {}})
        return json.dumps({"error": {"class": "CommandNotFound", "desc": f"unknown command {name}"}})


def guest(agent) -> Guest:
    return Guest(FakeDomain(), agent=agent)


def test_exec_polls_until_exit_and_decodes_output():
    agent = FakeAgent(polls=3, exitcode=3)
    result = guest(agent).agent_exec("/bin/sh", ["-c", "cat"], input_data=b"hello", env={"A": "1"})
    assert result == ExecResult(exit_code=3, stdout=b"out:hello", stderr=b"err")
    code, out, err, *_ = result
    assert (code, out, err) == (3, b"out:hello", b"err")
    assert agent.exec_args == {"path": "/bin/sh", "arg": ["-c", "cat"], "capture-output": True,
                               "input-data": base64.b64encode(b"hello").decode(), "env": ["A=1"]}
    assert [c["execute"] for c in agent.calls].count("guest-exec-status") == 3


def test_exec_timeout_is_enforced_from_the_host():
    agent = FakeAgent(polls=10**9)
    start = time.monotonic()
    with pytest.raises(errors.GuestExecTimeout) as info:
        guest(agent).agent_exec("/bin/sleep", ["100"], timeout=0.3)
    assert 0.3 <= time.monotonic() - start < 2
    assert info.value.context["pid"] == 42 and isinstance(info.value, errors.AgentTimeout)


def test_file_write_in_chunks_and_read_back():
    agent = FakeAgent()
    g = guest(agent)
    g.FILE_CHUNK = 1000
    payload = bytes(range(256)) * 10
    g.agent_file_write("/tmp/x", payload)
    assert agent.files["/tmp/x"] == payload and not agent.handles
    assert [c["execute"] for c in agent.calls].count("guest-file-write") == 3
    assert g.agent_file_read("/tmp/x") == payload and not agent.handles
    g.agent_file_write("/tmp/empty", b"")
    assert agent.files["/tmp/empty"] == b""


def test_agent_errors():
    agent = FakeAgent()
    g = guest(agent)
    with pytest.raises(errors.AgentCommandFailed, match="No such file"):
        g.agent_file_write("/missing/x", b"1")
    with pytest.raises(errors.AgentCommandFailed, match="guest-bogus"):
        g.agent_command({"execute": "guest-bogus"})
    assert g.agent_ping()
    agent.fail_with = libvirt_error(libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
                                    "Guest agent is not responding: QEMU guest agent is not connected")
    assert not g.agent_ping()
    with pytest.raises(errors.AgentUnavailable):
        g.agent_exec("/bin/true")
    agent.fail_with = libvirt_error(libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
                                    "Guest agent is not responding: Guest agent not available for now")
    with pytest.raises(errors.AgentTimeout) as info:
        g.agent_command({"execute": "guest-ping"}, timeout=2)
    assert info.value.context["timeout"] == 2


def test_timeouts_are_whole_seconds_at_least_one():
    agent = FakeAgent()
    g = guest(agent)
    g.agent_command({"execute": "guest-ping"}, timeout=0.2)
    g.agent_command('{"execute": "guest-ping"}', timeout=7.4)
    assert agent.timeouts == [1, 7]


def test_wait_for_agent_gives_up():
    agent = FakeAgent()
    agent.fail_with = libvirt_error(libvirt.VIR_ERR_AGENT_UNRESPONSIVE, "QEMU guest agent is not connected")
    with pytest.raises(errors.AgentTimeout):
        guest(agent).wait_for_agent(timeout=0.2, interval=0.01)
    agent.fail_with = None
    assert guest(agent).wait_for_agent(timeout=1) < 1
