from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Speed is measured by bench/, not asserted: Hypothesis' per-example deadline and its too-slow health
# check are timings that a loaded 2-core TCG host (or a VM test beside it) trips without any bug.
settings.register_profile("openhosting", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("openhosting")

from .support import Installation, make_database

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("OPENHOSTING_TEST_POSTGRES_URL") else [])


def random_pool() -> str:
    """A /24 no other installation of this test run is likely to hold (libvirt networks on one host
    must not overlap)."""
    return f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24"


# State directories live where QEMU (running as libvirt-qemu) can reach drive files: pytest's own
# temporary directories are private to root (0700).
STATE_ROOT = Path(os.environ.get("OPENHOSTING_TEST_STATE_ROOT", "/var/tmp/openhosting-tests"))


def new_installation(tmp: Path, backend: str, **env) -> tuple[Installation, callable]:
    """A new installation (not started). ``env`` adds settings; a value of None unsets a variable
    (``OPENHOSTING_IP_POOL=None``: the installation picks its own range, as by default)."""
    env.setdefault("OPENHOSTING_IP_POOL", random_pool())
    env.setdefault("OPENHOSTING_RECONCILE_INTERVAL", "1")
    url, drop_db = make_database(backend)
    STATE_ROOT.mkdir(mode=0o711, parents=True, exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix=f"{backend}-", dir=STATE_ROOT))
    state.chmod(0o711)

    def drop():
        inst.purge_libvirt()   # its networks too: a persistent network left behind keeps its range taken
        drop_db()
        if not os.environ.get("OPENHOSTING_TEST_KEEP"):
            shutil.rmtree(state, ignore_errors=True)

    inst = Installation(state_dir=state, database_url=url or f"sqlite:///{state}/openhosting.db",
                        env_extra={k: None if v is None else str(v) for k, v in env.items()})
    return inst, drop


@pytest.fixture(scope="session", params=BACKENDS)
def installation(request, tmp_path_factory):
    """A running installation shared by a session, once per database backend."""
    inst, drop = new_installation(tmp_path_factory.mktemp("oh"), request.param)
    inst.start()
    yield inst
    inst.stop()
    inst.purge_libvirt()
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
        inst.purge_libvirt()
        drop()


@pytest.fixture
def alice(installation):
    return installation.client(installation.create_user("alice"))


@pytest.fixture
def bob(installation):
    return installation.client(installation.create_user("bob"))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item (tests/browser.py saves a screenshot when the call failed)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
