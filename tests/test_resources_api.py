"""IP and VLAN resources over the cloud API."""

import ipaddress



def test_ip_lifecycle_text(alice, installation):
    pool = ipaddress.IPv4Network(installation.env["OPENHOSTING_IP_POOL"])
    r = alice.post("/resources/ip/create", "name web\n")
    assert r.status == 200, r.text
    info = r.kv()
    assert info["type"] == "ip" and info["name"] == "web" and info["user"] == alice.user.uuid
    addr = ipaddress.IPv4Address(info["resource"])
    assert addr in pool
    assert info["netmask"] == "255.255.255.0" and info["gateway"] == str(pool[1])
    assert f"ip {addr}" in alice.get("/resources/list").text.split("\n")
    assert f"ip {addr}" in alice.get("/resources/ip/list").text.split("\n")
    assert alice.get(f"/resources/ip/{addr}/info").kv() == info
    r = alice.post(f"/resources/ip/{addr}/set", "name renamed\ntags a b\n")
    assert r.kv()["name"] == "renamed" and r.kv()["tags"] == "a b"
    assert alice.post(f"/resources/ip/{addr}/destroy").status == 204
    assert alice.get(f"/resources/ip/{addr}/info").status == 404


def test_vlan_json(alice):
    r = alice.post_kv("/resources/vlan/create", {"name": "backend"}, as_json=True)
    assert r.status == 200
    vlan = r.json()
    assert vlan["type"] == "vlan" and len(vlan["resource"]) == 36
    listed = alice.get("/resources/vlan/list", headers={"Accept": "application/json"}).json()
    assert {"type": "vlan", "resource": vlan["resource"]} in listed
    infos = alice.get("/resources/info", headers={"Accept": "application/json"}).json()
    assert vlan["resource"] in [i["resource"] for i in infos]
    blocks = alice.get("/resources/vlan/info").blocks()
    assert vlan["resource"] in [b["resource"] for b in blocks]


def test_distinct_addresses(alice, bob):
    a = alice.post("/resources/ip/create").kv()["resource"]
    b = bob.post("/resources/ip/create").kv()["resource"]
    assert a != b


def test_isolation_and_errors(alice, bob):
    addr = alice.post("/resources/ip/create").kv()["resource"]
    for path in (f"/resources/ip/{addr}/info", f"/resources/ip/{addr}/set", f"/resources/ip/{addr}/destroy"):
        r = bob.post(path, "name x\n")
        assert (r.status, r.error) == (404, "missing")
    assert f"ip {addr}" not in bob.get("/resources/list").text
    assert alice.post("/resources/disk/create").status == 404
    assert (alice.post("/resources/ip/create", "colour red\n").error) == "usage"
    assert alice.get("/resources/ip/create").status == 405


def test_pool_exhaustion_is_507(fresh_installation):
    inst = fresh_installation(OPENHOSTING_IP_POOL="10.99.0.0/28")
    api = inst.client(inst.create_user())
    got = set()
    while True:
        r = api.post("/resources/ip/create")
        if r.status != 200:
            break
        got.add(r.kv()["resource"])
    assert (r.status, r.error) == (507, "full")
    assert 1 <= len(got) < 14
