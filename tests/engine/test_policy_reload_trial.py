"""A reload tries the new policy before it serves (issue 18 item 17, R24): a policy that loads
and keeps the contract but fails at run time on real decisions is refused, on a sample of the
store's own situations or by its own tests; the old policy keeps serving, and the refusal is
logged with the reason."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from mandate.client import MandateClient
from mandate.engine.policy import PolicyError
from mandate.runtime.app import App
from mandate.runtime.config import Config
from mandate.runtime.server import build_server
from mandate.runtime.world import load_world
from mandate.v1 import authorization_pb2, common_pb2

from tests.conftest import POLICY_DIR, TOKEN
from tests.support import edit_policy

# A partner and a client: every kind of situation the sample must find (home members, a
# partner's people, a connection).
WORLD = {
    "users": ["alice", "bob", "ann", "dan"],
    "organizations": {"acme": {"owner": "alice"}, "agency": {"owner": "ann"}},
    "members": [{"organization": "acme", "user": "bob", "role": "colleague"},
                {"organization": "agency", "user": "dan", "role": "colleague", "partner_employee": True}],
    "connections": [{"partner": "agency", "client": "acme", "granted": ["read"], "employee_approval": "partner"}],
    "assignments": [{"partner": "agency", "client": "acme", "user": "dan", "approved": False}],
    "projects": [{"id": "spring", "organization": "acme"}],
}
ACTIVE_ROLE = '  membership.status = "active" and\n  membership.role = role;\n'
# Loads and keeps the contract; adding a number to a role fails at run time on every decision
# that reaches a membership: every Check of a member would answer INTERNAL.
FAILS_ON_EVERY_MEMBER = '  membership.status = "active" and\n  membership.role + 1 = role;\n'
INVITE_OWNER = '  has_role(user, "owner", member.organization);\n\n# R6:'
# Fails only when an owner invites someone as owner: no situation of the store reaches it (and
# no user without a membership), the policy's own tests do.
FAILS_ON_INVITING_AN_OWNER = '  has_role(user, "owner", member.organization) and\n  member.new_role + 1 = 2;\n\n# R6:'


def edited(directory: Path, old: str, new: str) -> None:
    edit_policy(directory, old, new)


@pytest.fixture
def policy_dir(tmp_path) -> Path:
    """The shipped policy and its tests."""
    directory = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, directory)
    return directory


@pytest.fixture
def live(policy_dir, database_url):
    app = App(database_url, policy_dir)
    load_world(app.store, WORLD)
    app.index.catch_up()
    yield app
    app.close()


def test_issue18_item17_a_policy_failing_on_the_stores_decisions_is_refused(live, policy_dir):
    """Without tests beside it, the sample of the store's situations finds the error."""
    shutil.rmtree(policy_dir / "tests")
    serving = live.authorizer.policy
    edited(policy_dir, ACTIVE_ROLE, FAILS_ON_EVERY_MEMBER)
    with pytest.raises(PolicyError) as refused:
        live.reload_policy()
    assert "fails at run time" in str(refused.value)
    assert "unsupported arithmetic operands" in str(refused.value)  # the reason, as oso gives it
    assert live.authorizer.policy is serving
    assert live.authorizer.check("User", "bob", "read", "Project", "spring")  # and it decides as before
    # The same policy is refused however often it is tried; a correct one is taken.
    with pytest.raises(PolicyError):
        live.reload_policy()
    edited(policy_dir, FAILS_ON_EVERY_MEMBER, ACTIVE_ROLE + "# reviewed\n")
    assert live.reload_policy() is live.authorizer.policy is not serving


def test_issue18_item17_a_policy_failing_its_own_tests_at_run_time_is_refused(live, policy_dir):
    """The store has no situation that invites an owner; the policy's tests (policies/tests)
    do, and their run-time error refuses it. An expectation that merely fails does not."""
    serving = live.authorizer.policy
    edited(policy_dir, INVITE_OWNER, FAILS_ON_INVITING_AN_OWNER)
    with pytest.raises(PolicyError) as refused:
        live.reload_policy()
    assert "policy test " in str(refused.value) and "unsupported arithmetic operands" in str(refused.value)
    assert live.authorizer.policy is serving


def test_issue18_item17_a_decision_change_without_an_error_still_reloads(live, policy_dir, caplog):
    """A reviewed change that makes a shipped test fail is not a run-time error: it serves, and
    the reload logs the failing test."""
    edited(policy_dir, '  "publish" if "colleague" on "organization";\n', "")
    with caplog.at_level(logging.WARNING, logger="mandate.engine.policytrial"):
        policy = live.reload_policy()
    assert live.authorizer.policy is policy
    assert not live.authorizer.check("User", "bob", "publish", "Project", "spring")
    assert any("of its" in record.getMessage() and "tests fail" in record.getMessage() for record in caplog.records)


def test_issue18_item17_through_grpc_the_refused_policy_never_answers(live, policy_dir, caplog):
    """Through the server's reload (as SIGHUP runs it): the refusal is logged with the reason,
    and Check keeps answering with the old policy, never INTERNAL."""
    shutil.rmtree(policy_dir / "tests")
    config = Config(listen="127.0.0.1:0", database_url=live.store.url, policy_dir=policy_dir, api_tokens=[TOKEN])
    server, port = build_server(live, config)
    server.start()
    request = authorization_pb2.CheckRequest(actor=common_pb2.ObjectRef(type="User", id="bob"), action="read",
                                             resource=common_pb2.ObjectRef(type="Project", id="spring"))
    try:
        with MandateClient(f"127.0.0.1:{port}", TOKEN) as client:
            before = client.authorization.Check(request, timeout=10)
            edited(policy_dir, ACTIVE_ROLE, FAILS_ON_EVERY_MEMBER)
            with caplog.at_level(logging.ERROR, logger="mandate.server"):
                server.reload_policy()
            refusals = [r.getMessage() for r in caplog.records if "reload refused" in r.getMessage()]
            assert len(refusals) == 1 and "fails at run time" in refusals[0], refusals
            assert "unsupported arithmetic operands" in refusals[0]
            after = client.authorization.Check(request, timeout=10)
            assert (after.allowed, after.policy_version) == (True, before.policy_version)
    finally:
        server.stop(grace=None)
