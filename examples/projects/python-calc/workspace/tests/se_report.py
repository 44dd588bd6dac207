"""Run the unit tests of one directory and write the Sphere Engine files: the tests report
($SE_PATH_FINAL_TESTS_REPORT) and the scenario result ($SE_PATH_SCENARIO_RESULT: status 15 when every
test passes, else 14; score = the share of passing tests). Usage: python3 tests/se_report.py DIR"""

import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.getcwd())


class Recorder(unittest.TextTestResult):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.entries = []
        self._started = 0.0

    def startTest(self, test):
        self._started = time.monotonic()
        super().startTest(test)

    def _add(self, test, status, detail=None):
        entry = {"name": test._testMethodName, "classname": type(test).__qualname__, "status": status,
                 "time": round(time.monotonic() - self._started, 3)}
        if detail is not None:
            entry[status] = detail
        self.entries.append(entry)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._add(test, "ok")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._add(test, "failure", str(err[1]))

    def addError(self, test, err):
        super().addError(test, err)
        self._add(test, "error", f"{err[0].__name__}: {err[1]}")


def main(start: str) -> int:
    suite = unittest.defaultTestLoader.discover(start, top_level_dir=start)
    result = unittest.TextTestRunner(resultclass=Recorder, verbosity=2).run(suite)
    entries = result.entries
    passed = sum(1 for e in entries if e["status"] == "ok")
    with open(os.environ["SE_PATH_FINAL_TESTS_REPORT"], "w") as f:
        json.dump(entries, f, indent=1)
    with open(os.environ["SE_PATH_SCENARIO_RESULT"], "w") as f:
        json.dump({"status": 15 if entries and passed == len(entries) else 14,
                   "score": round(passed / len(entries), 4) if entries else 0}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "tests"))
