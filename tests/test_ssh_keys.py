"""Users' SSH keys: `openhosting-admin key add|list|remove` and `/api/v1/ssh-keys` (the workspaces
face), without VMs. Keys are made by ssh-keygen, as a user would; the gateway itself is tested in
test_terminal_vm.py."""

from __future__ import annotations

import base64
import hashlib
import subprocess

import pytest

from .conftest import BACKENDS, new_installation
from .containers import new_account


@pytest.fixture(scope="module", params=BACKENDS)
def site(request, tmp_path_factory):
    inst, drop = new_installation(tmp_path_factory.mktemp("keys"), request.param)
    inst.state_dir.mkdir(parents=True, exist_ok=True)
    inst.admin("db", "upgrade")
    inst.start_api()  # no agent needed
    yield inst
    inst.stop()
    drop()


def keygen(tmp_path, kind: str = "ed25519", comment: str = "me@laptop") -> tuple[str, str]:
    """(public key line, ssh-keygen's own SHA256 fingerprint)."""
    path = tmp_path / f"id_{kind}_{comment.replace('@', '_')}"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", str(path)], check=True)
    line = path.with_suffix(".pub").read_text().strip() if path.with_suffix(".pub").exists() else \
        (tmp_path / (path.name + ".pub")).read_text().strip()
    printed = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(path)], check=True,
                             capture_output=True, text=True).stdout.split()[1]
    return line, printed


def err(r, status, code):
    assert r.status == status, (r.status, r.text)
    assert r.json()["error_code"] == code, r.text
    return r.json()["message"]


def test_api_add_list_get_remove(site, tmp_path):
    acct, other = new_account(site), new_account(site)
    line, printed = keygen(tmp_path)
    r = acct.post_json("/ssh-keys", {"key": line})
    assert r.status == 201, r.text
    key = r.json()["key"]
    assert (key["type"], key["fingerprint"], key["comment"]) == ("ssh-ed25519", printed, "me@laptop")
    rsa, rsa_printed = keygen(tmp_path, "rsa", "work")
    r = acct.post_form("/ssh-keys", {"key": rsa, "comment": "renamed"})
    assert r.status == 201 and r.json()["key"]["comment"] == "renamed", r.text
    listed = acct.get("/ssh-keys").json()["items"]
    assert [k["fingerprint"] for k in listed] == [printed, rsa_printed]
    assert acct.get(f"/ssh-keys/{key['id']}").json() == key
    # another user sees none of them, cannot read or remove them: the face's 404/1001
    assert other.get("/ssh-keys").json() == {"items": []}
    err(other.get(f"/ssh-keys/{key['id']}"), 404, 1001)
    err(other.request("DELETE", f"/ssh-keys/{key['id']}"), 404, 1001)
    # the same key may be registered by another user (each owner's workspaces are their own)
    assert other.post_json("/ssh-keys", {"key": line}).status == 201
    assert "already registered" in err(acct.post_json("/ssh-keys", {"key": line}), 400, 10)
    assert acct.request("DELETE", f"/ssh-keys/{key['id']}").status == 200
    err(acct.request("DELETE", f"/ssh-keys/{key['id']}"), 404, 1001)
    assert [k["fingerprint"] for k in acct.get("/ssh-keys").json()["items"]] == [rsa_printed]
    err(acct.get("/ssh-keys", token=None), 401, 1)


@pytest.mark.parametrize("line, words", [
    ("", "no public key"),
    ("ssh-dss AAAAB3NzaC1kc3M= x", "unsupported key type"),
    ('command="ls" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== x', "unsupported key type"),
    ("ssh-ed25519", "no base64"),
    ("ssh-ed25519 !!!not-base64!!!", "not valid base64"),
    ("ssh-ed25519 " + base64.b64encode(b"\0\0\0\x07ssh-rsa" + b"\0" * 40).decode(), "not an ssh-ed25519 key"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==\nssh-rsa AAAA", "one line"),
])
def test_api_refuses_bad_keys_and_keeps_nothing(site, line, words):
    acct = new_account(site)
    assert words in err(acct.post_json("/ssh-keys", {"key": line}), 400, 10)
    assert acct.get("/ssh-keys").json() == {"items": []}


def test_cli_key_add_list_remove(site, tmp_path):
    user = site.create_user("keys")
    line, printed = keygen(tmp_path, comment="cli")
    pub = tmp_path / "cli.pub"
    pub.write_text(line + "\n")
    out = site.admin("key", "add", "--user", user.uuid, str(pub)).stdout.split()
    assert out[out.index("fingerprint") + 1] == printed
    key_id = out[out.index("key") + 1]
    listing = site.admin("key", "list", "--user", user.uuid).stdout
    assert f"{key_id} ssh-ed25519 {printed}" in listing and listing.rstrip().endswith("cli")
    again = site.admin("key", "add", "--user", user.uuid, str(pub), check=False)
    assert again.returncode != 0 and "already registered" in again.stderr
    bad = tmp_path / "bad.pub"
    bad.write_text("hello\n")
    refused = site.admin("key", "add", "--user", user.uuid, str(bad), check=False)
    assert refused.returncode != 0 and "unsupported key type" in refused.stderr
    assert site.admin("key", "remove", "--user", user.uuid, printed).stdout.strip() == f"removed {printed}"
    assert site.admin("key", "list", "--user", user.uuid).stdout == ""
    gone = site.admin("key", "remove", "--user", user.uuid, key_id, check=False)
    assert gone.returncode != 0 and "not found" in gone.stderr


def test_fingerprint_matches_openssh(tmp_path):
    from controlplane.services.ssh_keys import parse

    for kind in ("ed25519", "ecdsa", "rsa"):
        line, printed = keygen(tmp_path, kind, f"fp-{kind}")
        algorithm, blob, comment = parse(line)
        assert "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=") == printed
        assert comment == f"fp-{kind}"
