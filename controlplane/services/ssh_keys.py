"""Users' SSH public keys, for the SSH gateway to workspaces (`controlplane/terminal/sshgate.py`).

A key is one OpenSSH public-key line (``ssh-ed25519 AAAA… comment``), as in ``~/.ssh/id_ed25519.pub``
or ``authorized_keys`` (options before the type are refused: the gateway has none to honour). It is
checked here without a crypto library: the type is one the gateway accepts, the blob is base64 whose
first field names the same type. `fingerprint` is OpenSSH's ``SHA256:…`` form (what `ssh-keygen -l`
prints), unique per user. Keys are public: they are stored as they are (nothing to hash).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from sqlalchemy import select

from ..db import Database
from ..models import User
from ..models.consoles import SshKey
from . import paging
from .containers_errors import ContainersError, invalid

ALGORITHMS = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")
MAX_LINE = 16 * 1024
MAX_KEYS = 100
_COMMENT = re.compile(r"^[\x20-\x7e]{0,255}$")


def key_not_found() -> ContainersError:
    return ContainersError(404, 1001, "ssh key not found")


def fingerprint(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def parse(line: str) -> tuple[str, bytes, str]:
    """(algorithm, blob, comment) of one public-key line; `invalid` (400/10) says what is wrong."""
    text = (line or "").strip()
    if not text:
        raise invalid("no public key given (one line such as 'ssh-ed25519 AAAA... me@laptop')")
    if len(text) > MAX_LINE or "\n" in text or "\r" in text or "\0" in text:
        raise invalid("a public key is one line of at most 16 KiB")
    parts = text.split(None, 2)
    algorithm = parts[0]
    if algorithm not in ALGORITHMS:
        raise invalid(f"unsupported key type {algorithm[:40]!r} (use one of {', '.join(ALGORITHMS)}; "
                      "options before the type are not accepted)")
    if len(parts) < 2:
        raise invalid("the public key has no base64 part")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise invalid("the public key's base64 part is not valid base64") from None
    if len(blob) < 4 or blob[4:4 + int.from_bytes(blob[:4], "big")] != algorithm.encode():
        raise invalid(f"the key data is not an {algorithm} key")
    comment = parts[2].strip() if len(parts) > 2 else ""
    if not _COMMENT.match(comment):
        raise invalid("the key's comment must be printable ASCII, at most 255 characters")
    return algorithm, blob, comment


class SshKeys:
    def __init__(self, db: Database):
        self.db = db

    @staticmethod
    def render(key: SshKey) -> dict:
        return {"id": key.id, "type": key.algorithm, "fingerprint": key.fingerprint, "comment": key.comment,
                "created_at": paging.date(key.created_at)}

    def add(self, owner: str, line: str, comment: str | None = None) -> dict:
        algorithm, blob, own_comment = parse(line)
        if comment is not None and not _COMMENT.match(comment):
            raise invalid("comment must be printable ASCII, at most 255 characters")
        printed = fingerprint(blob)
        with self.db.session() as s:
            if s.get(User, owner) is None:
                raise ContainersError(404, 1001, "user not found")
            keys = list(s.scalars(select(SshKey).where(SshKey.owner == owner)))
            if any(k.fingerprint == printed for k in keys):
                raise invalid(f"this key is already registered ({printed})")
            if len(keys) >= MAX_KEYS:
                raise invalid(f"at most {MAX_KEYS} keys per user")
            row = SshKey(owner=owner, algorithm=algorithm, key=base64.b64encode(blob).decode(),
                         fingerprint=printed, comment=comment if comment is not None else own_comment)
            s.add(row)
            s.flush()
            return self.render(row)

    def list(self, owner: str) -> list[dict]:
        with self.db.read_session() as s:
            return [self.render(k) for k in s.scalars(select(SshKey).where(SshKey.owner == owner)
                                                      .order_by(SshKey.id))]

    def remove(self, owner: str, key_id) -> None:
        """Remove the user's key `key_id` (its id, or its fingerprint); others' keys are not found."""
        with self.db.session() as s:
            query = select(SshKey).where(SshKey.owner == owner)
            text = str(key_id)
            if text.startswith("SHA256:"):
                row = s.scalars(query.where(SshKey.fingerprint == text)).first()
            elif text.isdigit() and len(text) < 19:
                row = s.scalars(query.where(SshKey.id == int(text))).first()
            else:
                row = None
            if row is None:
                raise key_not_found()
            s.delete(row)

    def owns(self, owner: str, blob: bytes) -> bool:
        """Has `owner` registered this key (its wire blob)?"""
        printed = fingerprint(blob)
        with self.db.read_session() as s:
            row = s.scalars(select(SshKey).where(SshKey.owner == owner, SshKey.fingerprint == printed)).first()
            return row is not None and base64.b64decode(row.key) == blob

    def known(self, blob: bytes) -> bool:
        """Has anyone registered this key?"""
        printed = fingerprint(blob)
        with self.db.read_session() as s:
            return s.scalars(select(SshKey.id).where(SshKey.fingerprint == printed)).first() is not None
