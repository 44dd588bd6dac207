"""The schema is built only by Alembic; models and migrations must not drift."""


from sqlalchemy import create_engine, inspect

from controlplane.models import Base


def test_models_match_migrations(installation):
    # `db check` runs alembic's autogenerate comparison against the migrated database.
    result = installation.admin("db", "check", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_upgrade_creates_every_model_table(installation):
    engine = create_engine(installation.database_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_upgrade_is_idempotent(installation):
    assert installation.admin("db", "upgrade").returncode == 0
