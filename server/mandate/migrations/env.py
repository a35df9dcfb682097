"""Alembic environment: migrates the database named by the Alembic config's sqlalchemy.url."""

from alembic import context
from sqlalchemy import text

from mandate.store.db import make_engine
from mandate.store.models import Base

config = context.config


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _run(connectable)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


# Replicas that start together all run `migrate`: on PostgreSQL they take turns on this lock,
# and those after the first find the schema already at the head.
MIGRATION_LOCK = 7_368_289_001


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


run_migrations_online()
