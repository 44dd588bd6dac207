"""The pad room over real WebSockets, with pycrdt clients in place of browsers: edits reach the
others, are stored before they are shown, survive a restart of the room process; the API's contents
follow the document and a PUT reaches the room; presence events; access rules (pad-page.md)."""

from __future__ import annotations

import asyncio

import pytest

from .padroom import RoomProcess, YClient, login, vm_site  # noqa: F401  (fixture)
from .pads import PadApi, make_user


@pytest.fixture(scope="module")
def owner(installation):
    user = make_user(installation, "Olga Owner")
    api = PadApi(installation, user)
    r = api.post("/api/auth/login", json_body={"username": user.email, "password": user.secret}, auth=False)
    assert r.status == 200, r.text
    return api, r.json()["token"]


@pytest.fixture(scope="module")
def room(installation):
    proc = RoomProcess(installation).start()
    yield proc
    proc.stop()


def new_pad(api: PadApi, **fields) -> str:
    r = api.post("/api/pads", form={"language": "python3", "contents": "", **fields})
    assert r.status == 200, r.text
    return r.json()["id"]


def run(coro):
    """In a thread of its own: Playwright's sync API (the browser tests) keeps a loop in the main one."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def test_typing_reaches_the_other_and_the_api(room, owner):
    api, cookie = owner
    pad = new_pad(api)

    async def scenario():
        a = await YClient(room, pad, cookie=cookie).connect()
        b = await YClient(room, pad, name="Gina Guest").connect()
        await a.type("print('hi')\n")
        await b.wait(lambda: b.text == "print('hi')\n")
        await b.type("# from Gina\n")
        await a.wait(lambda: a.text == "print('hi')\n# from Gina\n")
        hello = b.control_ops("hello")[0]
        assert hello["you"] == {"name": "Gina Guest", "role": "guest", "readonly": False}
        assert "notes" not in hello["pad"] and "notes" in a.control_ops("hello")[0]["pad"]
        people = await a.wait(lambda: [p for p in a.control_ops("participants") if len(p["people"]) == 2])
        assert {p["name"] for p in people[-1]["people"]} == {"Olga Owner", "Gina Guest"}
        # cursors: awareness passes from one to the other
        await a.set_awareness(4242, {"user": {"name": "Olga Owner"}, "cursor": {"anchor": 3}})
        await b.wait(lambda: b.awareness.get(4242, {}).get("user", {}).get("name") == "Olga Owner")
        await b.set_awareness(4343, {"user": {"name": "Gina Guest"}})
        await a.wait(lambda: a.awareness.get(4343))
        await b.close()
        await a.wait(lambda: 4343 in a.awareness and a.awareness[4343] is None)   # her cursor is gone
        await a.wait(lambda: any(c["event"]["kind"] == "left" for c in a.control_ops("event")))
        await a.close()

    run(scenario())
    body = api.get(f"/api/pads/{pad}").json()
    assert body["contents"] == "print('hi')\n# from Gina\n"
    kinds = [(e["kind"], e["user_name"]) for e in body["events"]]
    assert kinds.count(("joined", "Gina Guest")) == 1 and ("left", "Gina Guest") in kinds
    assert ("joined", "Olga Owner") in kinds and ("left", "Olga Owner") in kinds
    assert "Gina Guest" in body["participants"]
    history = api.get(f"/api/pads/{pad}/history").json()
    assert history["text"] == body["contents"]
    assert {u["author"] for u in history["updates"]} == {"Olga Owner", "Gina Guest"}


def test_api_put_reaches_open_pages(room, owner):
    api, cookie = owner
    pad = new_pad(api, contents="a = 1\n")

    async def scenario():
        a = await YClient(room, pad, name="Reader").connect()
        assert a.text == "a = 1\n"
        r = await asyncio.to_thread(api.put, f"/api/pads/{pad}", form={"contents": "a = 2\n"})
        assert r.status == 200, r.text
        await a.wait(lambda: a.text == "a = 2\n")
        await a.close()

    run(scenario())


def test_restart_keeps_every_acknowledged_edit(installation, owner):
    api, cookie = owner
    pad = new_pad(api)
    proc = RoomProcess(installation).start()

    async def scenario():
        a = await YClient(proc, pad, name="Writer").connect()
        b = await YClient(proc, pad, name="Watcher").connect()
        for i in range(30):
            await a.type(f"{i}\n")
        expected = "".join(f"{i}\n" for i in range(30))
        await b.wait(lambda: b.text == expected)   # b has seen every edit: acknowledged
        proc.stop(9)                               # no chance to flush anything
        await asyncio.gather(a.reader, b.reader)
        proc.start()
        # the pages reconnect (a new ticket each, as the page's script does) and sync
        await a.connect()
        await b.connect()
        await a.type("after\n")
        await b.wait(lambda: b.text == expected + "after\n")
        await a.close()
        await b.close()
        return expected + "after\n"

    try:
        final = run(scenario())
    finally:
        proc.stop()
    history = api.get(f"/api/pads/{pad}/history").json()
    assert history["text"] == final
    r = api.get(f"/api/pads/{pad}")
    assert r.json()["contents"] == final


def test_private_pads_refuse_guests_and_ended_pads_are_read_only(room, owner, installation):
    api, cookie = owner
    private = new_pad(api, private="true")
    status, body = room.request("POST", f"/pads/{private}/ticket", {"name": "Gus"})
    assert status == 403 and body["status"] == "ERROR"
    assert room.request("POST", f"/pads/{private}/ticket", {"name": "x"}, cookie=cookie)[0] == 200
    assert room.request("POST", "/pads/ZZZZZZZZ/ticket", {"name": "Gus"})[0] == 404
    other = PadApi(installation, make_user(installation, "Oscar Outsider"))
    login = other.post("/api/auth/login", json_body={"username": other.user.email, "password": other.user.secret},
                       auth=False).json()["token"]
    # an outsider's cookie does not open a private pad (it is treated as a guest: refused)
    assert room.request("POST", f"/pads/{private}/ticket", {"name": "Oscar"}, cookie=login)[0] == 403
    assert room.request("POST", f"/pads/{private}/ticket", {"name": "x"}, cookie=cookie,
                        origin="http://evil.example")[0] == 403
    assert room.request("GET", f"/pads/{private}/history")[0] == 401
    assert room.request("GET", f"/pads/{private}/history", cookie=login)[0] == 404
    status, body = room.request("GET", f"/pads/{private}/history", cookie=cookie)
    assert status == 200 and body["pad_public_id"] == private

    pad = new_pad(api, contents="frozen\n")

    async def scenario():
        a = await YClient(room, pad, cookie=cookie).connect()
        g = await YClient(room, pad, name="Late Guest").connect()
        await a.command({"op": "end"})
        await g.wait(lambda: g.control_ops("ended"))
        await g.type("vandal")
        await g.command({"op": "run"})
        await g.wait(lambda: g.control_ops("run-refused"))
        g2 = await YClient(room, pad, name="Later Guest").connect()
        assert g2.control_ops("hello")[0]["you"]["readonly"] is True
        assert g2.text == "frozen\n"
        for c in (a, g, g2):
            await c.close()

    run(scenario())
    body = api.get(f"/api/pads/{pad}").json()
    assert body["state"] == "ended" and body["contents"] == "frozen\n"
    assert any(e["kind"] == "ended" and e["user_name"] == "Olga Owner" for e in body["events"])


def test_bad_tickets_and_spectators(room, owner):
    api, cookie = owner
    pad = new_pad(api, contents="x\n")

    async def scenario():
        import websockets
        import websockets.exceptions

        refused = websockets.exceptions.InvalidStatus   # closed before the handshake: HTTP 403
        for ticket in ("nope", ""):
            with pytest.raises(refused) as info:
                async with await room.socket(pad, ticket) as ws:
                    await ws.recv()
            assert info.value.response.status_code == 403
        ticket = await asyncio.to_thread(room.ticket, pad, "Twice")
        async with await room.socket(pad, ticket) as ws:
            await ws.recv()
        with pytest.raises(refused):   # a ticket works once
            async with await room.socket(pad, ticket) as ws:
                await ws.recv()
        ticket = await asyncio.to_thread(room.ticket, pad, "Foreign")
        with pytest.raises(refused):   # another site's page may not open a room
            async with await room.socket(pad, ticket, origin="http://evil.example") as ws:
                await ws.recv()
        spy = await YClient(room, pad, cookie=cookie).connect(invisible=True)
        guest = await YClient(room, pad, name="Visible").connect()
        await spy.type("spy was here")
        await guest.wait(lambda: guest.control_ops("participants"))
        await asyncio.sleep(0.5)
        assert guest.text == "x\n"
        assert all(p["name"] != "Olga Owner" for c in guest.control_ops("participants") for p in c["people"])
        await spy.close()
        await guest.close()

    run(scenario())
    events = api.get(f"/api/pads/{pad}/events").json()["events"]
    assert any(e["kind"] == "joined" and e["metadata"] == "invisible" for e in events)
    assert api.get(f"/api/pads/{pad}").json()["contents"] == "x\n"


@pytest.mark.vm
def test_a_run_shows_its_output_to_everyone(vm_site):  # noqa: F811
    api, cookie = login(vm_site, "Olga Owner")
    pad = new_pad(api, contents="print(input() * 2)\n")
    room = RoomProcess(vm_site, port=int(vm_site.console_url.rsplit(":", 1)[1]))

    async def scenario():
        a = await YClient(room, pad, cookie=cookie).connect()
        b = await YClient(room, pad, name="Runner Guest").connect()
        await b.command({"op": "run", "stdin": "ab\n"})
        for c in (a, b):
            out = (await c.wait(lambda: c.control_ops("run-output"), timeout=300))[0]
            assert out["output"] == "abab\n" and out["exit_status"] == 0 and out["by"] == "Runner Guest", out
        await a.close()
        await b.close()

    run(scenario())
    events = api.get(f"/api/pads/{pad}/events").json()["events"]
    assert any(e["kind"] == "ran" and e["user_name"] == "Runner Guest" and e["metadata"] == "python3" for e in events)
