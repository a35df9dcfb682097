"""Fixtures: a migrated store per test, the application on it, and a real gRPC server on a
free port with a client that carries the bearer token."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mandate.app import App
from mandate.client import MandateClient
from mandate.config import Config
from mandate.server import build_server
from mandate.store.migrate import upgrade

from tests.factories import World

ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = ROOT / "policies"
TOKEN = "test-token-not-secret"


@pytest.fixture(scope="session")
def template_db(tmp_path_factory) -> Path:
    """Migrate once; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "mandate.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def database_url(template_db, tmp_path) -> str:
    path = tmp_path / "mandate.db"
    shutil.copy(template_db, path)
    return f"sqlite:///{path}"


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
