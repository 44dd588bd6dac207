"""A pad's document and its history without a browser: the update stream in the database, the API's
`PUT contents` as an update, the history JSON (pad-page.md)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from pycrdt import Doc, Text

from controlplane.config import Settings
from controlplane.db import Database
from controlplane.services.pad_docs import TEXT, PadDocs, edit_update, text_of

from .pads import PadApi, make_user


@pytest.fixture(scope="module")
def docs(installation):
    db = Database(Settings(state_dir=installation.state_dir, database_url=installation.database_url))
    yield PadDocs(db, snapshot_every=5)
    db.dispose()


@pytest.fixture(scope="module")
def alice(installation):
    return PadApi(installation, make_user(installation, "Alice Docs"))


def pad_key(docs: PadDocs, public_id: str) -> int:
    from sqlalchemy import select

    from controlplane.models import Pad

    with docs.db.read_session() as s:
        return s.scalar(select(Pad.id).where(Pad.public_id == public_id))


def new_pad(api: PadApi, contents: str = "print(1)\n") -> tuple[str, dict]:
    r = api.post("/api/pads", form={"language": "python3", "contents": contents})
    assert r.status == 200, r.text
    return r.json()["id"], r.json()


def replay(changes: list[dict], start: str = "") -> str:
    text = start
    for update in changes:
        out, rest = [], text
        for step in update["change"]:
            if "retain" in step:
                out.append(rest[:step["retain"]])
                rest = rest[step["retain"]:]
            elif "delete" in step:
                rest = rest[step["delete"]:]
            elif "insert" in step:
                out.append(step["insert"])
        text = "".join(out) + rest
    return text


def test_edit_update_keeps_common_ends():
    doc = Doc()
    doc.get(TEXT, type=Text).insert(0, "hello world")
    update = edit_update(doc, "hello brave world")
    assert update is not None and text_of(doc) == "hello brave world"
    assert edit_update(doc, "hello brave world") is None


def test_first_load_seeds_from_contents_once(installation, docs, alice):
    public_id, _ = new_pad(alice, "a = 1\n")
    key = pad_key(docs, public_id)
    with ThreadPoolExecutor(4) as pool:
        loaded = list(pool.map(lambda _: docs.load(key), range(4)))
    assert {text_of(x.doc) for x in loaded} == {"a = 1\n"}
    assert docs.last_seq(key) == 1   # one seed, not four


def test_put_contents_becomes_an_update_and_history_replays(installation, docs, alice):
    public_id, pad = new_pad(alice, "x = 1\n")
    assert pad["history"].endswith(f"/api/pads/{public_id}/history")
    key = pad_key(docs, public_id)
    # a browser's edit arrives in the room as an update: append it as the room does
    loaded = docs.load(key)
    update = edit_update(loaded.doc, "x = 1\ny = 2\n")
    docs.append(key, update, "Bob Guest")
    docs.write_through(key, text_of(loaded.doc))
    assert alice.get(f"/api/pads/{public_id}").json()["contents"] == "x = 1\ny = 2\n"
    # the API's PUT reaches the document
    r = alice.put(f"/api/pads/{public_id}", form={"contents": "x = 10\ny = 2\n"})
    assert r.status == 200 and r.json()["contents"] == "x = 10\ny = 2\n"
    assert text_of(docs.load(key).doc) == "x = 10\ny = 2\n"
    history = alice.get(f"/api/pads/{public_id}/history").json()
    assert history["status"] == "OK" and history["text"] == "x = 10\ny = 2\n"
    assert [u["author"] for u in history["updates"]] == ["", "Bob Guest", "Alice Docs"]
    assert [u["seq"] for u in history["updates"]] == [1, 2, 3]
    assert replay(history["updates"]) == history["text"]
    assert history["updates"][-1]["change"] == [{"retain": 5}, {"insert": "0"}]
    later = alice.get(f"/api/pads/{public_id}/history?after=2").json()
    assert [u["seq"] for u in later["updates"]] == [3]


def test_snapshots_load_the_same_text(installation, docs, alice):
    public_id, _ = new_pad(alice, "")
    key = pad_key(docs, public_id)
    loaded = docs.load(key)
    seq = loaded.seq
    for i in range(12):
        seq = docs.append(key, edit_update(loaded.doc, text_of(loaded.doc) + f"line {i}\n"), "Alice Docs")
        if docs.snapshot_due(key, seq):
            docs.snapshot(key, loaded.doc, seq)
    again = docs.load(key)
    assert again.seq == seq and text_of(again.doc) == "".join(f"line {i}\n" for i in range(12))
    assert replay(alice.get(f"/api/pads/{public_id}/history").json()["updates"]) == text_of(again.doc)


def test_history_of_others_pads_is_not_found(installation, alice):
    public_id, _ = new_pad(alice)
    fresh = alice.get(f"/api/pads/{public_id}/history").json()   # never opened: seeded from its contents
    assert fresh["text"] == "print(1)\n" and [u["author"] for u in fresh["updates"]] == [""]
    other = PadApi(installation, make_user(installation, "Eve Other"))
    r = other.get(f"/api/pads/{public_id}/history")
    assert r.status == 404 and r.json()["code"] == "not_found"
    assert alice.get(f"/api/pads/{public_id}/history?after=x").status == 400
