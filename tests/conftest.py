"""Fixtures: a migrated store per test, the application on it, and a real gRPC server on a
free port with a client that carries the bearer token.

Every test that uses a store runs on each engine (`engine` is parametrized, as SpiceDB runs one
datastore suite against every datastore): SQLite, and a real PostgreSQL server that the test
run starts in a temporary directory. If PostgreSQL cannot start, those tests fail; they are
never skipped."""

from __future__ import annotations

import itertools
import logging
import shutil
from pathlib import Path

import pytest
from mandate.client import MandateClient
from mandate.runtime.app import App
from mandate.runtime.config import Config
from mandate.runtime.server import build_server
from mandate.store.localpg import LocalPostgres
from mandate.store.migrate import upgrade

from tests.factories import World

# An in-process server may log a call that ends just after its test, when pytest has closed that
# test's captured stream: such a line is lost, not an error of the suite.
logging.raiseExceptions = False

ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = ROOT / "policies"
TOKEN = "test-token-not-secret"


@pytest.fixture(scope="session")
def template_db(tmp_path_factory) -> Path:
    """Migrate once; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "mandate.db"
    upgrade(f"sqlite:///{path}")
    return path


ENGINES = ("sqlite", "postgresql")
PG_TEMPLATE = "mandate_template"
_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server for the whole run, with a migrated template database."""
    server = LocalPostgres()
    try:
        server.start()
        server.create_database(PG_TEMPLATE)
        upgrade(server.url(PG_TEMPLATE))
        yield server
    finally:
        server.close()


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    return request.param


@pytest.fixture
def database_url(engine, request, tmp_path) -> str:
    """A fresh, migrated database: a copy of the template file, or a database made from the template."""
    if engine == "sqlite":
        path = tmp_path / "mandate.db"
        shutil.copy(request.getfixturevalue("template_db"), path)
        yield f"sqlite:///{path}"
        return
    server = request.getfixturevalue("postgres")
    name = f"test_{next(_databases)}"
    yield server.create_database(name, template=PG_TEMPLATE)
    server.drop_database(name)


@pytest.fixture
def empty_database_url(engine, request, tmp_path) -> str:
    """A database with no schema at all, on the engine (for migration tests)."""
    if engine == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server = request.getfixturevalue("postgres")
    name = f"empty_{next(_databases)}"
    yield server.create_database(name)
    server.drop_database(name)


@pytest.fixture
def app(database_url):
    application = App(database_url, POLICY_DIR)
    yield application
    application.close()


@pytest.fixture
def world(app) -> World:
    return World(app)


@pytest.fixture
def server_address(app):
    config = Config(listen="127.0.0.1:0", database_url=app.store.url, policy_dir=POLICY_DIR, api_tokens=[TOKEN])
    server, port = build_server(app, config)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.fixture
def client(server_address):
    with MandateClient(server_address, TOKEN) as mandate_client:
        yield mandate_client
