"""Property tests of the workspace path and archive rules: Base64 file paths (contract endpoint 9) and
the members of `files` archives (§C). Nothing outside /home/user/workspace is ever named."""

from __future__ import annotations

import base64
import io
import posixpath
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.services.containers_errors import ContainersError
from controlplane.services.workspace_files import ROOT, decode_path, inside
from storage import workspace_tar
from storage.errors import BadData

segment = st.one_of(st.sampled_from(["..", ".", "", "workspace", "a", "b c", "ünï", "x.py"]),
                    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
                            min_size=1, max_size=8))
paths = st.lists(segment, min_size=0, max_size=6).map("/".join)
absolute = paths.map(lambda p: "/" + p)


@given(st.one_of(paths, absolute))
def test_base64_paths_round_trip_in_every_alphabet(path):
    raw = path.encode()
    for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
                    base64.b64encode(raw).decode().rstrip("="), base64.b64encode(raw).decode().replace("/", "%2F")):
        assert decode_path(encoded) == path


@given(st.one_of(paths, absolute))
def test_decoded_paths_never_leave_the_workspace(path):
    target = inside(path)
    if target is not None:
        assert target == ROOT or target.startswith(ROOT + "/")
        assert posixpath.normpath(target) == target and "/../" not in target + "/"
    else:
        # refused only when the path really leaves the workspace
        joined = path if path.startswith("/") else posixpath.join(ROOT, path)
        norm = posixpath.normpath(joined)
        assert not (norm == ROOT or norm.startswith(ROOT + "/")) or "\x00" in path


@given(st.binary(max_size=40))
def test_bad_base64_or_utf8_is_1105(raw):
    encoded = base64.b64encode(raw).decode()
    try:
        raw.decode("utf-8")
        assert decode_path(encoded) == raw.decode()
    except UnicodeDecodeError:
        with pytest.raises(ContainersError) as exc:
            decode_path(encoded)
        assert (exc.value.status, exc.value.code) == (400, 1105)


@pytest.mark.parametrize("text", ["a*b", "ab$c", "a", "Zm9v!", "Zm9v=Zm9v"])
def test_not_base64(text):
    with pytest.raises(ContainersError) as exc:
        decode_path(text)
    assert exc.value.code == 1105


# ---- archive members ------------------------------------------------------------------------------

member = st.tuples(st.sampled_from(["file", "dir", "symlink", "hardlink", "fifo"]),
                   st.one_of(paths, absolute), st.one_of(paths, absolute))


def _archive(members) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for kind, name, target in members:
            info = tarfile.TarInfo(name or ".")
            if kind == "file":
                info.size = 3
                tar.addfile(info, io.BytesIO(b"abc"))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            info.linkname = target
            tar.addfile(info)
    return raw.getvalue()


def _resolve(name: str, links: dict[str, str]) -> str | None:
    """Where `name` lands when extracted at ROOT given the symlinks made so far (None: outside)."""
    path = ROOT
    for part in name.split("/"):
        path = posixpath.normpath(posixpath.join(path, part))
        seen = 0
        while path in links and seen < 40:
            path = posixpath.normpath(posixpath.join(posixpath.dirname(path), links[path]))
            seen += 1
        if not (path == ROOT or path.startswith(ROOT + "/")):
            return None
    return path


@settings(max_examples=300)
@given(st.lists(member, min_size=1, max_size=6))
def test_clean_archives_write_nothing_outside(members):
    try:
        out = workspace_tar.clean(_archive(members), max_unpacked=1 << 20)
    except BadData:
        return  # refused as a whole: nothing is written
    links: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(out), mode="r:gz") as tar:
        for m in tar.getmembers():
            assert not m.name.startswith("/") and ".." not in m.name.split("/")
            assert m.isfile() or m.isdir() or m.issym() or m.islnk()
            where = _resolve(posixpath.dirname(m.name), links) if "/" in m.name else ROOT
            assert where is not None, m.name
            if m.issym():
                target = posixpath.normpath(posixpath.join(posixpath.dirname(posixpath.join(ROOT, m.name)), m.linkname))
                assert target == ROOT or target.startswith(ROOT + "/"), (m.name, m.linkname)
                links[posixpath.join(ROOT, m.name)] = m.linkname


@pytest.mark.parametrize("members", [
    [("file", "../x", "")], [("file", "/etc/passwd", "")], [("symlink", "l", "/etc")], [("symlink", "l", "../..")],
    [("symlink", "l", "sub"), ("file", "l/x", "")], [("hardlink", "h", "/etc/shadow")], [("fifo", "p", "")],
    [("file", "workspace/../../x", "")],
])
def test_refused_members(members):
    with pytest.raises(BadData):
        workspace_tar.clean(_archive(members), max_unpacked=1 << 20)


def test_workspace_prefix_is_stripped_and_limits_hold():
    out = workspace_tar.clean(_archive([("dir", "workspace", ""), ("file", "workspace/src/a.py", "")]),
                              max_unpacked=1 << 20)
    assert workspace_tar.names(out) == ["src/a.py"]
    out = workspace_tar.clean(_archive([("file", "a.py", ""), ("file", "workspace/b", "")]), max_unpacked=1 << 20)
    assert workspace_tar.names(out) == ["a.py", "workspace/b"]
    with pytest.raises(BadData):
        workspace_tar.clean(_archive([("file", "a", ""), ("file", "b", "")]), max_unpacked=5)
