"""Project configuration (workspaces-api.md §B): one JSON document, version 2.1, with scenarios.

`validate(text)` returns the parsed document or raises ConfigError with a one-line reason. Workspaces
store the effective configuration as given; submissions (a later issue) read scenarios from it.
"""

from __future__ import annotations

import json
import re

STAGES = ("init", "build", "run", "test", "post")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SERVICES: frozenset[str] = frozenset()  # services this server offers (none yet)


class ConfigError(ValueError):
    pass


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _stage(scenario: str, name: str, stage) -> None:
    where = f"scenario {scenario!r} stage {name!r}"
    _check(isinstance(stage, dict), f"{where} must be an object")
    command = stage.get("command")
    _check(command is None or isinstance(command, str), f"{where}: command must be a string or null")
    timeout = stage.get("timeout", 60)
    _check(type(timeout) is int and 1 <= timeout <= 3600, f"{where}: timeout must be 1..3600 seconds")
    _check(stage.get("redirect_streams_to", "console") in ("console", "file"),
           f"{where}: redirect_streams_to must be console or file")
    _check(isinstance(stage.get("skip", False), bool), f"{where}: skip must be a boolean")


def _scenario(name: str, body) -> None:
    _check(bool(_NAME.match(name)), f"scenario name {name[:70]!r} must match [A-Za-z0-9_.-]{{1,64}}")
    _check(isinstance(body, dict), f"scenario {name!r} must be an object")
    _check(isinstance(body.get("default", False), bool), f"scenario {name!r}: default must be a boolean")
    _check(isinstance(body.get("network", False), bool), f"scenario {name!r}: network must be a boolean")
    services = body.get("services", [])
    _check(isinstance(services, list) and all(isinstance(s, str) for s in services),
           f"scenario {name!r}: services must be a list of names")
    unknown = [s for s in services if s not in SERVICES]
    _check(not unknown, f"scenario {name!r}: service {unknown[0] if unknown else ''!r} is not offered here")
    stages = body.get("stages", {})
    _check(isinstance(stages, dict), f"scenario {name!r}: stages must be an object")
    for stage, value in stages.items():
        _check(stage in STAGES, f"scenario {name!r}: unknown stage {stage[:20]!r}")
        _stage(name, stage, value)
    auxdata = body.get("auxdata", {})
    _check(isinstance(auxdata, dict), f"scenario {name!r}: auxdata must be an object")
    for key, value in auxdata.items():
        _check(bool(_NAME.match(key)) and key not in (".", ".."), f"scenario {name!r}: auxdata key {key[:40]!r}")
        _check(isinstance(value, str) and value != "", f"scenario {name!r}: auxdata {key!r} needs a path")
    _check(isinstance(body.get("output", {}), dict), f"scenario {name!r}: output must be an object")


def validate(text: str) -> dict:
    try:
        doc = json.loads(text)
    except (ValueError, TypeError, RecursionError):
        raise ConfigError("project_config is not valid JSON") from None
    _check(isinstance(doc, dict), "project_config must be a JSON object")
    version = doc.get("version")
    _check(str(version) == "2.1" and not isinstance(version, bool), "project_config version must be 2.1")
    scenarios = doc.get("scenarios")
    _check(isinstance(scenarios, dict) and len(scenarios) >= 1, "project_config needs at least one scenario")
    for name, body in scenarios.items():
        _scenario(name, body)
    defaults = [n for n, b in scenarios.items() if b.get("default") is True]
    _check(len(defaults) <= 1, "at most one scenario may be the default")
    files = doc.get("files", {})
    _check(isinstance(files, dict), "files must be an object")
    read_only = files.get("read_only", [])
    _check(isinstance(read_only, list) and all(isinstance(p, str) for p in read_only),
           "files.read_only must be a list of paths")
    return doc
