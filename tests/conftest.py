from __future__ import annotations

import os
from pathlib import Path

import pytest

from .support import Installation, make_database

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("OPENHOSTING_TEST_POSTGRES_URL") else [])


def new_installation(tmp: Path, backend: str, **env) -> tuple[Installation, callable]:
    url, drop = make_database(backend)
    state = tmp / f"state-{backend}"
    inst = Installation(state_dir=state, database_url=url or f"sqlite:///{state}/openhosting.db",
                        env_extra={k: str(v) for k, v in env.items()})
    return inst, drop


@pytest.fixture(scope="session", params=BACKENDS)
def installation(request, tmp_path_factory):
    """A running installation shared by a session, once per database backend."""
    inst, drop = new_installation(tmp_path_factory.mktemp("oh"), request.param)
    inst.start()
    yield inst
    inst.stop()
    drop()


@pytest.fixture
def fresh_installation(request, tmp_path):
    """A factory for installations a test may stop, kill and restart (SQLite; extra env allowed)."""
    made = []

    def make(backend: str = "sqlite", **env) -> Installation:
        inst, drop = new_installation(tmp_path, backend, **env)
        made.append((inst, drop))
        return inst.start()

    yield make
    for inst, drop in made:
        inst.stop()
        drop()


@pytest.fixture
def alice(installation):
    return installation.client(installation.create_user("alice"))


@pytest.fixture
def bob(installation):
    return installation.client(installation.create_user("bob"))
