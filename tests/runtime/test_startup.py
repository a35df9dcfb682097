"""What `mandate serve` says when it cannot start: a bad setting or a busy address is one line
naming it, never a traceback (issue 18, items 16 and 20). The servers here are real processes;
each refuses to start, so none of them runs for long."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mandate.clock import ManualClock
from mandate.runtime.app import App
from mandate.runtime.config import HISTORY_RETENTION_BOUNDS, INVITATION_TTL_BOUNDS, Config
from mandate.shared.expiry import Lifetimes

from tests.conftest import POLICY_DIR
from tests.factories import World

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "startup-test-token-not-secret"


def serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`mandate serve` on a fresh SQLite file; it must stop by itself (a server that started
    would run until the timeout, and fail the test)."""
    environment = {**os.environ, "MANDATE_API_TOKENS": TOKEN, "MANDATE_POLICY_DIR": str(ROOT / "policies"),
                   "MANDATE_DATABASE_URL": f"sqlite:///{tmp_path / 'mandate.db'}", **env}
    try:
        return subprocess.run([sys.executable, "-m", "mandate.cli", "serve", *args], cwd=tmp_path,
                              env=environment, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired as expired:
        raise AssertionError(f"mandate serve {' '.join(args)} started instead of refusing: {expired.stderr}") from None


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mandate: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize(("args", "env", "named"), [
    (["--invitation-ttl", "999999999d"], {}, "--invitation-ttl"),
    (["--invitation-ttl", "30s"], {}, "--invitation-ttl"),
    (["--invitation-ttl", "14 days"], {}, "--invitation-ttl"),
    (["--history-retention", "999999999d"], {}, "--history-retention"),
    (["--history-retention", "0d"], {}, "--history-retention"),
    (["--grace", "nan"], {}, "--grace"),
    (["--grace", "1e400"], {}, "--grace"),
    (["--grace", "-1"], {}, "--grace"),
    ([], {"MANDATE_INVITATION_TTL": "999999999d"}, "MANDATE_INVITATION_TTL"),
    ([], {"MANDATE_HISTORY_RETENTION": "999999999d"}, "MANDATE_HISTORY_RETENTION"),
    ([], {"MANDATE_GRACE_SECONDS": "inf"}, "MANDATE_GRACE_SECONDS"),
    ([], {"MANDATE_DATABASE_POOL_TIMEOUT": "1e9"}, "MANDATE_DATABASE_POOL_TIMEOUT"),
    ([], {"MANDATE_DATABASE_CONNECT_TIMEOUT": "0"}, "MANDATE_DATABASE_CONNECT_TIMEOUT"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_a_duration_setting_out_of_bounds_stops_the_start_naming_it(tmp_path, monkeypatch, capsys, args, env, named):
    """issue 18 item 16: every duration setting is checked at start against its bounds; a bad one
    is one line naming the flag or variable, exit 2 like every usage error (not INTERNAL later).
    In process: the start must stop before it touches the database or serves."""
    from mandate import cli
    from mandate.runtime import logs, server
    from mandate.store import migrate

    def started(*_args, **_kwargs):
        raise AssertionError("mandate serve went on to start")

    monkeypatch.setattr(migrate, "upgrade", started)
    monkeypatch.setattr(server, "serve", started)
    monkeypatch.setattr(logs, "setup", lambda *_args, **_kwargs: None)  # leave the test's logging alone
    monkeypatch.setenv("MANDATE_API_TOKENS", TOKEN)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["serve", "--listen", "127.0.0.1:0", *args]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mandate: {named}: "), lines


def test_a_bad_duration_stops_a_real_start(tmp_path):
    """issue 18 item 16, as an operator meets it: `mandate serve --invitation-ttl 999999999d`
    exits 2 at once with one line (it used to serve, and every invitation was INTERNAL)."""
    result = serve(tmp_path, "--listen", "127.0.0.1:0", "--invitation-ttl", "999999999d")
    assert result.returncode == 2
    assert one_line(result) == "mandate: --invitation-ttl: 999999999d is out of bounds: from 1m to 3650d"


def test_duration_bounds_from_the_environment():
    """issue 18 item 16: the bounds themselves are accepted, `forever` keeps the history."""
    shortest, longest = INVITATION_TTL_BOUNDS
    assert Config.from_env({"MANDATE_INVITATION_TTL": "1m"}).invitation_ttl == shortest
    assert Config.from_env({"MANDATE_INVITATION_TTL": "3650d"}).invitation_ttl == longest
    assert Config.from_env({"MANDATE_HISTORY_RETENTION": "36500d"}).history_retention == HISTORY_RETENTION_BOUNDS[1]
    assert Config.from_env({"MANDATE_HISTORY_RETENTION": "forever"}).history_retention is None
    assert Config.from_env({"MANDATE_GRACE_SECONDS": "0"}).grace_seconds == 0


def test_the_longest_durations_work_r5(database_url):
    """issue 18 item 16: at the longest invitation lifetime and history retention, inviting (R5)
    and the sweeper's upkeep work, on every engine: no date beyond the calendar."""
    clock = ManualClock()
    lifetimes = Lifetimes(clock=clock, invitation_ttl=INVITATION_TTL_BOUNDS[1],
                          history_retention=HISTORY_RETENTION_BOUNDS[1])
    app = App(database_url, POLICY_DIR, lifetimes=lifetimes)
    try:
        world = World(app)
        organization = world.organization()
        invitation = app.memberships.invite_member(world.owner_of(organization), organization,
                                                   "far@example.com", "colleague")
        assert invitation.expires_at.startswith(str((clock.now() + INVITATION_TTL_BOUNDS[1]).year))
        assert app.expiries.sweep() is None
        clock.advance(days=INVITATION_TTL_BOUNDS[1].days, seconds=1)
        assert app.expiries.sweep() is not None  # the invitation lapses, the retention's cut-off is computed
    finally:
        app.close()


def test_an_address_in_use_is_one_line_naming_it(tmp_path):
    """issue 18 item 20: a port already in use is one line naming the address and exit 1 (it was
    the gRPC core's error line and a 30-line traceback); so is the metrics address."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = serve(tmp_path, "--listen", address)
        assert result.returncode == 1
        assert one_line(result) == f"mandate: cannot listen on {address} (--listen): the address is already in use"
        result = serve(tmp_path, "--listen", "127.0.0.1:0", "--metrics-listen", address)
        assert result.returncode == 1
        assert one_line(result) == (f"mandate: cannot listen on {address} (--metrics-listen): "
                                    "the address is already in use")
