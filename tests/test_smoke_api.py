def test_create_and_list(alice):
    drive = alice.create_drive("1M")
    r = alice.get("/drives/list")
    assert r.status == 200
    assert r.text.split() == [drive]
