"""What only PostgreSQL has: transactions the database aborts, concurrent migrations, URLs.

The rules themselves run on PostgreSQL through the parametrized suites (see conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mandate import errors
from mandate.runtime.app import App
from mandate.store import db, models
from sqlalchemy import func, select, text

from tests.conftest import POLICY_DIR
from tests.factories import World


@pytest.fixture
def pg_app(postgres):
    url = postgres.create_database("aborts", template="mandate_template")
    application = App(url, POLICY_DIR)
    yield application
    application.close()
    postgres.drop_database("aborts")


def abort_with(monkeypatch, sqlstate: str, times: int) -> list[int]:
    """The next `times` transactions that record an event are aborted by PostgreSQL itself."""
    raised = [0]
    emit = db.Transaction.emit

    def aborting(tx, type, **attributes):
        if raised[0] < times:
            raised[0] += 1
            tx.session.execute(text(f"DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{sqlstate}'; END $$"))
        return emit(tx, type, **attributes)

    monkeypatch.setattr(db.Transaction, "emit", aborting)
    return raised


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"], ids=["serialization_failure", "deadlock"])
def test_a_transaction_the_database_aborts_runs_again_and_writes_once(pg_app, monkeypatch, sqlstate):
    world = World(pg_app)
    owner = world.user("owner")
    organization = world.organization(owner)
    raised = abort_with(monkeypatch, sqlstate, times=2)
    revision = pg_app.directory.put_resource(owner, "Project", "retried", organization)
    assert raised[0] == 2
    with pg_app.store.read() as session:
        resources = session.execute(select(func.count()).select_from(models.Resource)
                                    .where(models.Resource.id == "retried")).scalar_one()
        events = session.execute(select(func.count()).select_from(models.Event)
                                 .where(models.Event.revision == revision)).scalar_one()
    assert (resources, events) == (1, 1)
    assert pg_app.authorizer.check("User", owner, "read", "Project", "retried")


def test_a_transaction_aborted_every_time_is_unavailable_not_internal(pg_app, monkeypatch):
    world = World(pg_app)
    owner = world.user("owner")
    organization = world.organization(owner)
    before = pg_app.store.current_revision()
    abort_with(monkeypatch, "40001", times=1000)
    with pytest.raises(errors.DatabaseUnavailable):
        pg_app.directory.put_resource(owner, "Project", "never", organization)
    assert pg_app.store.current_revision() == before  # nothing was written


def test_replicas_starting_together_migrate_once(postgres):
    url = postgres.create_database("migrated_together")
    env = {**os.environ, "MANDATE_DATABASE_URL": url.replace("postgresql+psycopg://", "postgresql://")}
    try:
        runs = [subprocess.Popen([sys.executable, "-m", "mandate.cli", "migrate"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(3)]
        outputs = [run.communicate(timeout=120)[0] for run in runs]
        assert [run.returncode for run in runs] == [0, 0, 0], outputs
        app = App(url, POLICY_DIR)
        try:
            assert app.store.current_revision() == 1  # the first start records its policy (history)
            assert app.database_available()
        finally:
            app.close()
    finally:
        postgres.drop_database("migrated_together")


def test_a_plain_postgresql_url_means_psycopg():
    assert db.normalize_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert db.normalize_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert db.normalize_url("sqlite:///x.db") == "sqlite:///x.db"
