"""POST /api/pads/{id}/run in real VMs (TCG): every language's example program (all images are built
by tools/test.sh), in the C, Python and Java images a compile error, a runtime error, stdin, a timeout
and an output flood, and in the Go, Rust and TypeScript images a compile and a runtime error. PHP's
pool holds no VM (OPENHOSTING_PAD_POOLS=php=0): its runs take a clone made for them."""

from __future__ import annotations

import pytest

from controlplane.services.languages import RUNNABLE

from .pads import PadApi, make_user

IMAGES = tuple(dict.fromkeys(lang.image for lang in RUNNABLE.values()))

PROGRAMS = {
    "python3": {
        "compile": "def broken(:\n    pass\n",
        "runtime": "raise SystemExit(3)\n",
        "stdin": "print(input()[::-1])\n",
        "loop": "while True:\n    pass\n",
        "flood": "import sys\nwhile True:\n    sys.stdout.write('x' * 4096)\n",
    },
    "c": {
        "compile": "int main(void) { return undefined_name; }\n",
        "runtime": "#include <stdlib.h>\nint main(void) { abort(); }\n",
        "stdin": ('#include <stdio.h>\n#include <string.h>\nint main(void) { char b[64]; fgets(b, 64, stdin);'
                  ' b[strcspn(b, "\\n")] = 0; for (int i = strlen(b) - 1; i >= 0; i--) putchar(b[i]);'
                  ' putchar(10); return 0; }\n'),
        "loop": "int main(void) { for (;;) {} }\n",
        "flood": '#include <stdio.h>\nint main(void) { for (;;) fputs("xxxxxxxxxxxxxxxx", stdout); }\n',
    },
    "java": {
        "compile": "public class Solution { public static void main(String[] a) { int x = ; } }\n",
        "runtime": ("public class Solution { public static void main(String[] a) {"
                    " throw new IllegalStateException(\"boom\"); } }\n"),
        "stdin": ("import java.util.Scanner;\npublic class Solution { public static void main(String[] a) {"
                  " String s = new Scanner(System.in).nextLine();"
                  " System.out.println(new StringBuilder(s).reverse()); } }\n"),
        "loop": "public class Solution { public static void main(String[] a) { while (true) {} } }\n",
        "flood": ("public class Solution { public static void main(String[] a) {"
                  " while (true) System.out.print(\"xxxxxxxxxxxxxxxx\"); } }\n"),
    },
    "go": {
        "compile": 'package main\n\nfunc main() {\n\tx := 1\n}\n',
        "runtime": ('package main\n\nimport "fmt"\n\nfunc main() {\n\tvar a []int\n\ti := 3\n'
                    '\tfmt.Println(a[i])\n}\n'),
    },
    "rust": {
        "compile": 'fn main() {\n    let x: i32 = "one";\n}\n',
        "runtime": ('fn main() {\n    let v: Vec<i32> = Vec::new();\n    let i = std::env::args().count() + 2;\n'
                    '    println!("{}", v[i]);\n}\n'),
    },
    "typescript": {
        "compile": 'const n: number = "one";\nconsole.log(n);\n',
        "runtime": 'const o: any = null;\nconsole.log(o.missing);\n',
    },
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from .conftest import new_installation

    inst, drop = new_installation(tmp_path_factory.mktemp("pads"), "sqlite", OPENHOSTING_SANDBOX_POOL_SIZE="1",
                                  OPENHOSTING_PAD_POOLS="php=0", OPENHOSTING_SANDBOX_OUTPUT_CAP="64k",
                                  OPENHOSTING_SANDBOX_USER_LIMIT="16")  # one warm-up run per image at once
    inst.start(*(("image", "build", image) for image in IMAGES))
    yield inst
    inst.stop()
    inst.purge_libvirt()
    drop()


def warm_up(inst, images) -> None:
    """Wait until every image's pool serves a run (its template boots once, under TCG on a shared host
    that can take minutes): readiness, not a measured time, so the runs below meet warm pools."""
    import json
    import time

    client = inst.client(inst.create_user("warmup"))

    def submit(image: str) -> str:
        r = client.post("/api/sandboxes", json.dumps({"image": image, "cmd": ["true"], "timeout": 120}),
                        headers={"Content-Type": "application/json"})
        assert r.status == 201, r.text
        return r.json()

    pending = {image: submit(image) for image in images}
    deadline = time.monotonic() + 1200
    while pending and time.monotonic() < deadline:
        for image, sandbox in list(pending.items()):
            info = client.get(f"/api/sandboxes/{sandbox}").json()
            if info["status"] == "terminated":
                if info["return_code"] == 0:
                    del pending[image]
                else:  # the template failed to boot (a starved host): the pool retries, so do we
                    pending[image] = submit(image)
        time.sleep(1)
    assert not pending, f"pools never served a run: {sorted(pending)}"


@pytest.fixture(scope="module")
def warm(site):
    warm_up(site, IMAGES)
    return site


@pytest.fixture(scope="module")
def api(site):
    return PadApi(site, make_user(site, "Runner"))


@pytest.fixture
def warm_api(warm, api):
    return api


def run(api: PadApi, pad_id: str, **fields):
    # the server answers within the run's timeout and a minute (then 503): the client waits longer
    r = api.post(f"/api/pads/{pad_id}/run", {k: str(v) for k, v in fields.items()}, timeout=240)
    assert r.status == 200, r.text
    return r.json()


def test_run_refusals(site, api):
    def refused(pad_id, status, code, **fields):
        r = api.post(f"/api/pads/{pad_id}/run", {k: str(v) for k, v in fields.items()})
        assert r.status == status and r.json()["code"] == code, r.text
        return r

    plain = api.pad()
    refused(plain["id"], 400, "bad_request")
    refused(api.pad(language="csharp")["id"], 400, "bad_request")
    py = api.pad(language="python3")
    refused(py["id"], 400, "bad_request", language="ruby")
    refused(py["id"], 400, "bad_request", timeout=0)
    refused(py["id"], 400, "bad_request", timeout=10_000)
    refused(py["id"], 400, "bad_request", timeout="soon")
    disabled = api.pad(language="python3", execution_enabled="false")
    refused(disabled["id"], 403, "forbidden")
    api.put(f"/api/pads/{py['id']}", {"ended": "true"})
    refused(py["id"], 409, "conflict")
    other = PadApi(site, make_user(site, "Stranger"))
    r = other.post(f"/api/pads/{api.pad(language='python3')['id']}/run", {})
    assert r.status == 404 and r.json()["code"] == "not_found"
    languages = {lang["id"]: lang for lang in api.get("/api/languages").json()["languages"]}
    assert all(languages[lang]["runnable"] for lang in RUNNABLE), languages
    assert not languages["csharp"]["runnable"] and not languages["plaintext"]["runnable"]
    assert languages["java"]["file"] == "Solution.java" and "python" not in languages


@pytest.mark.parametrize("language", sorted(RUNNABLE))
def test_example_program_prints_hello_world(warm_api, language):
    api = warm_api
    pad = api.pad(language=language)
    result = run(api, pad["id"], timeout=120)  # the longest allowed: compilers on a loaded TCG host
    assert result["output"] == "Hello, World!\n" * (5 if language == "ruby" else 1), result
    assert result["exit_status"] == 0 and not result["timed_out"] and not result["truncated"]
    assert result["language"] == language and result["time"] > 0
    assert result["event"]["kind"] == "ran" and result["event"]["metadata"] == language
    assert result["event"]["message"].endswith(f"Runner ran {language} code")
    assert api.get(f"/api/pads/{pad['id']}").json()["events"][-1]["kind"] == "ran"


@pytest.mark.parametrize("language", ["python3", "c", "java"])
def test_errors_stdin_timeout_and_flood(warm_api, language):
    api = warm_api
    programs = PROGRAMS[language]
    pad = api.pad(language=language)
    compiled = run(api, pad["id"], contents=programs["compile"], timeout=120)
    assert compiled["exit_status"] not in (0, None) and "error" in compiled["output"].lower(), compiled
    crashed = run(api, pad["id"], contents=programs["runtime"], timeout=120)
    assert crashed["exit_status"] not in (0, None) and not crashed["timed_out"], crashed
    reversed_ = run(api, pad["id"], contents=programs["stdin"], stdin="stressed\n", timeout=120)
    assert reversed_["output"] == "desserts\n" and reversed_["exit_status"] == 0, reversed_
    looped = run(api, pad["id"], contents=programs["loop"], timeout=3 if language != "java" else 8)
    assert looped["timed_out"] is True and looped["exit_status"] == 137, looped
    flooded = run(api, pad["id"], contents=programs["flood"], timeout=10 if language != "java" else 30)
    assert flooded["truncated"] is True and len(flooded["output"].encode()) <= 64 * 1024 + 200, len(flooded["output"])
    # the pad's saved contents were never changed by runs
    assert api.get(f"/api/pads/{pad['id']}").json()["contents"] == pad["contents"]


JAVA_WARM = ("public class Solution { public static void main(String[] a) {"
             " System.out.println(\"parent \" + ProcessHandle.current().parent().map(p -> p.pid()).orElse(-1L));"
             " new Thread(() -> { try { Thread.sleep(300); } catch (InterruptedException e) { }"
             " System.out.println(\"late\"); System.exit(3); }).start();"
             " System.out.println(\"main done\"); } }\n")


def test_java_runs_in_the_warm_jvm_as_java_would(warm_api):
    """The run is served by the JVM that the template started (its parent is the guest's init, not
    the run's shell), which waits for the program's threads and passes on System.exit's status; a
    compile error reads as `java Solution.java` prints it."""
    api = warm_api
    pad = api.pad(language="java")
    ran = run(api, pad["id"], contents=JAVA_WARM, timeout=120)
    assert ran["output"] == "parent 1\nmain done\nlate\n" and ran["exit_status"] == 3, ran
    compiled = run(api, pad["id"], contents=PROGRAMS["java"]["compile"], timeout=120)
    assert compiled["output"].startswith("Solution.java:1: error: illegal start of expression"), compiled
    assert compiled["output"].endswith("error: compilation failed\n") and compiled["exit_status"] == 1, compiled


@pytest.mark.parametrize("language", ["go", "rust", "typescript"])
def test_compile_and_runtime_errors(warm_api, language):
    api = warm_api
    programs = PROGRAMS[language]
    pad = api.pad(language=language)
    compiled = run(api, pad["id"], contents=programs["compile"], timeout=120)
    said = {"go": "not used", "rust": "error[E0308]", "typescript": "error TS2322"}[language]
    assert compiled["exit_status"] not in (0, None) and said in compiled["output"], compiled
    assert not compiled["timed_out"], compiled
    crashed = run(api, pad["id"], contents=programs["runtime"], timeout=120)
    assert crashed["exit_status"] not in (0, None) and not crashed["timed_out"], crashed
    word = {"go": "index out of range", "rust": "index out of bounds", "typescript": "TypeError"}[language]
    assert word in crashed["output"], crashed
