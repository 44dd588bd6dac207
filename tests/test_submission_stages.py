"""The stage engine (services/submission_stages.py) against a real oh-guest run on the host (a
socketpair for the VM's port, tests/guestd_support.py): the contract's status table, environment,
streams, report, result and auxdata, in seconds. The same engine runs in VMs in
test_submissions_vm.py."""

from __future__ import annotations

import io
import json
import signal
import tarfile

import pytest

from controlplane.services import submissions as sub
from controlplane.services.submission_stages import DebugLog, Execution, Layout, Limits
from storage import workspace_tar
from storage.submissions import SubmissionFiles

from .containers import EXAMPLE, targz
from .guestd_support import UID, start

CONFIG = json.loads((EXAMPLE / "config.json").read_text())


@pytest.fixture(scope="module")
def guest():
    g = start()
    yield g
    g.stop()


@pytest.fixture
def run(guest, tmp_path):
    """run(scenario_body or example name, source files, ...) -> (Execution, Outcome)."""
    files = SubmissionFiles(tmp_path / "subs")
    layout = Layout(ws=str(guest.workspace), runtime=str(guest.root / "sphere-engine" / "runtime"), uid=UID)
    project = workspace_tar.pack_dir(EXAMPLE / "workspace", max_unpacked=1 << 30)
    counter = iter(range(1, 1000))

    def go(body, source=None, *, init="", limits=None, read_only=("tests",), premade=False):
        sid = next(counter)
        name = body if isinstance(body, str) else "custom"
        body = CONFIG["scenarios"][body] if isinstance(body, str) else body
        guest.channel.exec(["/bin/sh", "-c", 'rm -rf "$0"/* "$0"/.[!.]* "$1"', layout.ws,
                            str(guest.root / "sphere-engine")], uid=0, gid=0)
        if premade:     # what TEMPLATE_SETUP makes in a pool's template
            made = guest.channel.exec(["/bin/sh", "-c", 'mkdir -p "$0/data" "$0/stages" && chown -R "$1:$1" "$2"',
                                       layout.runtime, str(UID), str(guest.root / "sphere-engine")], uid=0, gid=0)
            assert made.exit_code == 0, made
        files.save(sid, sub.CLEAN_SOURCE, workspace_tar.clean(targz(source or {"workspace/x": b""}),
                                                              max_unpacked=1 << 20))
        ex = Execution(sid, name, body, list(read_only), init, project, guest.channel, files,
                       limits or Limits(), DebugLog(), layout=layout)
        outcome = ex.run()
        ex.data = lambda stream: files.load(sid, stream)
        return ex, outcome

    return go


def test_example_ok(run):
    ex, out = run("ok")
    assert (out.status, out.score, out.reason) == (15, 1.0, None), ex.log.data()
    assert out.stages["init"]["skipped"] and out.stages["run"]["exit_code"] == 0
    assert out.time == out.stages["run"]["time"]
    assert ex.data("stage_run_output") == b"5\n"
    assert [t["status"] for t in json.loads(ex.data("tests_report"))] == ["ok", "ok", "ok"]
    assert ex.data("stage_post_output") == b"post: test stage exit 0\n"
    assert set(out.streams) >= {"stage_run_output", "stage_test_error", "tests_report", "stage_post_output"}


@pytest.mark.parametrize("premade", [False, True], ids=["made-here", "made-in-template"])
def test_runtime_layout_is_made_unless_the_template_made_it(run, premade):
    ex, out = run("ok", premade=premade)
    assert out.status == 15, ex.log.data()
    assert (b"made in the template" in ex.log.data()) == premade


def test_example_fail_build_error_runtime_error(run):
    ex, out = run("fail")
    assert (out.status, out.score) == (14, 0.5) and out.stages["test"]["status_changed_to"]["code"] == 14
    ex, out = run("build_error")
    assert out.status == 11 and out.stages["build"]["exit_code"] == 1
    assert out.stages["run"]["skipped"] and out.stages["test"]["skipped"] and not out.stages["post"]["skipped"]
    assert b"undeclared" in ex.data("stage_build_error")   # gcc on samples/broken.c
    ex, out = run("runtime_error")
    assert out.status == 12 and out.stages["run"]["status_changed_to"]["code"] == 12
    assert b"ZeroDivisionError" in ex.data("stage_run_error")


def test_example_time_limit_keeps_first_status_and_score_zero(run):
    ex, out = run("time_limit")
    assert out.status == 13 and out.score == 0.0
    assert out.stages["run"]["signal"] == signal.SIGTERM and out.stages["run"]["exit_code"] is None
    assert out.stages["test"]["status_changed_to"] is None and out.stages["test"]["exit_code"] == 0
    assert ex.data("stage_post_output") == b"post: run stage signal 15\n"


def test_example_auxdata(run):
    ex, out = run("auxdata")
    assert out.status == 15
    with tarfile.open(fileobj=io.BytesIO(ex.data("auxdata")), mode="r:gz") as tar:
        names = {m.name: m for m in tar.getmembers()}
    assert {"results", "results/summary.txt", "results/plots/data.csv"} <= set(names)
    assert names["results/link-to-passwd"].issym() and not any(n.startswith("missing") for n in names)


def stages(**commands):
    return {"stages": {name: ({"command": c} if isinstance(c, str) else c) for name, c in commands.items()}}


def test_init_failure_is_project_error_and_post_runs(run):
    ex, out = run(stages(init="exit 3", build="echo no", run="echo no", post="echo post"))
    assert out.status == 22 and out.stages["init"]["exit_code"] == 3
    assert all(out.stages[n]["skipped"] for n in ("build", "run", "test"))
    assert ex.data("stage_post_output") == b"post\n"


def test_run_failure_with_test_active_lets_test_decide(run):
    judge = 'echo "$SE_STAGE_RUN_EXIT_CODE/$SE_STAGE_RUN_SIGNAL/$SE_STAGE_BUILD_EXIT_CODE"; cat "$SE_PATH_STAGE_RUN_STDOUT"'
    ex, out = run(stages(run="echo from-run; exit 4", test=judge))
    assert out.status == 15 and out.stages["run"]["status_changed_to"] is None
    assert ex.data("stage_test_output") == b"4//\nfrom-run\n"
    ex, out = run(stages(run="kill -9 $$", test='test -z "$SE_STAGE_RUN_EXIT_CODE" && exit 1'))
    assert out.stages["run"]["signal"] == 9 and out.status == 14
    assert out.stages["test"]["status_changed_to"]["code"] == 14


def test_reports_and_results(run):
    bad = '[{"name": "a", "status": "ok"}, {"name": "b", "status": "error", "error": "boom"}]'
    _, out = run(stages(test=f"echo '{bad}' > $SE_PATH_FINAL_TESTS_REPORT"))
    assert out.status == 14 and "1 of 2 tests" in out.reason
    _, out = run(stages(test="echo 'not json' > $SE_PATH_FINAL_TESTS_REPORT"))
    assert out.status == 22 and "not valid JSON" in out.reason
    _, out = run(stages(test="""echo '{"status": "runtime error", "score": 0.25}' > $SE_PATH_SCENARIO_RESULT"""))
    assert (out.status, out.score) == (12, 0.25)
    _, out = run(stages(test="""echo '{"status": 99}' > $SE_PATH_SCENARIO_RESULT"""))
    assert out.status == 22
    _, out = run(stages(run="true", post="exit 9"))
    assert out.status == 15 and out.stages["post"]["exit_code"] == 9   # post never changes the status


def test_environment_cwd_and_read_only(run):
    ex, out = run(stages(run='pwd; echo $SE_CURRENT_STAGE $SE_SCENARIO $SE_PATH_WORKSPACE; id -u; ls tests notes.txt'),
                  {"workspace/notes.txt": b"n", "workspace/tests/evil.py": b"x"})
    ws = ex.at.ws
    assert ex.data("stage_run_output").decode().splitlines()[:3] == [ws, f"run custom {ws}", str(UID)]
    assert b"evil.py" not in ex.data("stage_run_output") and b"notes.txt" in ex.data("stage_run_output")
    assert b"tests/evil.py" in ex.log.data()


def test_limits(run):
    ex, out = run(stages(run="yes | head -c 5000000"), limits=Limits(output_cap=1000))
    assert out.streams["stage_run_output"] == 1000 and b"cut at 1000" in ex.log.data()
    ex, out = run(stages(run="head -c 3000000 /dev/zero > big"), limits=Limits(file_bytes=1 << 20))
    assert out.status == 12
    ex, out = run(stages(run="sleep 1", post="echo post"), limits=Limits(wall=0.5))
    assert out.status == 13 and out.stages["run"]["skipped"] and out.stages["post"]["skipped"]
    ex, out = run(stages(run={"command": "sleep 30", "timeout": 30}), limits=Limits(wall=3))
    assert out.status == 13 and "wall-clock" in out.reason and out.stages["run"]["time"] < 10
    # the wrapper (POSIX sh: dash counts -f in 512-byte blocks) sets each limit it is given, in bytes
    probe = ("python3 -c 'import resource as r; print(*(r.getrlimit(k)[0] for k in "
             "(r.RLIMIT_NPROC, r.RLIMIT_FSIZE, r.RLIMIT_AS)))'")
    ex, out = run(stages(run=probe), limits=Limits(nproc=77, file_bytes=5 << 20, address_space=300 << 20))
    assert ex.data("stage_run_output").split() == [b"77", str(5 << 20).encode(), str(300 << 20).encode()], \
        ex.data("stage_run_output")
