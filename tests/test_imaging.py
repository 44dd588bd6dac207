"""Imaging (drive-to-drive copies with gzip/gunzip), the standard library, and restarts."""

from __future__ import annotations

import gzip
import os
import re
import signal
import time
import zlib

import pytest


def wait_imaged(api, drive, timeout=120) -> list[str]:
    """Poll until `imaging` disappears; return the values seen on the way."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = api.get(f"/drives/{drive}/info").kv()
        if "imaging" not in info:
            return seen
        seen.append(info["imaging"])
        time.sleep(0.05)
    raise AssertionError(f"imaging did not finish; last seen {seen[-3:]}")


def upload(api, drive, data, chunk=4 << 20):
    for offset in range(0, len(data), chunk):
        r = api.post(f"/drives/{drive}/write/{offset}", gzip.compress(data[offset:offset + chunk], 1),
                     headers={"Content-Encoding": "gzip"})
        assert r.status == 204, r.text


def gunzip_prefix(blob: bytes) -> bytes:
    return zlib.decompressobj(31).decompress(blob)


def test_plain_copy_and_progress(alice):
    src = alice.create_drive("24M", name="src")
    data = os.urandom(8 << 20) + bytes(8 << 20) + os.urandom(8 << 20)
    upload(alice, src, data)
    dest = alice.create_drive("32M", name="dest")
    alice.post(f"/drives/{dest}/write/30M", b"old bytes beyond the image")
    r = alice.post(f"/drives/{dest}/image/{src}")
    assert r.status == 204 and r.body == b""
    seen = wait_imaged(alice, dest)
    assert all(re.fullmatch(r"queued|\d{1,2}%", v) for v in seen), seen
    assert alice.get(f"/drives/{dest}/read/0/24M").body == data
    assert alice.get(f"/drives/{dest}/read/24M/8M").body == bytes(8 << 20)  # rest zeroed
    assert "imaging" not in alice.get(f"/drives/{dest}/info").kv()


def test_gzip_then_gunzip(alice):
    data = os.urandom(1 << 20) + bytes(3 << 20)
    src = alice.create_drive("4M")
    upload(alice, src, data)
    packed = alice.create_drive("4M")
    assert alice.post(f"/drives/{packed}/image/{src}/gzip").status == 204
    wait_imaged(alice, packed)
    blob = alice.get(f"/drives/{packed}/read/0/4M").body
    assert gunzip_prefix(blob) == data
    # gunzip of a raw source copies as is
    copy = alice.create_drive("4M")
    assert alice.post(f"/drives/{copy}/image/{packed}/gunzip").status == 204
    wait_imaged(alice, copy)
    assert alice.get(f"/drives/{copy}/read/0/4M").body == blob


def test_imaging_failure_is_reported_and_clears(alice):
    src = alice.create_drive("1M")
    upload(alice, src, os.urandom(1 << 20))
    dest = alice.create_drive("1M")
    assert alice.post(f"/drives/{dest}/image/{src}/gzip").status == 204  # random data does not shrink
    wait_imaged(alice, dest)
    info = alice.get(f"/drives/{dest}/info").kv()
    assert "past the end" in info["imaging:error"]
    assert alice.post(f"/drives/{dest}/image/{src}").status == 204
    wait_imaged(alice, dest)
    assert "imaging:error" not in alice.get(f"/drives/{dest}/info").kv()


def test_imaging_rules(alice):
    small, big = alice.create_drive("1M"), alice.create_drive("2M")
    for path, status in [(f"/drives/{small}/image/{big}", 400),      # source larger than drive
                         (f"/drives/{small}/image/{small}", 400),    # from itself
                         (f"/drives/{big}/image/{small}/zip", 400),  # unknown mode
                         (f"/drives/{big}/image/00000000-0000-0000-0000-000000000000", 404)]:
        r = alice.post(path)
        assert r.status == status, (path, r.text)
    assert alice.get(f"/drives/{big}/image/{small}").status == 405


def test_busy_while_imaging(fresh_installation):
    inst = fresh_installation(OPENHOSTING_IMAGING_RATE="4M")
    api = inst.client(inst.create_user())
    src, dest = api.create_drive("16M"), api.create_drive("16M")
    upload(api, src, os.urandom(16 << 20))
    assert api.post(f"/drives/{dest}/image/{src}").status == 204
    for path in (f"/drives/{dest}/write/0", f"/drives/{dest}/destroy", f"/drives/{src}/destroy",
                 f"/drives/{dest}/image/{src}"):
        r = api.post(path, b"x")
        assert (r.status, r.error) == (409, "busy"), path
    r = api.post_kv(f"/drives/{dest}/set", {"size": "32M"})
    assert (r.status, r.error) == (409, "busy")
    seen = wait_imaged(api, dest)
    assert any(v.endswith("%") for v in seen)
    assert api.get(f"/drives/{dest}/read/0/16M").body == api.get(f"/drives/{src}/read/0/16M").body
    assert api.post(f"/drives/{src}/destroy").status == 204


def test_imaging_survives_a_restart(fresh_installation):
    inst = fresh_installation(OPENHOSTING_IMAGING_RATE="8M")
    api = inst.client(inst.create_user())
    data = os.urandom(32 << 20)
    src, dest = api.create_drive("32M"), api.create_drive("32M")
    upload(api, src, data)
    assert api.post(f"/drives/{dest}/image/{src}").status == 204
    deadline = time.monotonic() + 30
    while not re.fullmatch(r"[1-9]\d?%", api.get(f"/drives/{dest}/info").kv().get("imaging", "")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    inst.stop_agent(signal.SIGKILL)
    inst.stop_api(signal.SIGKILL)
    inst.start_api()
    # while the agent is down the job stays visible, not lost and not finished
    assert re.fullmatch(r"\d+%|queued", api.get(f"/drives/{dest}/info").kv()["imaging"])
    inst.start_agent()
    wait_imaged(api, dest)
    assert api.get(f"/drives/{dest}/read/0/32M").body == data
    assert "imaging:error" not in api.get(f"/drives/{dest}/info").kv()


# ---- the standard library -------------------------------------------------------------------------

@pytest.fixture
def standard_drives(installation, tmp_path):
    plain = os.urandom(300_000) + bytes(200_000)
    raw_file, gz_file = tmp_path / "plain.img", tmp_path / "packed.img"
    raw_file.write_bytes(plain)
    gz_file.write_bytes(plain)
    out = installation.admin("drive", "import-standard", str(raw_file), "--name", "Plain CD",
                             "--media", "cdrom").stdout
    raw_id = out.split()[1]
    out = installation.admin("drive", "import-standard", str(gz_file), "--name", "Packed", "--gzip").stdout
    gz_id = out.split()[1]
    return plain, raw_id, gz_id


def test_standard_library(alice, bob, standard_drives):
    plain, raw_id, gz_id = standard_drives
    assert {raw_id, gz_id} <= set(alice.get("/drives/list/standard").text.split())
    infos = {i["drive"]: i for i in bob.get("/drives/info/standard").blocks()}
    assert infos[raw_id]["media"] == "cdrom" and infos[raw_id]["format"] == "raw"
    assert infos[gz_id]["format"] == "gzip" and infos[gz_id]["size"] == str(len(plain))
    assert raw_id not in alice.get("/drives/list").text  # not the user's own drives
    assert alice.get(f"/drives/{raw_id}/read/0/{len(plain)}").body == plain
    for path, body in [(f"/drives/{raw_id}/write/0", b"x"), (f"/drives/{raw_id}/set", "name mine\n"),
                       (f"/drives/{raw_id}/destroy", None), (f"/drives/{raw_id}/image/{gz_id}", None)]:
        assert alice.post(path, body).status == 403, path


def test_image_from_standard_with_gunzip(alice, standard_drives):
    plain, raw_id, gz_id = standard_drives
    dest = alice.create_drive("1M")
    assert alice.post(f"/drives/{dest}/image/{gz_id}/gunzip").status == 204
    wait_imaged(alice, dest)
    assert alice.get(f"/drives/{dest}/read/0/{len(plain)}").body == plain
    # without gunzip the compressed bytes are copied as they are
    packed = alice.create_drive("1M")
    assert alice.post(f"/drives/{packed}/image/{gz_id}").status == 204
    wait_imaged(alice, packed)
    assert gunzip_prefix(alice.get(f"/drives/{packed}/read/0/1M").body) == plain
    copy = alice.create_drive("1M")
    assert alice.post(f"/drives/{copy}/image/{raw_id}/gunzip").status == 204
    wait_imaged(alice, copy)
    assert alice.get(f"/drives/{copy}/read/0/{len(plain)}").body == plain


def test_import_refuses_truncated_gzip(installation, tmp_path):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(os.urandom(100_000))[:-50])
    result = installation.admin("drive", "import-standard", str(bad), "--name", "bad", "--gzip", check=False)
    assert result.returncode != 0
    assert "truncated" in result.stderr


def test_restart_loses_no_drive(fresh_installation):
    inst = fresh_installation()
    api = inst.client(inst.create_user())
    drive = api.create_drive("1M")
    api.post(f"/drives/{drive}/write/0", b"durable")
    inst.stop_api(signal.SIGKILL)
    inst.stop_agent(signal.SIGKILL)
    inst.start_api()
    inst.start_agent()
    assert api.get(f"/drives/{drive}/read/0/7").body == b"durable"
