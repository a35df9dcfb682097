"""Named callers (issue 9, item 2): the callers file names each calling service by its token
digest; every event says which service made the change, on whose behalf; a read-only caller
changes nothing and sees no emails; SIGHUP reloads the file; MANDATE_API_TOKENS are env-N."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager

import grpc
import pytest
from mandate.client import MandateClient
from mandate.names import EventType
from mandate.runtime.callers import CallersError, read_callers_file, subject_rdns
from mandate.runtime.config import Config
from mandate.runtime.server import build_server
from mandate.v1 import directory_pb2, events_pb2, membership_pb2

from tests.conftest import POLICY_DIR, TOKEN
from tests.support import reason_of

BILLING = "billing-token-not-secret"
REPORTS = "reports-token-not-secret"
LATER = "later-token-not-secret-either"


@pytest.fixture
def engine() -> str:
    """Transport and policy work, not the store's: SQLite only (the engines run every store test)."""
    return "sqlite"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


CALLERS = f"""
[callers.billing]
token_sha256 = "{digest(BILLING)}"

[callers.reports]
token_sha256 = "{digest(REPORTS)}"
read_only = true
"""


@contextmanager
def running(app, callers_file, **settings):
    settings.setdefault("api_tokens", [TOKEN])
    config = Config(listen="127.0.0.1:0", database_url=app.store.url, policy_dir=POLICY_DIR,
                    callers_file=callers_file, **settings)
    server, port = build_server(app, config)
    server.start()
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


@pytest.fixture
def served(app, tmp_path):
    path = tmp_path / "callers.toml"
    path.write_text(CALLERS)
    with running(app, path) as (server, address):
        yield server, address, path


def events(client) -> list:
    return list(client.events.ListEvents(events_pb2.ListEventsRequest(page_size=1000)).events)


def test_every_event_names_the_calling_service_and_the_acting_user(served, world):
    _, address, _ = served
    owner = world.user()
    with MandateClient(address, BILLING) as billing, MandateClient(address, TOKEN) as env:
        made = billing.directory.CreateOrganization(directory_pb2.CreateOrganizationRequest(
            actor_id=owner, name="Billed", currency="EUR"))
        env.membership.InviteMember(membership_pb2.InviteMemberRequest(
            actor_id=owner, organization_id=made.id, email="new@example.com", role="colleague"))
        log = events(env)
    by_type = {e.type: e for e in log}
    created = [e for e in log if e.attributes.get("organization_id") == made.id]
    assert created[0].caller == "billing" and created[0].actor_id == owner
    assert by_type[EventType.MEMBER_INVITED].caller == "env-0" and by_type[EventType.MEMBER_INVITED].actor_id == owner


def test_a_read_only_caller_reads_and_checks_but_changes_nothing(served, world):
    _, address, _ = served
    organization = world.organization()
    owner, project = world.owner_of(organization), world.project(organization)
    world.app.memberships.invite_member(owner, organization, "secret-person@example.com", "colleague")
    before = world.app.store.current_revision()
    with MandateClient(address, REPORTS, retries=0) as reports:
        assert reports.check(owner, "read", f"Project:{project}").allowed
        assert reports.membership.ListMembers(membership_pb2.ListMembersRequest(
            actor_id=owner, organization_id=organization)).members
        for call in (lambda: reports.directory.RegisterUser(directory_pb2.RegisterUserRequest(
                         email="someone@example.com", display_name="Someone")),
                     lambda: reports.membership.InviteMember(membership_pb2.InviteMemberRequest(
                         actor_id=owner, organization_id=organization, email="x@example.com", role="colleague"))):
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert reason_of(refused.value) == "READ_ONLY_CALLER"
        seen = events(reports)
    assert world.app.store.current_revision() == before  # a refused mutation changes nothing
    invited = [e for e in seen if e.type == EventType.MEMBER_INVITED]
    assert invited and all("@" not in value for e in seen for value in e.attributes.values())
    assert "email" not in invited[0].attributes and invited[0].attributes["organization_id"] == organization


def test_unknown_tokens_are_refused_and_sighup_reloads_the_callers_file(served):
    server, address, path = served
    with MandateClient(address, LATER, retries=0) as later:
        with pytest.raises(grpc.RpcError) as refused:
            later.check("u1", "read", "Project:p1")
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        path.write_text(CALLERS + f'\n[callers.later]\ntoken_sha256 = "{digest(LATER)}"\n')
        server.reload()
        assert not later.check("u1", "read", "Project:p1").allowed
        path.write_text("this is not TOML [")  # refused: the callers known before stay
        server.reload()
        assert not later.check("u1", "read", "Project:p1").allowed
        path.write_text(CALLERS)
        server.reload()
        with pytest.raises(grpc.RpcError) as refused:
            later.check("u1", "read", "Project:p1")
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(("text", "problem"), [
    ('[callers.a]\ntoken_sha256 = "abc"\n', "64 hexadecimal"),
    ("[callers.a]\nread_only = true\n", "needs token_sha256"),
    (f'[callers.a]\ntoken_sha256 = "{"0" * 64}"\nscope = "x"\n', "unknown key"),
    (f'[callers.env-0]\ntoken_sha256 = "{"0" * 64}"\n', "reserved"),
    (f'[callers.a]\ntoken_sha256 = "{"0" * 64}"\n[callers.b]\ntoken_sha256 = "{"0" * 64}"\n', "same token"),
    ('[callers.a]\nclient_cert_subject = "gateway"\n', "RFC 4514"),
    ("[other]\n", "unknown table"),
    (f'[callers.a]\ntoken_sha256 = "{"0" * 64}"\nevent_organizations = []\n', "event_organizations"),
    (f'[callers.a]\ntoken_sha256 = "{"0" * 64}"\nevent_organizations = "org_a"\n', "event_organizations"),
    (f'[callers.a]\ntoken_sha256 = "{"0" * 64}"\norganizations = []\n', "organizations must be"),
    (f'[callers.a]\ntoken_sha256 = "{"0" * 64}"\norganizations = ["org a"]\n', "organizations must be"),
    (f'[callers.a]\ntoken_sha256 = "{"0" * 64}"\norganizations = ["org_a"]\nevent_organizations = ["org_b"]\n',
     "within organizations"),
    ("[callers.a\n", "not valid TOML"),
])
def test_a_callers_file_that_cannot_be_used_is_refused_with_its_reason(tmp_path, text, problem):
    path = tmp_path / "callers.toml"
    path.write_text(text)
    with pytest.raises(CallersError, match=problem):
        read_callers_file(path)


def test_subjects_compare_as_rfc_4514_names():
    assert subject_rdns("CN=gateway, o=Acme") == subject_rdns("CN=gateway,O=Acme")
    assert subject_rdns("CN=gateway,O=Acme") != subject_rdns("O=Acme,CN=gateway")
    assert subject_rdns(r"CN=a\,b,O=Acme") == ("CN=a\\,b", "O=Acme")


SCOPED = "scoped-caller-token-not-secret"


def test_a_caller_limited_to_some_organizations_sees_only_their_events(app, world, tmp_path):
    """Issue 9 hole "every tenant's events go to any caller": the callers file limits a caller to
    the events it needs (event_organizations), in ListEvents and Watch."""
    mine, theirs = world.organization(name="Mine"), world.organization(name="Theirs")
    world.member(mine)
    world.member(theirs)
    path = tmp_path / "callers.toml"
    path.write_text(CALLERS + f'\n[callers.scoped]\ntoken_sha256 = "{digest(SCOPED)}"\n'
                              f'event_organizations = ["{mine}"]\n')
    with running(app, path) as (_, address), MandateClient(address, SCOPED, retries=0) as scoped:
        seen = events(scoped)
        assert seen and all(mine in (e.attributes.get("organization_id"), e.attributes.get("partner_id"),
                                     e.attributes.get("client_id"), e.attributes.get("other_organization_id"))
                            for e in seen)
        assert list(scoped.events.ListEvents(events_pb2.ListEventsRequest(
            organization_id=mine, page_size=1000)).events) == seen
        with pytest.raises(grpc.RpcError) as refused:
            scoped.events.ListEvents(events_pb2.ListEventsRequest(organization_id=theirs))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        stream = scoped.events.Watch(events_pb2.WatchRequest(), timeout=10)
        first = next(iter(stream))
        assert first == seen[0]
        stream.cancel()
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(scoped.events.Watch(events_pb2.WatchRequest(organization_id=theirs), timeout=10)))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with MandateClient(address, TOKEN) as everyone:  # callers without the key see every organization's
            assert len(events(everyone)) > len(seen)


BOUND = "bound-to-a-certificate-token"


def test_every_bad_credential_gets_one_message(app, tmp_path):
    """issue 18 item 10: a valid token bound to a client certificate, presented without it, is
    refused exactly as a random token, a malformed header or no credential at all."""
    path = tmp_path / "callers.toml"
    path.write_text(CALLERS + f'\n[callers.gateway]\ntoken_sha256 = "{digest(BOUND)}"\n'
                              'client_cert_subject = "CN=gateway,O=Acme"\n')
    with running(app, path) as (_, address):
        answers = set()
        for metadata in ((("authorization", f"Bearer {BOUND}"),), (("authorization", "Bearer not-a-known-token"),),
                         (("authorization", f"Basic {BOUND}"),), (("authorization", "Bearer "),), ()):
            with grpc.insecure_channel(address) as channel:
                check = channel.unary_unary("/mandate.v1.AuthorizationService/Check")
                with pytest.raises(grpc.RpcError) as refused:
                    check(b"", metadata=metadata, timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert reason_of(refused.value) == "UNAUTHENTICATED"
            answers.add(refused.value.details())
        assert len(answers) == 1, answers


def test_with_a_callers_file_only_its_callers_get_in_and_no_token_is_written(app, tmp_path):
    """issue 18 item 11: with a callers file and no MANDATE_API_TOKENS, the server makes up no
    token: the token file is neither written nor read (one left by an earlier run is refused)."""
    path = tmp_path / "callers.toml"
    path.write_text(CALLERS)
    fresh, earlier = tmp_path / "fresh" / "api-token", tmp_path / "earlier" / "api-token"
    earlier.parent.mkdir()
    earlier.write_text("left-by-an-earlier-run-token\n")
    for token_file in (fresh, earlier):
        with running(app, path, api_tokens=[], token_file=token_file) as (_, address):
            with MandateClient(address, BILLING) as billing:
                assert not billing.check("u1", "read", "Project:p1").allowed
            with MandateClient(address, "left-by-an-earlier-run-token", retries=0) as env:
                with pytest.raises(grpc.RpcError) as refused:
                    env.check("u1", "read", "Project:p1")
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not fresh.exists() and not fresh.parent.exists()
    assert Config(callers_file=path, token_file=fresh).resolved_tokens() == []
