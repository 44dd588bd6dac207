"""schemathesis against the live server: every operation of the OpenAPI document, positive and
negative examples, both users' credentials, seeded and bounded. No 5xx (507 `full` is an answer, not
a fault) and no response that breaks the document (status, content type, body schema).

Path parameters come from schemathesis (random ids: 404) and, for half of the cases, from real
objects of one of the two users, sent with either user's credentials (the owner's: the object is
found and changed; the other's: 404). The objects are made afresh before each operation, since an
operation may destroy them."""

from __future__ import annotations

import base64
import time

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

EXAMPLES = 20
# Operations that start VMs get fewer examples (each may cost seconds under TCG).
FEWER = {"servers_create": 6, "server_start": 6, "server_reset": 4, "sandboxes_create": 8}
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


def _auth(user) -> str:
    return "Basic " + base64.b64encode(f"{user.uuid}:{user.secret}".encode()).decode()


def own_objects(api) -> dict[str, str]:
    """One object of each kind a path parameter names, owned by `api`'s user."""
    server = api.post_kv("/servers/create/stopped", {"name": "schemathesis"})
    assert server.status == 200, server.text
    vlan = api.post("/resources/vlan/create")
    assert vlan.status == 200, vlan.text
    return {"drive": api.create_drive(1 << 20), "source": api.create_drive(1 << 20),
            "server": server.kv()["server"], "kind": "vlan", "name": vlan.kv()["resource"]}


def remove_servers(api) -> None:
    """Servers made or started by the cases: none may keep running under TCG."""
    for server in api.get("/servers/list").text.split():
        api.post(f"/servers/{server}/destroy")


def test_schemathesis_finds_no_5xx_and_no_schema_break(installation):
    doc = installation.client().get("/api/openapi.json", auth=False).json()
    schema = schemathesis.openapi.from_dict(doc)
    base = f"http://127.0.0.1:{installation.port}"
    users = [installation.create_user("st-a"), installation.create_user("st-b")]
    apis = [installation.client(u) for u in users]
    failures: list[str] = []
    statuses: dict[str, dict[int, int]] = {}
    started = time.monotonic()

    for result in schema.get_all_operations():
        op = result.ok()
        op_id = op.definition.raw["operationId"]
        names = {p["name"] for p in op.definition.raw.get("parameters", []) if p["in"] == "path"}
        owned = [own_objects(api) for api in apis] if names else []
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            random_ids = op.as_strategy(generation_mode=mode)
            strategy = random_ids
            if owned and names <= set(owned[0]):
                real_ids = st.sampled_from(owned).flatmap(lambda objs: op.as_strategy(
                    generation_mode=mode, path_parameters={name: objs[name] for name in names}))
                strategy = st.one_of(random_ids, real_ids)

            @settings(max_examples=FEWER.get(op_id, EXAMPLES), derandomize=True, deadline=None, database=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=strategy, user=st.sampled_from(users))
            def run(case, user):
                response = case.call(base_url=base, timeout=180,
                                     headers={"Authorization": _auth(user), "Accept": "application/json"})
                seen = statuses.setdefault(op_id, {})
                seen[response.status_code] = seen.get(response.status_code, 0) + 1
                where = f"{case.method} {case.formatted_path} ({op_id}, {mode.value})"
                if response.status_code >= 500 and response.status_code != 507:
                    failures.append(f"{where}: {response.status_code} {response.text[:200]}")
                    return
                try:
                    case.validate_response(response, checks=CHECKS)
                except Exception as exc:  # noqa: BLE001 - collected, reported all at once below
                    failures.append(f"{where}: {type(exc).__name__}: {str(exc)[:400]}")

            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, op_id  # nothing to negate: no parameters, no body
        if op_id.startswith("server"):
            for api in apis:
                remove_servers(api)

    elapsed = time.monotonic() - started
    cases = sum(sum(seen.values()) for seen in statuses.values())
    print(f"\nschemathesis: {len(statuses)} operations, {cases} cases in {elapsed:.0f} s")
    for op_id, seen in sorted(statuses.items()):
        print(f"  {op_id}: " + " ".join(f"{code}x{n}" for code, n in sorted(seen.items())))
    assert len(statuses) == sum(len(item) for item in doc["paths"].values())
    assert failures == [], "\n".join(failures[:40])
