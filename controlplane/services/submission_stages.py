"""One submission inside its VM (workspaces-api.md §B-§D): lay the files, run `workspace_init`, then
the scenario's stages init → build → run → test → post as `user`, and decide the status.

`Execution.run()` drives a guest through the operations of `GuestChannel` (exec_stream, put_file,
get_file, untar) and returns an `Outcome`; it knows nothing of the database or of VMs. Status rules
are the contract's table: the first final status wins, post never changes it, none set → 15.
Each stage runs under ``/bin/sh`` with limits (processes of the user, one file's size, one
process's address space) and then ``/bin/sh -c <command>``, with §D's environment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from hypervisor.microvm import tarcheck
from hypervisor.microvm.guestd import GuestError, GuestNotFound

from . import submissions as sub
from .projectconfig import STAGES
from .submission_results import parse_result, validate_report
from storage.errors import BadData
from storage.submissions import SubmissionFiles, concat, pack_auxdata, without

WS = "/home/user/workspace"
RUNTIME = "/sphere-engine/runtime"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_RESULT = 1024 * 1024
MAX_REPORT = 16 * 1024**2
MAX_AUXDATA = 64 * 1024**2
INIT_TIMEOUT = 600
# $0 is the stage's command; limits that cannot be set (a hard limit lower already) are left as they are.
# POSIX sh, not bash: under TCG every exec in a fresh clone translates its code anew, and bash is the
# biggest. dash names the process limit -p and counts -f in 512-byte blocks; bash (a /bin/sh that is
# bash) says -u and KiB. -v is KiB in both.
WRAPPER = ('if [ -n "$BASH_VERSION" ]; then ulimit -u "$OH_NPROC"; ulimit -f "$OH_FSIZE_KB"; '
           'else ulimit -p "$OH_NPROC"; ulimit -f "$((OH_FSIZE_KB * 2))"; fi 2>/dev/null; '
           'ulimit -v "$OH_AS_KB" 2>/dev/null; unset OH_NPROC OH_FSIZE_KB OH_AS_KB; exec /bin/sh -c "$0"')
AUX_TAR = 'if [ -d "$0" ]; then exec tar -C "$0" -cf - .; else exit 3; fi'


@dataclass(frozen=True)
class Layout:
    """Where things are in the guest: the workspace, the runtime directory (its parent is made and
    given to `uid`), the user."""
    ws: str = WS
    runtime: str = RUNTIME
    uid: int = 1000

    @property
    def result_file(self) -> str:
        return f"{self.runtime}/scenario_result.json"

    @property
    def report_file(self) -> str:
        return f"{self.runtime}/tests_report.json"


VM_LAYOUT = Layout()
#: The layout made once in every warm pool's template (as root, after the warm-up), so that a
#: submission's VM has it: `prepare` then spends no guest command on it (0.2 s under TCG).
TEMPLATE_SETUP = (f"id -u user >/dev/null 2>&1 || useradd -m -u {VM_LAYOUT.uid} -U -s /bin/bash user; "
                  f"mkdir -p {WS} {RUNTIME}/data {RUNTIME}/stages && chown user:user {WS.rsplit('/', 1)[0]} {WS} "
                  f"&& chown -R user:user {RUNTIME.rsplit('/', 1)[0]}")


@dataclass
class Limits:
    output_cap: int = 16 * 1024**2
    wall: float = 1800.0
    nproc: int = 256
    file_bytes: int = 256 * 1024**2
    address_space: int = 192 * 1024**2


@dataclass
class Outcome:
    status: int
    reason: str | None = None
    score: float = 0.0
    time: float | None = None
    stages: dict | None = None
    streams: dict = field(default_factory=dict)


class DebugLog:
    def __init__(self):
        self.started = time.monotonic()
        self.lines: list[str] = []

    def __call__(self, text: str) -> None:
        self.lines.append(f"[{time.monotonic() - self.started:8.3f}s] {text}")

    def data(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()


class ProjectError(Exception):
    """The configuration or the project's files cannot be used: status 22."""


class Execution:
    """One submission's work in a VM already taken; `guest` is a connected GuestChannel."""

    def __init__(self, submission_id: int, scenario: str, scenario_body: dict, read_only: list[str],
                 workspace_init: str, project_files: bytes, guest, files: SubmissionFiles, limits: Limits,
                 log: DebugLog, on_execution=lambda: None, layout: Layout = VM_LAYOUT):
        self.id = submission_id
        self.at = layout
        self.scenario = scenario
        self.body = scenario_body
        self.read_only = read_only
        self.workspace_init = workspace_init
        self.project_files = project_files
        self.guest = guest
        self.files = files
        self.limits = limits
        self.log = log
        self.on_execution = on_execution
        self.deadline = time.monotonic() + limits.wall
        self.streams: dict[str, int] = {}
        self.stages: dict[str, dict] = {}
        self.final: int | None = None
        self.reason: str | None = None
        self.score = 0.0
        self.finished: dict[str, tuple[str, str]] = {}   # stage -> (exit code, signal) as env text

    # ---- environment -----------------------------------------------------------------------------

    def env(self, stage: str | None) -> dict[str, str]:
        ws, rt = self.at.ws, self.at.runtime
        env = {"PATH": PATH, "HOME": "/home/user", "USER": "user", "LANG": "C.UTF-8",
               "SE_PATH_WORKSPACE": ws, "SE_PATH_RUNTIME": rt, "SE_PATH_RUNTIME_DATA": f"{rt}/data",
               "SE_PATH_FINAL_TESTS_REPORT": self.at.report_file,
               "SE_PATH_UNIT_TESTS_REPORT": f"{rt}/unit_tests_report.xml",
               "SE_PATH_TEST_CASES": f"{ws}/.sphere-engine/test_cases", "SE_NETWORK_PORT_HTTP": "8080",
               "SE_NETWORK_PORT_MYSQL": "3306", "SE_NETWORK_PORT_MONGODB": "27017", "SE_NETWORK_PORT_VNC": "5900",
               "SE_PATH_SCENARIO_RESULT": self.at.result_file, "SE_SCENARIO": self.scenario}
        if stage is not None:
            env["SE_CURRENT_STAGE"] = stage
            for name in STAGES[:4]:
                upper = name.upper()
                env[f"SE_PATH_STAGE_{upper}_STDOUT"] = f"{rt}/stages/{name}.stdout"
                env[f"SE_PATH_STAGE_{upper}_STDERR"] = f"{rt}/stages/{name}.stderr"
                code, sig = self.finished.get(name, ("", ""))
                env[f"SE_STAGE_{upper}_EXIT_CODE"] = code
                env[f"SE_STAGE_{upper}_SIGNAL"] = sig
        env.update(OH_NPROC=str(self.limits.nproc), OH_FSIZE_KB=str(self.limits.file_bytes // 1024),
                   OH_AS_KB=str(self.limits.address_space // 1024))
        return env

    # ---- the parts -------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Runtime directories (unless the template made them), the project's files, then the
        source (minus read-only paths)."""
        ws, rt, uid = self.at.ws, self.at.runtime, self.at.uid
        top = rt.rsplit("/", 1)[0]
        if self._made([ws, f"{rt}/data", f"{rt}/stages"]):
            self.log(f"{ws} and {rt} are there (made in the template)")
        else:
            done = self.guest.exec(["/bin/sh", "-c", 'mkdir -p "$0/data" "$0/stages" "$2" && chown -R "$3:$3" "$1"',
                                    rt, top, ws, str(uid)], uid=0, gid=0, timeout=120)
            if done.exit_code != 0:
                raise GuestError(reason=f"could not make {rt}: {self._how(done)} {done.stderr[-200:]!r}")
        source = self.files.load(self.id, sub.CLEAN_SOURCE) or b""
        source, skipped = without(source, self.read_only)
        for name in skipped:
            self.log(f"source member {name!r} skipped: read-only path of the project")
        both, project_members, source_members = concat(self.project_files, source)
        try:
            self.guest.untar(ws, both, beneath=ws, limits=tarcheck.TWO_PARTS)  # each part checked alone
        except GuestError as exc:
            if exc.kind in ("unsafe", "badarchive", "toolarge", "outside"):
                raise ProjectError(f"the project's files and the source could not be laid: {exc.message}") from None
            raise
        self.log(f"project files laid into {ws}: {project_members} members")
        self.log(f"source laid into {ws} over them: {source_members} members (one extraction)")

    def _made(self, paths: list[str]) -> bool:
        """Whether each of ``paths`` is a directory of the user (a stat each: no exec)."""
        try:
            for path in paths:
                st = self.guest.stat(path, uid=0, gid=0)
                if st.type != "d" or st.uid != self.at.uid:
                    return False
        except GuestError:
            return False
        return True

    def run_init(self) -> None:
        if not self.workspace_init.strip():
            self.log("workspace_init: none")
            return
        script = f"{self.at.runtime}/workspace_init"
        self.guest.put_file(script, self.workspace_init.encode(), mode=0o755)
        timeout = max(1.0, min(INIT_TIMEOUT, self.deadline - time.monotonic()))
        result, seconds = self._exec(script, timeout, "workspace_init_output",
                                     "workspace_init_error", self.env(None))
        failed = result.timed_out or result.exit_code != 0
        self.log(f"workspace_init: {self._how(result)} in {seconds:.2f} s" + (" (failed; stages run anyway)"
                                                                               if failed else ""))

    def _exec(self, command: str, timeout: float, out_name: str, err_name: str, env: dict):
        out = self.files.writer(self.id, out_name, self.limits.output_cap)
        err = self.files.writer(self.id, err_name, self.limits.output_cap)
        started = time.monotonic()
        try:
            proc = self.guest.exec_stream(["/bin/sh", "-c", WRAPPER, command], env=env, cwd=self.at.ws,
                                          timeout=timeout, kill_after=2.0)
            result = proc.wait(on_stdout=out.write, on_stderr=err.write)
        finally:
            seconds = time.monotonic() - started
            for name, writer in ((out_name, out), (err_name, err)):
                size = writer.close()
                if size:
                    self.streams[name] = size
                if writer.truncated:
                    self.log(f"{name} cut at {self.limits.output_cap} bytes")
        return result, seconds

    @staticmethod
    def _how(result) -> str:
        if result.timed_out:
            return f"timed out (signal {result.signal})"
        if result.signal is not None:
            return f"killed by signal {result.signal}"
        return f"exit {result.exit_code}"

    def set_status(self, stage: str | None, code: int, desc: str | None = None) -> None:
        if self.final is not None:
            return
        self.final = code
        self.reason = desc
        if stage is not None and stage in self.stages:
            self.stages[stage]["status_changed_to"] = {"code": code, "name": sub.NAMES[code], "desc": desc}
        self.log(f"status {code} ({sub.NAMES[code]}) set" + (f" by stage {stage}" if stage else "")
                 + (f": {desc}" if desc else ""))

    def _skip(self, name: str, why: str) -> None:
        self.stages[name] = {"time": 0, "skipped": True, "exit_code": None, "signal": None,
                             "status_changed_to": None}
        self.log(f"stage {name}: skipped ({why})")

    def run_stage(self, name: str):
        """Run one stage; None when it is skipped by the configuration or the wall limit."""
        spec = (self.body.get("stages") or {}).get(name) or {}
        command = spec.get("command")
        if command is None or spec.get("skip", False):
            self._skip(name, "no command" if command is None else "skip: true")
            return None
        left = self.deadline - time.monotonic()
        if left <= 1:
            self._skip(name, "the submission's wall-clock limit is spent")
            self.set_status(None, sub.TIME_LIMIT, "the submission's wall-clock limit was reached")
            return None
        timeout = float(spec.get("timeout", 60))
        walled = left < timeout
        result, seconds = self._exec(command, min(timeout, left), f"stage_{name}_output", f"stage_{name}_error",
                                     self.env(name))
        self.stages[name] = {"time": round(seconds, 2), "skipped": False,
                             "exit_code": result.exit_code if result.signal is None else None,
                             "signal": result.signal, "status_changed_to": None}
        self.finished[name] = ("" if result.exit_code is None else str(result.exit_code),
                               "" if result.signal is None else str(result.signal))
        self.log(f"stage {name}: {self._how(result)} in {seconds:.2f} s (timeout {timeout:g} s)")
        if self._later_active(name):     # later stages may read $SE_PATH_STAGE_<X>_STDOUT/STDERR
            for suffix, stream in (("stdout", f"stage_{name}_output"), ("stderr", f"stage_{name}_error")):
                self.guest.put_file(f"{self.at.runtime}/stages/{name}.{suffix}", self.files.load(self.id, stream) or b"")
        if result.timed_out:
            self.set_status(name, sub.TIME_LIMIT, "the submission's wall-clock limit was reached" if walled
                            else f"the {name} stage exceeded its timeout of {timeout:g} s")
        return result

    def _later_active(self, name: str) -> bool:
        later = STAGES[STAGES.index(name) + 1:]
        specs = self.body.get("stages") or {}
        return any((specs.get(n) or {}).get("command") is not None and not (specs.get(n) or {}).get("skip", False)
                   for n in later)

    def _read(self, path: str, limit: int) -> bytes | None:
        try:
            reader = self.guest.get_file(path)
        except GuestNotFound:
            return None
        except GuestError as exc:
            if exc.kind in ("access", "notfile", "outside"):
                self.log(f"{path} could not be read: {exc.message}")
                return None
            raise
        if reader.stat.size > limit:
            reader.close()
            raise ValueError(f"{path} is larger than {limit} bytes")
        return reader.read()

    # ---- the whole -------------------------------------------------------------------------------

    def stages_run(self) -> None:
        failed = lambda r: r is not None and (r.timed_out or r.signal is not None or r.exit_code != 0)  # noqa: E731
        test_active = bool(((self.body.get("stages") or {}).get("test") or {}).get("command")) and \
            not ((self.body.get("stages") or {}).get("test") or {}).get("skip", False)
        init = self.run_stage("init")
        if failed(init):
            self.set_status("init", sub.PROJECT_ERROR, "the init stage failed")
            for name in ("build", "run", "test"):
                self._skip(name, "the init stage failed")
        else:
            build = self.run_stage("build")
            if failed(build):
                self.set_status("build", sub.BUILD_ERROR, f"the build stage failed ({self._how(build)})")
                for name in ("run", "test"):
                    self._skip(name, "the build stage failed")
            else:
                run = self.run_stage("run")
                if failed(run) and not test_active:
                    self.set_status("run", sub.RUNTIME_ERROR, f"the run stage failed ({self._how(run)})")
                test = self.run_stage("test")
                self.judge(test)
        self.run_stage("post")

    def judge(self, test) -> None:
        """The test stage's verdict: its result file, its exit, the tests report (§B)."""
        if test is None:
            return
        try:
            raw = self._read(self.at.result_file, MAX_RESULT)
            if raw is not None:
                status, score = parse_result(raw)
                self.log(f"scenario result: status {status}, score {score:g}")
                if self.final is None:   # a status set before the test stage keeps score 0
                    self.score = score
                self.set_status("test", status)
        except ValueError as exc:
            self.set_status("test", sub.PROJECT_ERROR, str(exc))
        if test.timed_out or test.signal is not None or test.exit_code != 0:
            self.set_status("test", sub.FAIL, f"the test stage failed ({self._how(test)})")
        try:
            raw = self._read(self.at.report_file, MAX_REPORT)
            report = validate_report(raw) if raw is not None else []
        except ValueError as exc:
            self.set_status("test", sub.PROJECT_ERROR, str(exc))
            return
        bad = [e["name"] for e in report if e["status"] != "ok"]
        if bad:
            self.set_status("test", sub.FAIL, f"{len(bad)} of {len(report)} tests did not pass")

    def collect(self) -> None:
        """After post: the tests report and the auxdata directories."""
        try:
            raw = self._read(self.at.report_file, MAX_REPORT)
            if raw is not None:
                validate_report(raw)
                self.streams["tests_report"] = self.files.save(self.id, "tests_report", raw)
        except ValueError as exc:
            self.log(f"tests report not kept: {exc}")
        trees: dict[str, bytes] = {}
        for key, path in (self.body.get("auxdata") or {}).items():
            chunks: list[bytes] = []
            size = [0]

            def take(data: bytes) -> None:
                if size[0] <= MAX_AUXDATA:
                    chunks.append(data)
                    size[0] += len(data)

            proc = self.guest.exec_stream(["/bin/sh", "-c", AUX_TAR, path], env={"PATH": PATH}, cwd=self.at.ws,
                                           timeout=120)
            result = proc.wait(on_stdout=take, on_stderr=lambda _: None)
            if result.exit_code == 3:
                self.log(f"auxdata {key}: {path} is not a directory; skipped")
                continue
            if result.exit_code != 0:
                self.log(f"auxdata {key}: tar {self._how(result)}; what it wrote is kept")
            trees[key] = b"".join(chunks)
        try:
            packed = pack_auxdata(trees, MAX_AUXDATA)
        except BadData as exc:
            self.log(f"auxdata not kept: {exc.message}")
            packed = None
        if packed:
            self.streams["auxdata"] = self.files.save(self.id, "auxdata", packed)
            self.log(f"auxdata: {', '.join(trees)} ({len(packed)} bytes)")

    def run(self) -> Outcome:
        self.prepare()
        self.run_init()
        self.on_execution()
        self.stages_run()
        self.collect()
        if self.final is None:
            self.set_status(None, sub.OK)
        run = self.stages.get("run") or {}
        return Outcome(self.final, self.reason, self.score, float(run.get("time") or 0), self.stages,
                       self.streams)
