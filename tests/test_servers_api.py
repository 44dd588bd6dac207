"""Servers API rules that need no running VM: configuration keys, validation, ownership."""

import uuid

import pytest


def create_stopped(api, **fields):
    body = {"name": "s", "cpu": "1000", "mem": "128", **fields}
    r = api.post_kv("/servers/create/stopped", body)
    assert r.status == 200, r.text
    return r.kv()


def test_create_stopped_and_info(alice):
    drive = alice.create_drive("1M")
    info = create_stopped(alice, **{"ide:0:0": drive, "ide:0:0:media": "disk", "nic:0:model": "virtio",
                                    "nic:0:dhcp": "auto", "vnc:ip": "auto", "vnc:password": "secret",
                                    "persistent": "true", "tags": "a b", "user:role": "web"})
    assert info["status"] == "stopped"
    assert info["user"] == alice.user.uuid
    assert (info["name"], info["cpu"], info["mem"], info["smp"]) == ("s", "1000", "128", "auto")
    assert info["ide:0:0"] == drive and info["boot"] == "ide:0:0"
    assert info["nic:0:model"] == "virtio" and info["nic:0:dhcp"] == "auto"
    assert info["nic:0:mac"].startswith("52:54:00:")
    # historic spellings accepted, the first one emitted
    assert info["vnc"] == "auto" and info["password"] == "secret" and "vnc:password" not in info
    assert info["persistent"] == "true" and info["tags"] == "a b" and info["user:role"] == "web"
    assert "started" not in info and "rx" not in info
    sid = info["server"]
    assert sid in alice.get("/servers/list").text.split()
    assert alice.get(f"/servers/{sid}/info").kv() == info
    assert sid in [b["server"] for b in alice.get("/servers/info").blocks()]
    # the drive is not claimed by a stopped server
    assert "claimed" not in alice.get(f"/drives/{drive}/info").kv()


def test_json_mode(alice):
    r = alice.post_kv("/servers/create/stopped", {"name": "j", "cpu": 500, "mem": 64}, as_json=True)
    obj = r.json()
    assert obj["cpu"] == 500 and obj["mem"] == 64 and obj["boot"] == ""
    listed = alice.get("/servers/list", headers={"Accept": "application/json"}).json()
    assert {"server": obj["server"]} in listed


def test_set_while_stopped(alice):
    sid = create_stopped(alice)["server"]
    drive = alice.create_drive()
    r = alice.post_kv(f"/servers/{sid}/set", {"mem": "256", "block:0": drive, "boot": "block:0",
                                              "nic:0:model": "e1000", "nic:0:mac": "52:54:00:aa:bb:cc"})
    assert r.status == 200, r.text
    info = r.kv()
    assert info["mem"] == "256" and info["block:0"] == drive and info["nic:0:mac"] == "52:54:00:aa:bb:cc"
    # an empty value removes a key
    info = alice.post(f"/servers/{sid}/set", "boot\nblock:0\n").kv()
    assert "block:0" not in info


@pytest.mark.parametrize("fields, needle", [
    ({"cpu": "fast"}, "cpu"),
    ({"mem": "0"}, "mem"),
    ({"smp": "100"}, "smp"),
    ({"persistent": "yes"}, "persistent"),
    ({"ide:2:0": "x"}, "ide:2:0"),
    ({"ide:0:0": "not-a-uuid"}, "ide:0:0"),
    ({"nic:0:model": "ne2000"}, "nic:0:model"),
    ({"nic:0:model": "e1000", "nic:0:dhcp": "300.1.1.1"}, "nic:0:dhcp"),
    ({"nic:0:dhcp": "auto"}, "nic:0:model"),
    ({"nic:0:model": "e1000", "nic:0:mac": "01:00:00:00:00:01"}, "unicast"),
    ({"password": "waytoolongpassword"}, "password"),
    ({"vnc:tls": "on"}, "tls"),
    ({"boot": "ide:0:0"}, "boot"),
    ({"status": "active"}, "status"),
    ({"colour": "red"}, "colour"),
])
def test_bad_configuration(alice, fields, needle):
    before = alice.get("/servers/list").text
    r = alice.post_kv("/servers/create", {"name": "bad", **fields})
    assert (r.status, r.error) == (400, "usage"), r.text
    assert needle in r.text
    assert alice.get("/servers/list").text == before


def test_references_must_be_usable(alice, bob):
    theirs = bob.create_drive()
    r = alice.post_kv("/servers/create/stopped", {"name": "x", "ide:0:0": theirs})
    assert (r.status, r.error) == (404, "missing")
    ip = bob.post("/resources/ip/create").kv()["resource"]
    r = alice.post_kv("/servers/create/stopped", {"name": "x", "nic:0:model": "e1000", "nic:0:dhcp": ip})
    assert (r.status, r.error) == (400, "usage") and "resource" in r.text
    vlan = alice.post("/resources/vlan/create").kv()["resource"]
    r = alice.post_kv("/servers/create/stopped", {"name": "x", "nic:0:model": "e1000", "nic:0:vlan": vlan,
                                                  "nic:0:dhcp": "auto"})
    assert r.status == 400
    sid = create_stopped(alice, **{"nic:1:model": "virtio", "nic:1:vlan": vlan})["server"]
    r = alice.post(f"/resources/vlan/{vlan}/destroy")
    assert (r.status, r.error) == (409, "busy")
    alice.post(f"/servers/{sid}/destroy")
    assert alice.post(f"/resources/vlan/{vlan}/destroy").status == 204


def test_other_users_servers_are_missing(alice, bob):
    sid = create_stopped(alice)["server"]
    assert sid not in bob.get("/servers/list").text
    for action in ("info", "set", "start", "stop", "shutdown", "reset", "destroy"):
        r = bob.post(f"/servers/{sid}/{action}", "name stolen\n")
        assert (r.status, r.error) == (404, "missing"), action
    ghost = bob.get(f"/servers/{uuid.uuid4()}/info")
    assert ghost.text == bob.get(f"/servers/{sid}/info").text
    assert alice.get(f"/servers/{sid}/info").kv()["name"] == "s"


def test_actions_on_a_stopped_server(alice):
    sid = create_stopped(alice)["server"]
    for action in ("stop", "shutdown", "reset"):
        r = alice.post(f"/servers/{sid}/{action}")
        assert (r.status, r.error) == (409, "busy"), action
    assert alice.get(f"/servers/{sid}/start").status == 405
    assert alice.post(f"/servers/{sid}/destroy").status == 204
    assert alice.get(f"/servers/{sid}/info").status == 404
