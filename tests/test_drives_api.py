"""The drives half of the cloud API, end to end over loopback HTTP, text/plain and JSON."""

from __future__ import annotations

import gzip
import os
import uuid

import pytest

EVERYONE = "ffffffff-ffff-ffff-ffff-ffffffffffff"


def drive_path(installation, drive):
    return installation.state_dir / "drives" / f"{drive}.raw"


# ---- formats --------------------------------------------------------------------------------------

def test_create_text_default_and_info(alice):
    r = alice.post("/drives/create", "name My Drive\nsize 10M\ntags a b\nuser:os linux\n")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain")
    info = r.kv()
    assert info["name"] == "My Drive"
    assert info["size"] == str(10 * 1024 * 1024)
    assert info["status"] == "active"
    assert info["user"] == alice.user.uuid
    assert info["claim:type"] == "exclusive"
    assert info["tags"] == "a b"
    assert info["user:os"] == "linux"
    assert "imaging" not in info
    again = alice.get(f"/drives/{info['drive']}/info").kv()
    assert again == info


@pytest.mark.parametrize("accept", ["*/*", "text/plain", None])
def test_text_is_default_output(alice, accept):
    drive = alice.create_drive()
    headers = {"Accept": accept} if accept else {}
    r = alice.get(f"/drives/{drive}/info", headers=headers)
    assert r.headers["content-type"].startswith("text/plain")
    assert r.kv()["drive"] == drive


def test_json_mode(alice):
    r = alice.post_kv("/drives/create", {"name": "j", "size": "2M", "claim:type": "shared"}, as_json=True)
    assert r.status == 200
    assert r.headers["content-type"].startswith("application/json")
    obj = r.json()
    assert obj["size"] == 2 * 1024 * 1024 and isinstance(obj["size"], int)
    assert obj["claim:type"] == "shared"
    drive = obj["drive"]
    listed = alice.get("/drives/list", headers={"Accept": "application/json"}).json()
    assert {"drive": drive} in listed
    infos = alice.post("/drives/info", headers={"Accept": "application/json"}).json()
    assert isinstance(infos, list) and drive in [i["drive"] for i in infos]
    one = alice.post(f"/drives/{drive}/info", headers={"Accept": "application/json"}).json()
    assert one["drive"] == drive and isinstance(one["read:bytes"], int)


def test_octet_stream_body_is_key_value(alice):
    # the command line tool's -c / -f mode
    r = alice.post("/drives/create", b"name oct\nsize 1k\n", headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200 and r.kv()["size"] == "1024"


def test_list_and_info_all_text(alice):
    a, b = alice.create_drive(name="a"), alice.create_drive(name="b")
    ids = alice.get("/drives/list").text.split("\n")
    assert a in ids and b in ids
    blocks = alice.get("/drives/info").blocks()
    assert {a, b} <= {blk["drive"] for blk in blocks}
    assert all("name" in blk for blk in blocks)


def test_every_read_endpoint_answers_post(alice):
    drive = alice.create_drive()
    for path in ["/drives/list", "/drives/info", f"/drives/{drive}/info", "/drives/list/standard",
                 "/drives/info/standard", f"/drives/{drive}/read/0/16"]:
        assert alice.get(path).status == 200, path
        assert alice.post(path).status == 200, path


# ---- set, resize, destroy -------------------------------------------------------------------------

def test_set_and_resize(alice, installation):
    drive = alice.create_drive("1M")
    alice.post(f"/drives/{drive}/write/0", os.urandom(4096))
    r = alice.post_kv(f"/drives/{drive}/set", {"name": "renamed", "size": "2M", "readers": EVERYONE,
                                                "user:x": "1", "tags": "t1"})
    assert r.status == 200, r.text
    info = r.kv()
    assert (info["name"], info["size"], info["readers"], info["user:x"]) == ("renamed", str(2 << 20), EVERYONE, "1")
    assert drive_path(installation, drive).stat().st_size == 2 << 20
    # an empty value removes a user key
    assert "user:x" not in alice.post(f"/drives/{drive}/set", "user:x\n").kv()
    # shrink keeps the head
    before = alice.get(f"/drives/{drive}/read/0/4096").body
    assert alice.post_kv(f"/drives/{drive}/set", {"size": "8k"}).kv()["size"] == "8192"
    assert alice.get(f"/drives/{drive}/read/0/4096").body == before


def test_destroy(alice, installation):
    drive = alice.create_drive()
    assert drive_path(installation, drive).exists()
    r = alice.post(f"/drives/{drive}/destroy")
    assert r.status == 204 and r.body == b""
    assert not drive_path(installation, drive).exists()
    assert alice.get(f"/drives/{drive}/info").status == 404
    assert drive not in alice.get("/drives/list").text


# ---- read and write -------------------------------------------------------------------------------

def test_write_raw_and_gzip_then_read(alice):
    drive = alice.create_drive("1M")
    data = os.urandom(100_000)
    assert alice.post(f"/drives/{drive}/write", data).status == 204  # no offset means 0
    assert alice.get(f"/drives/{drive}/read/0/100000").body == data
    more = os.urandom(5000)
    r = alice.post(f"/drives/{drive}/write/200000", gzip.compress(more), headers={"Content-Encoding": "gzip"})
    assert r.status == 204
    r = alice.post(f"/drives/{drive}/read/200000/5000")
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.body == more
    info = alice.get(f"/drives/{drive}/info").kv()
    assert info["write:bytes"] == str(105_000) and info["write:requests"] == "2"
    assert info["read:requests"] == "2"


def test_read_accepts_size_suffixes(alice):
    drive = alice.create_drive("1M")
    assert len(alice.get(f"/drives/{drive}/read/1k/4k").body) == 4096


def test_write_past_end_is_usage_and_changes_nothing(alice):
    drive = alice.create_drive("64k")
    before = alice.get(f"/drives/{drive}/read/0/64k").body
    r = alice.post(f"/drives/{drive}/write/60000", os.urandom(10_000))
    assert (r.status, r.error) == (400, "usage")
    assert "past the end" in r.text
    assert alice.get(f"/drives/{drive}/read/0/64k").body == before


@pytest.mark.parametrize("path", ["read/0/2M", "read/-1/10", "read/x/10", "read/0/1.5", "write/abc", "write/-5"])
def test_bad_offsets_and_sizes(alice, path):
    drive = alice.create_drive("1M")
    r = alice.post(f"/drives/{drive}/{path}", b"x")
    assert (r.status, r.error) == (400, "usage"), r.text


def test_truncated_and_corrupt_gzip_leave_drive_unchanged(alice):
    drive = alice.create_drive("1M")
    alice.post(f"/drives/{drive}/write/0", os.urandom(1 << 20))
    before = alice.get(f"/drives/{drive}/read/0/1M").body
    payload = gzip.compress(os.urandom(300_000) + bytes(300_000))
    corrupt = bytearray(payload)
    corrupt[len(corrupt) // 2] ^= 0xFF
    bad_crc = bytearray(payload)
    bad_crc[-6] ^= 0x01
    for body in (payload[: len(payload) // 2], payload[:-4], bytes(corrupt), bytes(bad_crc),
                 payload + b"garbage", b"\x1f\x8b", b"not gzip at all"):
        r = alice.post(f"/drives/{drive}/write/0", body, headers={"Content-Encoding": "gzip"})
        assert (r.status, r.error) == (400, "usage"), r.text
        assert "\n" not in r.text.strip()
    assert alice.get(f"/drives/{drive}/read/0/1M").body == before


def test_multi_member_gzip_is_accepted(alice):
    drive = alice.create_drive("1M")
    a, b = os.urandom(1000), os.urandom(2000)
    r = alice.post(f"/drives/{drive}/write/0", gzip.compress(a) + gzip.compress(b),
                   headers={"Content-Encoding": "gzip"})
    assert r.status == 204
    assert alice.get(f"/drives/{drive}/read/0/3000").body == a + b


def test_sparse_stays_sparse(alice, installation):
    drive = alice.create_drive("64M")
    path = drive_path(installation, drive)
    assert path.stat().st_blocks == 0
    zeros = bytes(8 << 20)
    assert alice.post(f"/drives/{drive}/write/0", gzip.compress(zeros), headers={"Content-Encoding": "gzip"}).status == 204
    assert alice.post(f"/drives/{drive}/write/16M", zeros).status == 204
    assert path.stat().st_blocks == 0
    # half data, half zeros: only the data half is allocated
    chunk = os.urandom(1 << 20) + bytes(3 << 20)
    assert alice.post(f"/drives/{drive}/write/32M", chunk).status == 204
    allocated = path.stat().st_blocks * 512
    assert (1 << 20) <= allocated < (1 << 20) + 256 * 1024
    # zeros written over data punch it out again
    assert alice.post(f"/drives/{drive}/write/32M", bytes(1 << 20)).status == 204
    assert path.stat().st_blocks * 512 < 64 * 1024
    assert alice.get(f"/drives/{drive}/read/32M/1M").body == bytes(1 << 20)


def test_concurrent_writes_to_different_offsets(alice):
    from concurrent.futures import ThreadPoolExecutor

    drive = alice.create_drive("16M")
    pieces = {i * (1 << 20): os.urandom(1 << 20) for i in range(16)}

    def put(item):
        offset, data = item
        body, headers = (gzip.compress(data), {"Content-Encoding": "gzip"}) if offset % (2 << 20) else (data, {})
        return alice.post(f"/drives/{drive}/write/{offset}", body, headers=headers).status

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(put, pieces.items())) == {204}
    assert alice.get(f"/drives/{drive}/read/0/16M").body == b"".join(pieces[k] for k in sorted(pieces))


# ---- validation and the error table ---------------------------------------------------------------

@pytest.mark.parametrize("body, needle", [
    ("size 1M\n", "name"),
    ("name x\n", "size"),
    ("name x\nsize 0\n", "size"),
    ("name x\nsize 10Q\n", "size"),
    ("name x\nsize -5\n", "size"),
    ("name x\nsize 1M\ncolour red\n", "colour"),
    ("name x\nsize 1M\ndrive 08c92dd5-70a0-4f51-83d2-835919d254df\n", "drive"),
    ("name x\nsize 1M\nclaim:type sometimes\n", "claim:type"),
    ("name x\nsize 1M\nreaders bob\n", "readers"),
    ("name x\nsize 1M\nencryption:cipher rot13\n", "encryption"),
    ("name x\nsize 1M\nname y\n", "twice"),
    ("name x\nsize 99T\n", "size"),
])
def test_create_rejects_bad_input(alice, body, needle):
    before = alice.get("/drives/list").text
    r = alice.post("/drives/create", body)
    assert (r.status, r.error) == (400, "usage"), r.text
    assert needle in r.text
    assert alice.get("/drives/list").text == before


@pytest.mark.parametrize("body", ['{"name": "x", "size": [1, 2]}', '{"name": {"a": 1}, "size": 5}', "[]", "{bad json"])
def test_create_rejects_bad_json(alice, body):
    r = alice.post("/drives/create", body, headers={"Content-Type": "application/json", "Accept": "application/json"})
    assert (r.status, r.error) == (400, "usage")
    assert r.json()["error"] == "usage"


def test_set_rejects_unknown_and_read_only_keys(alice):
    drive = alice.create_drive()
    for body in ("status dead\n", "user 0\n", "size big\n", "write:bytes 5\n"):
        r = alice.post(f"/drives/{drive}/set", body)
        assert (r.status, r.error) == (400, "usage"), body


def test_non_utf8_body_is_usage(alice):
    r = alice.post("/drives/create", b"name \xff\xfe\nsize 1M\n")
    assert (r.status, r.error) == (400, "usage")


@pytest.mark.parametrize("header", [None, "Basic !!!", "Bearer abc", "Basic " + "dXNlcjpwYXNz"])
def test_auth_required(installation, header):
    api = installation.client()
    headers = {"Authorization": header} if header else {}
    for path in ("/drives/list", "/drives/create", "/nowhere"):
        r = api.post(path, headers=headers, auth=False)
        assert (r.status, r.error) == (401, "auth")
        assert "Basic" in r.headers["www-authenticate"]


def test_wrong_secret(alice, installation):
    api = installation.client()
    r = api.get("/drives/list", auth=(alice.user.uuid, "wrong"))
    assert (r.status, r.error) == (401, "auth")


def test_unknown_url_and_method(alice):
    r = alice.get("/drives/nothing/here/at/all")
    assert (r.status, r.error) == (404, "missing")
    r = alice.get("/drives/create")
    assert (r.status, r.error) == (405, "method")
    r = alice.request("PUT", "/drives/list")
    assert (r.status, r.error) == (405, "method")
    r = alice.get("/drives/not-a-uuid/info")
    assert (r.status, r.error) == (404, "missing")
    r = alice.get(f"/drives/{uuid.uuid4()}/info", headers={"Accept": "application/json"})
    assert (r.status, r.error) == (404, "missing")
    assert r.json() == {"error": "missing", "message": "drive not found"}


def test_oversized_body_is_refused_before_reading(fresh_installation):
    inst = fresh_installation(OPENHOSTING_MAX_BODY="1M")
    api = inst.client(inst.create_user())
    drive = api.create_drive("8M")
    r = api.post(f"/drives/{drive}/write/0", os.urandom(2 << 20))
    assert (r.status, r.error) == (413, "usage")
    # a gzip bomb: small on the wire, larger than the limit inflated
    r = api.post(f"/drives/{drive}/write/0", gzip.compress(bytes(4 << 20)), headers={"Content-Encoding": "gzip"})
    assert (r.status, r.error) == (413, "usage")
    # a key/value body past the limit
    r = api.post("/drives/create", "name x\nsize 1M\nuser:pad " + "y" * (2 << 20) + "\n")
    assert (r.status, r.error) == (413, "usage")
    assert api.get(f"/drives/{drive}/read/0/8M").body == bytes(8 << 20)


def test_declared_length_too_large_is_refused_without_body(fresh_installation):
    import socket

    inst = fresh_installation(OPENHOSTING_MAX_BODY="1M")
    user = inst.create_user()
    import base64

    token = base64.b64encode(f"{user.uuid}:{user.secret}".encode()).decode()
    with socket.create_connection(("127.0.0.1", inst.port), timeout=10) as s:
        s.sendall(f"POST /drives/create HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n"
                  f"Content-Length: 100000000000\r\n\r\n".encode())
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413")
    assert "X-Elastic-Error: usage" in reply


def test_pool_full_on_write_is_507_and_drive_unchanged(fresh_installation):
    inst = fresh_installation(OPENHOSTING_POOL_RESERVE="1000T")
    api = inst.client(inst.create_user())
    drive = api.create_drive("1M")
    r = api.post(f"/drives/{drive}/write/0", os.urandom(4096))
    assert (r.status, r.error) == (507, "full")
    # zeros need no space and still work
    assert api.post(f"/drives/{drive}/write/0", bytes(4096)).status == 204
    assert api.get(f"/drives/{drive}/read/0/1M").body == bytes(1 << 20)


def test_pool_limit_and_user_quota(fresh_installation):
    inst = fresh_installation(OPENHOSTING_POOL_LIMIT="12M", OPENHOSTING_USER_DRIVE_QUOTA="6M")
    a, b = inst.client(inst.create_user()), inst.client(inst.create_user())
    a.create_drive("4M")
    r = a.post_kv("/drives/create", {"name": "x", "size": "4M"})
    assert (r.status, r.error) == (402, "billing")
    b.create_drive("6M")
    r = b.post_kv("/drives/create", {"name": "x", "size": "1M"})
    assert (r.status, r.error) == (402, "billing")
    drive = a.create_drive("1M")
    r = a.post_kv(f"/drives/{drive}/set", {"size": "3M"})  # 4M + 3M > the 6M quota
    assert (r.status, r.error) == (402, "billing")
    assert a.get(f"/drives/{drive}/info").kv()["size"] == str(1 << 20)
    c = inst.client(inst.create_user())
    r = c.post_kv("/drives/create", {"name": "x", "size": "2M"})  # 11M + 2M > the 12M pool
    assert (r.status, r.error) == (507, "full")


def test_internal_errors_do_not_leak(alice, installation):
    # A drive whose file vanished behind the service's back: a clean 500, no traceback.
    drive = alice.create_drive()
    drive_path(installation, drive).unlink()
    r = alice.get(f"/drives/{drive}/read/0/10")
    assert r.status == 500 and r.error in ("system", "failed")
    assert "Traceback" not in r.text and "/" not in r.text.split(";")[0]


# ---- two users ------------------------------------------------------------------------------------

def test_users_are_isolated_on_every_endpoint(alice, bob):
    drive = alice.create_drive("1M")
    alice.post(f"/drives/{drive}/write/0", b"secret data")
    other = bob.create_drive("1M")
    assert drive not in bob.get("/drives/list").text
    assert drive not in bob.get("/drives/info").text
    for method, path, body in [
        ("GET", f"/drives/{drive}/info", None),
        ("POST", f"/drives/{drive}/info", None),
        ("POST", f"/drives/{drive}/set", "name stolen\n"),
        ("POST", f"/drives/{drive}/destroy", None),
        ("GET", f"/drives/{drive}/read/0/11", None),
        ("POST", f"/drives/{drive}/write/0", b"overwrite"),
        ("POST", f"/drives/{drive}/image/{other}", None),
        ("POST", f"/drives/{other}/image/{drive}", None),
    ]:
        r = bob.request(method, path, body=body)
        assert (r.status, r.error) == (404, "missing"), path
        assert drive not in r.text
    # and the 404 is the same as for a drive that never existed
    ghost = bob.get(f"/drives/{uuid.uuid4()}/info")
    assert ghost.text == bob.get(f"/drives/{drive}/info").text
    assert alice.get(f"/drives/{drive}/read/0/11").body == b"secret data"
    assert alice.get(f"/drives/{drive}/info").kv()["name"] == "test"


def test_readers_may_read_and_image_but_not_change(alice, bob):
    drive = alice.create_drive("1M")
    alice.post(f"/drives/{drive}/write/0", b"shared bytes")
    alice.post_kv(f"/drives/{drive}/set", {"readers": bob.user.uuid})
    assert bob.get(f"/drives/{drive}/info").status == 200
    assert bob.get(f"/drives/{drive}/read/0/12").body == b"shared bytes"
    for path, body in [(f"/drives/{drive}/write/0", b"x"), (f"/drives/{drive}/set", "name x\n"),
                       (f"/drives/{drive}/destroy", None)]:
        r = bob.post(path, body)
        assert r.status == 403, path
    assert drive not in bob.get("/drives/list").text
