"""A Mandate for other teams' tests: a pytest plugin.

Installing mandate registers this plugin (entry point `pytest11`). It gives three fixtures:

- `mandate_world`: the world to start from (override it in your conftest.py to return a
  path to a world file, YAML or JSON Lines (docs/world-format.md), or a `world:` mapping as a
  dict; default: an empty world);
- `mandate_server`: a fresh in-process Mandate server on a free port, filled from
  `mandate_world`, with a throwaway database (`.address`, `.token`, `.client`). One per test;
- `mandate_client`: a `mandate.client.MandateClient` connected to that server.

    def test_only_assigned_staff_edit(mandate_client):
        assert not mandate_client.check("emma", "edit", "Project:shop-site")

The plugin is loaded into every pytest run of the environment mandate is installed in, so
importing it imports nothing but pytest: gRPC, the stubs, the policy engine and the store are
imported when a Mandate fixture is first used. If that fails (a broken install, a policy that
does not load, a malformed world), the tests using the fixtures fail with a message saying
why, and every other test runs as before.

`MANDATE_POLICY_DIR` chooses the policy (default: the one packaged with mandate, see
`mandate policy path`).
"""

from __future__ import annotations

import secrets
import traceback
from pathlib import Path

import pytest


class RunningMandate:
    """An in-process server on a throwaway database, for as long as the context lasts."""

    def __init__(self, world: dict | str | Path | None = None, policy_dir: Path | str | None = None):
        from mandate.client import MandateClient
        from mandate.runtime.config import Config
        from mandate.runtime.server import build_server
        from mandate.runtime.world import EphemeralApp, read_world

        if isinstance(world, str | Path):
            world = read_world(world)
        policy_dir = Path(policy_dir) if policy_dir else Config.from_env().policy_dir
        self.token = secrets.token_urlsafe(16)
        self._ephemeral = EphemeralApp(policy_dir, world)
        self._server = None
        try:
            self.app = self._ephemeral.app
            config = Config(listen="127.0.0.1:0", database_url=self._ephemeral.database_url, policy_dir=policy_dir,
                            api_tokens=[self.token])
            self._server, port = build_server(self.app, config)
            self._server.start()
            self.app.start_expiring()  # access_expires_at and invitation lifetimes end as in `mandate serve`
            self.address = f"127.0.0.1:{port}"
            self.client = MandateClient(self.address, self.token)
        except BaseException:
            self._stop()
            raise

    def _stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
        self._ephemeral.close()

    def close(self) -> None:
        self.client.close()
        self._stop()

    def __enter__(self) -> RunningMandate:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_failure(error: BaseException) -> str:
    """Why the test server did not start, in words that point at the fix. Errors are told apart
    by name: importing their classes is what may have failed."""
    if isinstance(error, ImportError):
        hint = ("the installed mandate package is incomplete or its dependencies are broken; "
                "reinstall it: pip install --force-reinstall <the mandate wheel or URL>")
    elif type(error).__name__ == "PolicyError":
        hint = "the policy does not load; check MANDATE_POLICY_DIR (`mandate policy path` shows the default)"
    elif type(error).__name__ == "WorldError" or isinstance(error, OSError):
        hint = "the world returned by the mandate_world fixture cannot be loaded"
    else:
        hint = "unexpected:\n" + "".join(traceback.format_exception(error)).rstrip()
    return f"mandate: the test server could not start: {type(error).__name__}: {error}\n({hint})"


@pytest.fixture
def mandate_world():
    """Override to start from a known world: return a YAML path or a world dict."""
    return None


@pytest.fixture
def mandate_server(mandate_world):
    failure = None
    try:
        running = RunningMandate(mandate_world)
    except Exception as error:  # anything: the message must reach the test, not break the run
        failure = start_failure(error)
    if failure:
        pytest.fail(failure, pytrace=False)
    with running:
        yield running


@pytest.fixture
def mandate_client(mandate_server):
    return mandate_server.client
