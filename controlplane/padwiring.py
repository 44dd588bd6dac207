"""The pads face's services and its rows of the face table, built once per process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .auth import BasicAuth
from .config import Settings
from .db import Database
from .faces import Face
from .padface import PadsAuth, render_error
from .services.accounts import Accounts

PREFIXES = ("/api/pads", "/api/pad_environments", "/api/questions", "/api/quota", "/api/organization",
            "/api/languages")


@dataclass
class PadFace:
    settings: Settings
    accounts: object   # PadAccounts
    pads: object       # Pads
    questions: object  # Questions
    orgs: object       # PadOrgs
    runs: object       # PadRuns, or None without a sandbox service
    images: Callable[[], list[str]] | None


def build(settings: Settings, db: Database, accounts: Accounts, sandboxes=None) -> PadFace:
    from .services.pad_accounts import PadAccounts
    from .services.pad_orgs import PadOrgs
    from .services.pads import Pads
    from .services.questions import Questions
    from .services.tokens import Tokens

    questions = Questions(db)
    pads = Pads(db, settings, accounts, questions)
    runs = None
    if sandboxes is not None:
        from .services.pad_runs import PadRuns

        runs = PadRuns(db, settings, pads, sandboxes)
    return PadFace(settings=settings, accounts=PadAccounts(db, settings, accounts, Tokens(db)), pads=pads,
                   questions=questions, orgs=PadOrgs(db, settings), runs=runs,
                   images=sandboxes.images if sandboxes is not None else None)


def faces(face: PadFace, accounts: Accounts) -> list[Face]:
    """The pads face (any credential form) and its login/logout paths (no authenticator)."""
    return [Face("pads", PREFIXES, PadsAuth(face.accounts, BasicAuth(accounts)), render_error),
            Face("pads-auth", ("/api/auth",), None, render_error)]


def add_routes(app, face: PadFace) -> None:
    from .resources import padorg, pads

    pads.add_routes(app, face)
    padorg.add_routes(app, face)
