"""A Mandate for other teams' tests: a pytest plugin.

Installing mandate registers this plugin (entry point `pytest11`). It gives two fixtures:

- `mandate_world`: the world to start from (override it in your conftest.py to return a
  path to a world YAML file or a dict in the same format; default: an empty world);
- `mandate_client`: a `MandateClient` connected to a fresh in-process Mandate server on a
  free port, filled from `mandate_world`, with a throwaway database. One server per test.

    def test_only_assigned_staff_edit(mandate_client):
        reply = mandate_client.authorization.Check(CheckRequest(...))
        assert not reply.allowed

`MANDATE_POLICY_DIR` chooses the policy (default: the `policies/` of the checkout).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from mandate.client import MandateClient
from mandate.config import Config
from mandate.world import EphemeralApp, read_yaml


def default_policy_dir() -> Path:
    configured = os.environ.get("MANDATE_POLICY_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent.parent / "policies"


class RunningMandate:
    """An in-process server on a throwaway database, for as long as the context lasts."""

    def __init__(self, world: dict | str | Path | None = None, policy_dir: Path | str | None = None):
        from mandate.server import build_server

        if isinstance(world, str | Path):
            world = read_yaml(world).get("world")
        self.token = secrets.token_urlsafe(16)
        self._ephemeral = EphemeralApp(policy_dir or default_policy_dir(), world)
        self.app = self._ephemeral.app
        config = Config(listen="127.0.0.1:0", database_url=self._ephemeral.database_url,
                        policy_dir=Path(policy_dir or default_policy_dir()), api_tokens=[self.token])
        self._server, port = build_server(self.app, config)
        self._server.start()
        self.address = f"127.0.0.1:{port}"
        self.client = MandateClient(self.address, self.token)

    def close(self) -> None:
        self.client.close()
        self._server.stop(grace=None)
        self._ephemeral.close()

    def __enter__(self) -> RunningMandate:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture
def mandate_world():
    """Override to start from a known world: return a YAML path or a world dict."""
    return None


@pytest.fixture
def mandate_server(mandate_world):
    with RunningMandate(mandate_world) as running:
        yield running


@pytest.fixture
def mandate_client(mandate_server) -> MandateClient:
    return mandate_server.client
