"""Hypothesis against oh-guest on the host (tests/guestd_support.py): tar members and file paths
built from ``..``, ``.``, absolute names and links out of the workspace are refused or land inside;
nothing is ever written outside."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from hypervisor.microvm.guestd import GuestError

from .guestd_support import make_tar, snapshot, start

COMPONENTS = ["a", "b", "..", ".", "", "out-link", "in-link"]
_counter = itertools.count()


@pytest.fixture(scope="module")
def guest():
    g = start()
    ws = g.workspace
    (ws / "sub").mkdir()
    (ws / "out-link").symlink_to(g.outside)
    (ws / "in-link").symlink_to("sub")
    os.chown(ws / "sub", 64123, 64123)
    yield g
    assert g.stop() == 0


def _inside(path: Path, root: Path) -> bool:
    real = os.path.realpath(path)
    return real == str(root) or real.startswith(str(root) + "/")


def _outside_state(g, keep: Path) -> dict:
    return {k: v for k, v in snapshot(g.root).items() if not (k == str(keep) or k.startswith(str(keep) + "/"))}


names = st.builds(lambda lead, parts: lead + "/".join(parts),
                  st.sampled_from(["", "", "", "/", "./"]),
                  st.lists(st.sampled_from(COMPONENTS + ["c", "d"]), min_size=1, max_size=4))
targets = st.builds(lambda lead, parts: lead + "/".join(parts),
                    st.sampled_from(["", "", "/", "/etc/"]),
                    st.lists(st.sampled_from(COMPONENTS + ["c"]), min_size=1, max_size=4))
members = st.lists(st.one_of(
    st.tuples(names, st.just("file"), st.binary(max_size=64)),
    st.tuples(names, st.just("dir"), st.none()),
    st.tuples(names, st.just("symlink"), targets),
    st.tuples(names, st.just("hardlink"), targets),
), min_size=1, max_size=6)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=members)
def test_tar_members_never_write_outside_the_destination(guest, members):
    dest = guest.workspace / "sub" / f"t{next(_counter)}"
    dest.mkdir()
    os.chown(dest, 64123, 64123)
    before = _outside_state(guest, dest)
    try:
        guest.channel.untar(str(dest), make_tar(members))
        event("extracted")
    except GuestError as exc:                  # refused (here or in the guest), or tar failed
        event(f"refused: {exc.kind}")
    assert _outside_state(guest, dest) == before
    for path in dest.rglob("*"):
        assert _inside(path, dest) or (path.is_symlink() and not path.exists()
                                       and _inside(path.parent / os.readlink(path), dest)), path


paths = st.builds(lambda lead, parts: lead + "/".join(parts),
                  st.sampled_from(["", "", "/", "/etc/", "WS/"]),
                  st.lists(st.sampled_from(COMPONENTS + ["new"]), min_size=1, max_size=4))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=paths, data=st.binary(max_size=32))
def test_paths_beneath_the_workspace_stay_in_it(guest, path, data):
    ws = guest.workspace
    path = path.replace("WS/", f"{ws}/")
    before = snapshot(guest.outside), snapshot(guest.root / "home" / ".." / "outside")
    try:
        guest.channel.put_file(path, data, beneath=str(ws))
    except GuestError as exc:
        assert exc.kind in {"outside", "noparent", "notfile", "access", "badrequest", "notdir", "exists"}, exc
        event(f"refused: {exc.kind}")
    else:
        event("written")
        assert guest.channel.get_file(path, beneath=str(ws)).read() == data
        full = Path(path) if path.startswith("/") else ws / path
        assert _inside(full, ws)
    assert (snapshot(guest.outside), snapshot(guest.root / "home" / ".." / "outside")) == before
    assert not any(p.name.startswith(".oh-put") for p in ws.rglob("*"))
