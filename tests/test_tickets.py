"""One-time console tickets on the real, migrated database (both backends): a ticket opens once,
within its lifetime, for its own kind and target, and racing claims have exactly one winner."""

from __future__ import annotations

import threading
import time

import pytest

from controlplane.config import Settings
from controlplane.db import Database
from controlplane.models import Ticket
from controlplane.services.tickets import Tickets, digest


@pytest.fixture
def tickets(installation):
    settings = Settings(state_dir=installation.state_dir, database_url=installation.database_url)
    db = Database(settings)
    yield Tickets(db), db
    db.dispose()


def test_a_ticket_opens_once(tickets, alice):
    service, db = tickets
    ticket, _ = service.issue("vnc", "server-1", alice.user.uuid)
    claim = service.claim("vnc", ticket)
    assert claim is not None and claim.target == "server-1" and claim.owner == alice.user.uuid
    assert service.claim("vnc", ticket) is None


def test_only_the_digest_is_stored(tickets, alice):
    service, db = tickets
    ticket, _ = service.issue("terminal", "ws-1", alice.user.uuid)
    with db.session() as s:
        row = s.query(Ticket).filter(Ticket.digest == digest(ticket)).one()
        assert ticket not in (row.digest, row.target, row.label)


@pytest.mark.parametrize("kind, target", [("terminal", None), ("vnc", "server-2")])
def test_wrong_kind_or_target_is_refused(tickets, alice, kind, target):
    service, _ = tickets
    ticket, _ = service.issue("vnc", "server-1", alice.user.uuid)
    assert service.claim(kind, ticket, target) is None


def test_expired_and_forged_tickets_are_refused(tickets, alice):
    service, _ = tickets
    ticket, _ = service.issue("pad", "ABCDEFGH", None, label="guest", ttl=0.2)
    time.sleep(0.4)
    assert service.claim("pad", ticket) is None
    assert service.claim("pad", "x" * 43) is None
    assert service.claim("pad", "") is None
    assert service.claim("pad", "y" * 10_000) is None


def test_racing_claims_have_one_winner(tickets, alice):
    service, _ = tickets
    ticket, _ = service.issue("vnc", "server-1", alice.user.uuid)
    results, start = [], threading.Barrier(8)

    def claim():
        start.wait()
        results.append(service.claim("vnc", ticket))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1


def test_sweep_removes_only_long_expired_tickets(tickets, alice):
    service, db = tickets
    old, _ = service.issue("vnc", "server-old", alice.user.uuid, ttl=-7200)
    new, _ = service.issue("vnc", "server-new", alice.user.uuid)
    assert service.sweep(older_than=3600) >= 1
    with db.session() as s:
        assert s.query(Ticket).filter(Ticket.digest == digest(old)).count() == 0
        assert s.query(Ticket).filter(Ticket.digest == digest(new)).count() == 1
