"""Submissions through HTTP with real VMs (TCG): the example project's scenarios end in each status
of the contract's table, with their streams, stages, report, score, exit codes and signals; limits
(fork bomb, memory hog, file filler) end in a final status; a restarted agent ends what it ran in 20."""

from __future__ import annotations

import io
import json
import signal
import tarfile
import time

import pytest

from .conftest import new_installation
from .containers import EXAMPLE, new_account, targz

pytestmark = pytest.mark.vm

SOURCE = targz({"workspace/notes.txt": b"submitted\n", "workspace/tests/test_planted.py": b"raise SystemExit(9)\n"})


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    inst, drop = new_installation(tmp_path_factory.mktemp("sub"), "sqlite", OPENHOSTING_SANDBOX_POOL_SIZE="2",
                                  OPENHOSTING_SUBMISSION_WORKERS="3",
                                  OPENHOSTING_SUBMISSION_FILE_LIMIT="32M", OPENHOSTING_SUBMISSION_QUEUE_LIMIT="20",
                                  OPENHOSTING_SUBMISSION_DISK_LIMIT="96M",
                                  OPENHOSTING_SUBMISSION_NETWORK="isolated")
    inst.start(("image", "build", "gcc"))   # the example's build_error runs gcc (gcc extends base)
    yield inst
    inst.stop()
    inst.purge_libvirt()
    drop()


@pytest.fixture(scope="module")
def acct(site):
    return new_account(site)


@pytest.fixture(scope="module")
def project(site):
    out = site.admin("project", "create", "--name", "calc", "--image", "gcc", "--from", str(EXAMPLE),
                     "--template").stdout.split()
    return out[out.index("project") + 1]


def submit(acct, project, scenario=None, source=SOURCE, **fields):
    # the example's workspace_init runs the unit tests: only the `ok` run keeps it (TCG is slow)
    fields.setdefault("workspace_init", "")
    body = {"project_id": project, **fields}
    if scenario:
        body["scenario"] = scenario
    r = acct.post_multipart("/submissions", body, {"source": ("source.tar.gz", source)})
    assert r.status == 201, r.text
    assert r.json()["message"] == "Submission has been created"
    return r.json()["id"]


def wait_final(acct, sid, timeout=900) -> dict:
    deadline = time.monotonic() + timeout
    seen = set()
    while time.monotonic() < deadline:
        item = acct.get(f"/submissions/{sid}").json()
        seen.add(item["result"]["status"]["code"])
        if not item["executing"]:
            item["_seen"] = seen
            return item
        assert item["result"]["time"] is None and item["stages"] is None
        time.sleep(0.1)
    raise AssertionError(f"submission {sid} still executing: {item}")


def stream(acct, item, name) -> bytes:
    r = acct.get(f"/submissions/{item['id']}/{name}")
    assert r.status == 200, (name, r.status, r.text)
    assert len(r.body) == item["streams"][name]["size"]
    return r.body


def err(r, status, code):
    assert r.status == status, (r.status, r.text)
    assert r.json()["error_code"] == code, r.json()


@pytest.fixture(scope="module")
def examples(site, acct, project):
    """Every example scenario submitted at once (they queue and run side by side)."""
    ids = {"ok": submit(acct, project, "ok", workspace_init=(EXAMPLE / "workspace_init").read_text())}
    ids.update({name: submit(acct, project, name) for name in
                ("fail", "build_error", "runtime_error", "time_limit", "auxdata")})
    # the first waits for the installation's template (a boot under TCG) and the pool
    return {name: wait_final(acct, sid, timeout=1200) for name, sid in ids.items()}


def test_ok_with_report_score_and_stage_env(acct, examples):
    item = examples["ok"]
    assert item["result"]["status"] == {"code": 15, "name": "ok"}, stream(acct, item, "debug_log")
    assert item["result"]["score"] == 1.0 and item["result"]["time"] == item["stages"]["run"]["time"]
    assert item["scenario"] == "ok" and item["date"].endswith(" +0000") and not item["executing"]
    stages = item["stages"]
    assert stages["init"] == {"time": 0, "skipped": True, "exit_code": None, "signal": None,
                              "status_changed_to": None}
    for name in ("build", "run", "test", "post"):
        assert stages[name]["skipped"] is False and stages[name]["exit_code"] == 0, stages
        assert stages[name]["signal"] is None
        assert stages[name]["status_changed_to"] == ({"code": 15, "name": "ok", "desc": None} if name == "test"
                                                     else None)
        assert isinstance(stages[name]["time"], float) and stages[name]["time"] > 0
    assert stream(acct, item, "stage_run_output") == b"5\n"
    report = json.loads(stream(acct, item, "tests_report"))
    assert {(t["name"], t["status"]) for t in report} == {("test_add", "ok"), ("test_divide", "ok"),
                                                          ("test_unknown_operator", "ok")}
    assert b"post: test stage exit 0" in stream(acct, item, "stage_post_output")
    # the source was laid over the project's files, except the project's read-only tests/
    r = acct.get(f"/submissions/{item['id']}/source")
    assert r.body == SOURCE and r.headers["content-type"] == "application/gzip"
    log = stream(acct, item, "debug_log").decode()
    assert "tests/test_planted.py" in log and "read-only" in log
    assert b"workspace ready" in stream(acct, item, "workspace_init_output")
    assert item["streams"]["auxdata"] is None and item["streams"]["stage_init_output"] is None
    err(acct.get(f"/submissions/{item['id']}/auxdata"), 404, 1101)
    assert acct.get(f"/submissions/{item['id']}/tests_report").headers["content-type"] == "application/json"
    assert acct.get(f"/submissions/{item['id']}/debug_log").headers["content-type"].startswith("text/plain")


def test_fail_from_a_failing_unit_test(acct, examples):
    item = examples["fail"]
    assert item["result"]["status"]["code"] == 14 and item["result"]["score"] == 0.5
    assert item["stages"]["test"]["status_changed_to"]["code"] == 14
    report = {t["name"]: t for t in json.loads(stream(acct, item, "tests_report"))}
    assert report["test_tenths_add_up"]["status"] == "failure" and report["test_integers"]["status"] == "ok"
    assert b"0.30000000000000004" in stream(acct, item, "stage_run_output")


def test_build_error_skips_run_and_test_but_not_post(acct, examples):
    item = examples["build_error"]
    assert item["result"]["status"] == {"code": 11, "name": "build error"}
    build = item["stages"]["build"]
    assert build["exit_code"] == 1 and build["status_changed_to"]["code"] == 11
    assert item["stages"]["run"]["skipped"] and item["stages"]["test"]["skipped"]
    assert item["stages"]["post"]["exit_code"] == 0
    assert b"undeclared" in stream(acct, item, "stage_build_error")   # gcc on samples/broken.c
    assert item["result"]["time"] == 0


def test_runtime_error(acct, examples):
    item = examples["runtime_error"]
    assert item["result"]["status"]["code"] == 12
    run = item["stages"]["run"]
    assert run["exit_code"] == 1 and run["signal"] is None and run["status_changed_to"]["code"] == 12
    assert b"ZeroDivisionError" in stream(acct, item, "stage_run_error")
    assert stream(acct, item, "stage_run_output") == b"about to divide\n"


def test_time_limit_exceeded_then_test_and_post_still_run(acct, examples):
    item = examples["time_limit"]
    assert item["result"]["status"] == {"code": 13, "name": "time limit exceeded"}
    run = item["stages"]["run"]
    assert run["signal"] == signal.SIGTERM and run["exit_code"] is None
    assert run["status_changed_to"]["code"] == 13 and "timeout of 2 s" in run["status_changed_to"]["desc"]
    assert 2 <= run["time"] < 10
    assert item["stages"]["test"]["skipped"] is False and item["stages"]["test"]["status_changed_to"] is None
    assert b"post: run stage signal 15" in stream(acct, item, "stage_post_output")


def test_auxdata_collected_without_following_links(acct, examples):
    item = examples["auxdata"]
    assert item["result"]["status"]["code"] == 15
    data = stream(acct, item, "auxdata")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile(members["results/summary.txt"]).read() == b"6 * 7 = 42\n"
        assert tar.extractfile(members["results/plots/data.csv"]).read().startswith(b"x,y")
        assert members["results/link-to-passwd"].issym()
    assert not any(name.startswith("missing") for name in members)
    assert "no-such-dir is not a directory" in stream(acct, item, "debug_log").decode()


def test_limits_end_in_a_final_status(acct, project):
    config = json.loads((EXAMPLE / "config.json").read_text())
    config["scenarios"] = {
        "forkbomb": {"stages": {"run": {"command": "bomb() { bomb | bomb & }; bomb; sleep 3; echo alive",
                                        "timeout": 20}}},
        "memhog": {"stages": {"run": {"command": "python3 -c 'x = bytearray(600 * 2**20)'", "timeout": 300}}},
        "filler": {"default": True, "stages": {"run": {"command": "head -c 64M /dev/zero > big", "timeout": 300},
                                               "post": {"command": "echo post; rm -f big", "timeout": 10}}},
        # many files, each under the file size limit: the disk limit (96M here) cuts the VM
        "diskfill": {"stages": {"run": {"command": "i=0; while [ $i -lt 40 ]; do head -c 16M /dev/zero > f$i "
                                                   "|| exit 1; sync; i=$((i+1)); done; echo survived",
                                        "timeout": 600}}},
    }
    text = json.dumps(config)
    ids = {name: submit(acct, project, name, project_config=text) for name in ("forkbomb", "memhog", "diskfill")}
    ids["filler"] = submit(acct, project, None, project_config=text)
    items = {name: wait_final(acct, sid) for name, sid in ids.items()}
    bomb = items["forkbomb"]
    assert bomb["result"]["status"]["code"] in (12, 13, 15), bomb
    assert bomb["config"] == text and bomb["scenario"] == "forkbomb"
    memhog = items["memhog"]
    assert memhog["result"]["status"]["code"] == 12 and b"MemoryError" in stream(acct, memhog, "stage_run_error")
    filler = items["filler"]
    assert filler["scenario"] == "filler" and filler["result"]["status"]["code"] == 12
    assert filler["stages"]["run"]["signal"] == signal.SIGXFSZ or filler["stages"]["run"]["exit_code"] != 0
    assert filler["stages"]["post"]["exit_code"] == 0
    fill = items["diskfill"]
    assert fill["result"]["status"]["code"] == 12, stream(acct, fill, "debug_log")
    log = stream(acct, fill, "debug_log").decode()
    assert "more than 96 MiB to its disk" in log and "the overlay grew by" in log, log
    assert fill["streams"]["stage_run_output"] is None    # never got to "survived"


PROBE = b"""
import errno, os, socket, struct
def probe(host):
    s = socket.socket()
    s.settimeout(10)
    try:
        s.connect((host, 9))
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc))
print("interfaces", " ".join(sorted(os.listdir("/sys/class/net"))))
for line in open("/proc/net/route").read().splitlines()[1:]:
    f = line.split()
    net = socket.inet_ntoa(struct.pack("<I", int(f[1], 16)))
    print("host", probe(net.rsplit(".", 1)[0] + ".1"))
print("outside", probe("192.0.2.1"))
"""


def test_network_isolated_or_none(acct, project):
    """`network: true` gets a NIC on the isolated network (OPENHOSTING_SUBMISSION_NETWORK=isolated
    here): the host answers, nothing beyond is routed; without it the VM has only lo."""
    config = json.loads((EXAMPLE / "config.json").read_text())
    config["scenarios"] = {
        "net": {"network": True, "stages": {"run": {"command": "python3 probe.py", "timeout": 120}}},
        "nonet": {"default": True, "stages": {"run": {"command": "python3 probe.py", "timeout": 120}}},
    }
    source = targz({"workspace/probe.py": PROBE})
    ids = {name: submit(acct, project, name, source=source, project_config=json.dumps(config))
           for name in ("net", "nonet")}
    items = {name: wait_final(acct, sid) for name, sid in ids.items()}
    for item in items.values():
        assert item["result"]["status"]["code"] == 15, stream(acct, item, "debug_log")
    lines = dict(line.split(" ", 1) for line in stream(acct, items["net"], "stage_run_output").decode().splitlines())
    assert len(lines["interfaces"].split()) == 2 and "lo" in lines["interfaces"].split(), lines
    assert lines["host"] in ("refused", "open"), lines     # the host's bridge address answers
    assert lines["outside"] == "ENETUNREACH", lines          # no route beyond the isolated network
    assert "isolated" in stream(acct, items["net"], "debug_log").decode()
    lines = dict(line.split(" ", 1) for line in stream(acct, items["nonet"], "stage_run_output").decode().splitlines())
    assert lines == {"interfaces": "lo", "outside": "ENETUNREACH"}, lines


def test_list_ids_paging_and_other_accounts(site, acct, project, examples):
    ids = sorted(item["id"] for item in examples.values())
    r = acct.get("/submissions?ids=" + ",".join(str(i) for i in reversed(ids)) + ",999999")
    assert [i["id"] for i in r.json()["items"]] == ids
    assert r.json()["paging"] == {"previous_page_token": None, "next_page_token": None}
    page = acct.get("/submissions?limit=2").json()
    assert len(page["items"]) == 2 and page["items"][0]["id"] > page["items"][1]["id"]
    assert page["paging"]["previous_page_token"] is None and page["paging"]["next_page_token"] == "Mg=="
    second = acct.get("/submissions?limit=2&page_token=Mg==").json()
    assert second["items"][0]["id"] < page["items"][1]["id"] and second["paging"]["previous_page_token"] == "MA=="
    other = new_account(site)
    assert other.get("/submissions?ids=" + ",".join(map(str, ids))).json()["items"] == []
    assert other.get("/submissions").json()["items"] == []
    err(other.get(f"/submissions/{ids[0]}"), 404, 1001)
    err(other.get(f"/submissions/{ids[0]}/source"), 404, 1001)
    err(acct.get(f"/submissions/{ids[0]}/output"), 400, 1105)


def test_a_wait_answers_as_soon_as_the_submission_is_final(acct, project, examples):
    sid = submit(acct, project, "runtime_error")
    asked = 0
    while True:
        asked += 1
        started = time.monotonic()
        item = acct.get(f"/submissions/{sid}?wait=60").json()
        if not item["executing"]:
            break
        assert time.monotonic() - started >= 59 and asked < 20, item   # still running: it waited it all
    # the answer came with the final status, not at the end of the minute
    assert time.monotonic() - started < 59 and item["result"]["status"]["code"] == 12, item
    assert item == acct.get(f"/submissions/{sid}").json()


def test_agent_restart_ends_running_submission_in_20(site, acct, project):
    config = json.loads((EXAMPLE / "config.json").read_text())
    config["scenarios"] = {"slow": {"default": True, "stages": {"run": {"command": "sleep 60", "timeout": 120}}}}
    sid = submit(acct, project, None, project_config=json.dumps(config))
    deadline = time.monotonic() + 900
    while (item := acct.get(f"/submissions/{sid}").json())["result"]["status"]["code"] != 3:
        assert time.monotonic() < deadline and item["executing"], item
        time.sleep(0.1)
    site.stop_agent(signal.SIGKILL)
    site.start_agent()
    item = wait_final(acct, sid)
    assert item["result"]["status"] == {"code": 20, "name": "internal error"}
    assert b"agent stopped" in stream(acct, item, "debug_log")
    # the restarted agent runs new submissions
    assert wait_final(acct, submit(acct, project, "ok"))["result"]["status"]["code"] == 15
