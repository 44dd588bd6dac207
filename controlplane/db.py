"""Engine and session factory; the schema is built only by Alembic migrations."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from .config import Settings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str, immediate: bool = True) -> Engine:
    """An engine for `url`. For SQLite, `immediate` transactions take the write lock at BEGIN (for
    sessions that write); read-only sessions use a second engine with plain BEGIN so that they never
    wait for, or block, a writer (WAL readers see the last committed state)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # WAL lets readers run beside the one writer; foreign keys are off by default in SQLite.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # Take the write lock at BEGIN so two writers queue instead of failing on upgrade.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        # pysqlite's own BEGIN handling would interfere with ours.
        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_conn, _record):
            dbapi_conn.isolation_level = None

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


class Database:
    """Owns the engine and hands out sessions; one per process."""

    def __init__(self, settings: Settings):
        self.settings = settings
        if settings.database_url.startswith("sqlite"):
            settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(settings.database_url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if settings.database_url.startswith("sqlite"):
            self.read_engine = make_engine(settings.database_url, immediate=False)
            self._read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)
        else:
            self.read_engine = None
            self._read_sessions = self._sessions

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any exception."""
        with self._sessions() as session:
            with session.begin():
                yield session

    @contextlib.contextmanager
    def read_session(self) -> Iterator[Session]:
        """A transaction for reads only (never commits changes; see make_engine)."""
        with self._read_sessions() as session:
            try:
                yield session
            finally:
                session.rollback()

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not None:
            self.read_engine.dispose()


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    from alembic import command

    if settings.database_url.startswith("sqlite"):
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings.database_url), revision)
