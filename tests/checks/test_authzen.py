"""The AuthZEN Authorization API 1.0 over HTTP (issue 23, item 1), against a real server on every
engine: the specification's own examples adapted to Mandate's types (its `document` and `account`
become Projects, its users ours), answers equal to gRPC's for every user, action and resource of a
small world, the context's revisions, and the transport (errors, callers, TLS, limits, metrics).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import signal
import ssl
import subprocess
import sys
from contextlib import contextmanager

import pytest
from mandate.client import MandateClient
from mandate.runtime.config import Config
from mandate.runtime.server import build_server
from mandate.v1 import authorization_pb2, common_pb2
from prometheus_client import REGISTRY

from tests.checks.test_list_consistency import list_actors, list_resources
from tests.conftest import POLICY_DIR, TOKEN
from tests.runtime.test_operations import pki  # noqa: F401 - the certificates, made at test time
from tests.support import free_port, wait_until

EVALUATION, EVALUATIONS = "/access/v1/evaluation", "/access/v1/evaluations"
SUBJECTS, RESOURCES, ACTIONS = "/access/v1/search/subject", "/access/v1/search/resource", "/access/v1/search/action"


class AuthZenClient:
    """One keep-alive HTTP connection; answers (status, headers, JSON body)."""

    def __init__(self, port: int, token: str | None = TOKEN, context: ssl.SSLContext | None = None):
        self.connection = (http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
                           if context else http.client.HTTPConnection("127.0.0.1", port, timeout=10))
        self.token = token

    def post(self, path: str, body=None, *, raw: bytes | None = None, headers: dict | None = None):
        sent = {"Content-Type": "application/json", **(headers or {})}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        self.connection.request("POST", path, body=raw if raw is not None else json.dumps(body), headers=sent)
        return self._answer()

    def get(self, path: str):
        self.connection.request("GET", path)
        return self._answer()

    def _answer(self):
        reply = self.connection.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, json.loads(reply.read() or b"null")

    def ok(self, path: str, body):
        status, _, answer = self.post(path, body)
        assert status == 200, answer
        return answer

    def close(self):
        self.connection.close()


@contextmanager
def serving(app, **settings):
    settings.setdefault("api_tokens", [TOKEN])
    config = Config(listen="127.0.0.1:0", database_url=app.store.url, policy_dir=POLICY_DIR,
                    authzen_listen="127.0.0.1:0", **settings)
    server, port = build_server(app, config)
    server.start()
    try:
        yield server, port
    finally:
        server.stop(grace=None)


@pytest.fixture
def served(app):
    with serving(app) as (server, port):
        yield server, port


@pytest.fixture
def authzen(served):
    client = AuthZenClient(served[0].authzen_port)
    yield client
    client.close()


def user(id_: str | None = None) -> dict:
    return {"type": "user", "id": id_} if id_ is not None else {"type": "user"}


def project(id_: str | None = None) -> dict:
    return {"type": "project", "id": id_} if id_ is not None else {"type": "project"}


@pytest.fixture
def office(world):
    """Alice owns Acme with projects 1, 2 and 3; Bob is a colleague; Carol a client member, who
    reads but does not edit; Dave has nothing to do with Acme."""
    alice = world.user("alice")
    acme = world.organization(alice, name="Acme")
    people = {"alice": alice, "bob": world.member(acme, "colleague"), "carol": world.member(acme, "client"),
              "dave": world.user("dave")}
    for number in (1, 2, 3):
        world.project(acme, f"doc-{number}")
    return people, acme


# -- the specification's examples ---------------------------------------------------------------

def test_evaluation_as_in_the_specification_example(authzen, office):
    """issue 23 item 1: the Access Evaluation example (properties and context attributes accepted
    and ignored); the answer carries the revision and the policy version."""
    people, _ = office
    answer = authzen.ok(EVALUATION, {
        "subject": {"type": "user", "id": people["carol"], "properties": {"department": "Sales"}},
        "resource": {"type": "project", "id": "doc-1", "properties": {"library_record": {"title": "AuthZEN"}}},
        "action": {"name": "read", "properties": {"method": "GET"}},
        "context": {"time": "1985-10-26T01:22-07:00"}})
    assert answer["decision"] is True
    assert answer["context"]["revision"].isdigit() and answer["context"]["policy_version"]
    denied = authzen.ok(EVALUATION, {"subject": user(people["carol"]), "resource": project("doc-1"),
                                     "action": {"name": "edit"}})
    assert denied["decision"] is False


def test_evaluations_with_defaults_as_in_the_specification_examples(authzen, office):
    """issue 23 item 1: three requests without defaults; with a default subject and context; with
    a default action overridden by the third item. Answers come in the items' order."""
    people, _ = office
    carol = people["carol"]
    full = {"evaluations": [{"subject": user(carol), "action": {"name": "read"}, "resource": project(f"doc-{n}"),
                             "context": {"time": "2024-05-31T15:22-07:00"}} for n in (1, 2, 3)]}
    assert [e["decision"] for e in authzen.ok(EVALUATIONS, full)["evaluations"]] == [True, True, True]
    shared = {"subject": user(carol), "context": {"time": "2024-05-31T15:22-07:00"},
              "evaluations": [{"action": {"name": "read"}, "resource": project(f"doc-{n}")} for n in (1, 2, 3)]}
    assert [e["decision"] for e in authzen.ok(EVALUATIONS, shared)["evaluations"]] == [True, True, True]
    overridden = {"subject": user(carol), "context": {"time": "2024-05-31T15:22-07:00"}, "action": {"name": "read"},
                  "evaluations": [{"resource": project("doc-1")}, {"resource": project("doc-2")},
                                  {"action": {"name": "edit"}, "resource": project("doc-3")}]}
    assert [e["decision"] for e in authzen.ok(EVALUATIONS, overridden)["evaluations"]] == [True, True, False]
    # Without items, an evaluations request is one evaluation.
    single = authzen.ok(EVALUATIONS, {"subject": user(carol), "action": {"name": "read"},
                                      "resource": project("doc-1"), "evaluations": []})
    assert single["decision"] is True


def test_evaluations_semantics_as_in_the_specification_example(authzen, office, world):
    """issue 23 item 1: `read` on documents 1, 2, 3 where 2 is denied, under execute_all,
    deny_on_first_deny and permit_on_first_permit."""
    people, _ = office
    other = world.organization(world.user("erin"), name="Elsewhere")
    world.project(other, "doc-x")  # Carol cannot read it: the spec example's document 2

    def ask(semantic: str) -> list[dict]:
        return authzen.ok(EVALUATIONS, {
            "subject": user(people["carol"]), "action": {"name": "read"},
            "options": {"evaluations_semantic": semantic},
            "evaluations": [{"resource": project("doc-1")}, {"resource": project("doc-x")},
                            {"resource": project("doc-3")}]})["evaluations"]

    assert [e["decision"] for e in ask("execute_all")] == [True, False, True]
    first_deny = ask("deny_on_first_deny")
    assert [e["decision"] for e in first_deny] == [True, False]
    assert first_deny[1]["context"]["reason"] == "deny_on_first_deny"
    assert [e["decision"] for e in ask("permit_on_first_permit")] == [True]
    status, _, error = authzen.post(EVALUATIONS, {"subject": user(people["carol"]), "action": {"name": "read"},
                                                  "options": {"evaluations_semantic": "majority"},
                                                  "evaluations": [{"resource": project("doc-1")}]})
    assert (status, error["field"]) == (400, "options.evaluations_semantic")


def test_an_item_that_cannot_be_evaluated_is_a_deny_not_a_failed_batch(authzen, office):
    """issue 23 item 1 (the certification scenario): under execute_all, an item missing an entity
    is `decision: false` with the error in its context; the other items are answered."""
    people, _ = office
    answer = authzen.ok(EVALUATIONS, {"subject": user(people["bob"]), "evaluations": [
        {"action": {"name": "edit"}, "resource": project("doc-1")},
        {"action": {"name": "edit"}},
        {"resource": project("doc-2")},
        {"action": {"name": "Edit!"}, "resource": project("doc-2")},
        {"action": {"name": "edit"}, "resource": project("doc-2")}]})["evaluations"]
    assert [e["decision"] for e in answer] == [True, False, False, False, True]
    assert answer[1]["context"]["error"]["status"] == 400
    assert answer[1]["context"]["error"]["message"].startswith("evaluations[1].resource")
    assert answer[2]["context"]["error"]["message"].startswith("evaluations[2].action")
    assert answer[3]["context"]["error"]["message"].startswith("evaluations[3].action.name")


def test_searches_page_as_in_the_specification_example(authzen, office):
    """issue 23 item 1: subject, resource and action searches, paged two at a time with
    page.token and page.limit; next_token is "" on the last page."""
    people, _ = office

    def every_page(path: str, body: dict, key: str) -> list[str]:
        found, token, pages = [], None, 0
        while True:
            asked = {**body, "page": {"limit": 2, **({"token": token} if token else {})}}
            answer = authzen.ok(path, asked)
            assert len(answer["results"]) <= 2 and answer["page"]["count"] == len(answer["results"])
            found += [r[key] for r in answer["results"]]
            token, pages = answer["page"]["next_token"], pages + 1
            if token == "":
                return found
            assert pages < 10

    readers = every_page(SUBJECTS, {"subject": {"type": "user"}, "action": {"name": "read"},
                                    "resource": project("doc-1")}, "id")
    assert sorted(readers) == sorted(people[n] for n in ("alice", "bob", "carol"))
    assert every_page(RESOURCES, {"subject": user(people["carol"]), "action": {"name": "read"},
                                  "resource": {"type": "project"}}, "id") == ["doc-1", "doc-2", "doc-3"]
    results = authzen.ok(RESOURCES, {"subject": user(people["carol"]), "action": {"name": "read"},
                                     "resource": {"type": "Project"}})["results"]
    assert results[0] == {"type": "Project", "id": "doc-1"}  # the type as the caller spelled it
    assert every_page(ACTIONS, {"subject": user(people["bob"]), "resource": project("doc-1")}, "name") == \
        ["edit", "publish", "read"]
    assert every_page(RESOURCES, {"subject": user(people["dave"]), "action": {"name": "read"},
                                  "resource": {"type": "project"}}, "id") == []
    # A token is good only for the request it was given for.
    asked = {"subject": user(people["carol"]), "action": {"name": "read"}, "resource": {"type": "project"},
             "page": {"limit": 2}}
    token = authzen.ok(RESOURCES, asked)["page"]["next_token"]
    for changed in ({**asked, "action": {"name": "edit"}}, {**asked, "page": {"limit": 1}}):
        status, _, error = authzen.post(RESOURCES, {**changed, "page": {**changed["page"], "token": token}})
        assert (status, error["field"]) == (400, "page.token"), error


def test_types_are_matched_without_regard_to_case_and_unknown_ones_find_nothing(authzen, office):
    """issue 23 item 1: `USER` is User; a type the policy does not know is a deny, and a search
    over it answers results []."""
    people, acme = office
    assert authzen.ok(EVALUATION, {"subject": {"type": "USER", "id": people["bob"]}, "action": {"name": "view"},
                                   "resource": {"type": "organization", "id": acme}})["decision"] is True
    assert authzen.ok(EVALUATION, {"subject": user(people["bob"]), "action": {"name": "read"},
                                   "resource": {"type": "todo", "id": "doc-1"}})["decision"] is False
    assert authzen.ok(EVALUATION, {"subject": {"type": "robot", "id": people["bob"]}, "action": {"name": "read"},
                                   "resource": project("doc-1")})["decision"] is False
    for path, body in ((SUBJECTS, {"subject": {"type": "robot"}, "action": {"name": "read"},
                                   "resource": project("doc-1")}),
                       (SUBJECTS, {"subject": {"type": "user"}, "action": {"name": "read"},
                                   "resource": {"type": "todo", "id": "1"}}),
                       (RESOURCES, {"subject": user(people["bob"]), "action": {"name": "read"},
                                    "resource": {"type": "todo"}}),
                       (RESOURCES, {"subject": user(people["bob"]), "action": {"name": "invite"},
                                    "resource": {"type": "member"}}),  # a policy type no list covers
                       (ACTIONS, {"subject": user(people["bob"]), "resource": {"type": "todo", "id": "1"}})):
        answer = authzen.ok(path, body)
        assert answer["results"] == [] and answer["page"]["next_token"] == ""


def test_the_metadata_document_lists_every_endpoint(authzen):
    """issue 23 item 1: GET /.well-known/authzen-configuration (open to every caller)."""
    status, headers, document = AuthZenClient(authzen.connection.port, token=None).get(
        "/.well-known/authzen-configuration")
    base = f"http://127.0.0.1:{authzen.connection.port}"
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert document == {"policy_decision_point": base,
                        "access_evaluation_endpoint": base + EVALUATION,
                        "access_evaluations_endpoint": base + EVALUATIONS,
                        "search_subject_endpoint": base + SUBJECTS,
                        "search_resource_endpoint": base + RESOURCES,
                        "search_action_endpoint": base + ACTIONS}


# -- the same answers as gRPC -------------------------------------------------------------------

@pytest.fixture
def small_world(world):
    """Every kind of path to a project, in two organizations (R2, R6, R7, R12, R15, R16)."""
    app = world.app
    agency_owner, shop_owner = world.user("agency_owner"), world.user("shop_owner")
    agency = world.organization(agency_owner, name="Agency")
    shop = world.organization(shop_owner, name="Shop")
    people = {"agency_owner": agency_owner, "shop_owner": shop_owner,
              "rep": world.member(agency, "legal_representative"), "colleague": world.member(agency, "colleague"),
              "approved": world.member(agency, "colleague", partner_employee=True),
              "unapproved": world.member(agency, "colleague", partner_employee=True),
              "client": world.member(shop, "client"), "paused": world.member(shop, "colleague"),
              "outsider": world.user("outsider")}
    app.memberships.pause_member(shop_owner, shop, people["paused"])
    world.connect(agency, shop, scopes=("read", "edit", "publish"), granted=("read", "edit"))
    world.assign(agency, shop, people["approved"])
    world.assign(agency, shop, people["unapproved"], approve=False)
    resources = [("Project", world.project(agency, "agency-site")), ("Project", world.project(shop, "shop-site")),
                 ("Project", "no-such-project"), ("Organization", agency), ("Organization", shop)]
    return people, resources


def test_authzen_answers_equal_grpc_for_every_user_action_and_resource(app, served, small_world):
    """issue 23 item 1: every evaluation (one by one and as one batch), every resource, subject
    and action search equals gRPC's Check, ListResources, ListActors and ListActions."""
    server, port = served
    people, resources = small_world
    actions = [*app.authorizer.policy.permissions["Project"], "view", "list_members", "invite_member", "fly"]
    asked = [(u, a, t, i) for u in people.values() for a in actions for t, i in resources]
    authzen = AuthZenClient(server.authzen_port)
    with MandateClient(f"127.0.0.1:{port}", TOKEN) as client:
        grpc_answers = [r.allowed for r in client.authorization.BatchCheck(authorization_pb2.BatchCheckRequest(
            checks=[authorization_pb2.CheckRequest(actor=common_pb2.ObjectRef(type="User", id=u), action=a,
                                                   resource=common_pb2.ObjectRef(type=t, id=i))
                    for u, a, t, i in asked])).results]
        assert any(grpc_answers) and not all(grpc_answers)
        one_by_one = [authzen.ok(EVALUATION, {"subject": user(u), "action": {"name": a},
                                              "resource": {"type": t.lower(), "id": i}})["decision"]
                      for u, a, t, i in asked]
        assert one_by_one == grpc_answers
        batch = authzen.ok(EVALUATIONS, {"evaluations": [
            {"subject": user(u), "action": {"name": a}, "resource": {"type": t, "id": i}} for u, a, t, i in asked]})
        assert [e["decision"] for e in batch["evaluations"]] == grpc_answers
        for u in people.values():
            for a in actions:
                for kind in ("Project", "Organization"):
                    found = [r["id"] for r in authzen.ok(RESOURCES, {"subject": user(u), "action": {"name": a},
                                                                     "resource": {"type": kind}})["results"]]
                    assert found == list_resources(client, u, a, kind), (u, a, kind)
            for kind, ident in resources:
                reply = client.authorization.ListActions(authorization_pb2.ListActionsRequest(
                    actor=common_pb2.ObjectRef(type="User", id=u), resource=common_pb2.ObjectRef(type=kind, id=ident)))
                found = [r["name"] for r in authzen.ok(ACTIONS, {"subject": user(u),
                                                                 "resource": {"type": kind, "id": ident}})["results"]]
                assert found == list(reply.actions)
        for a in actions:
            for kind, ident in resources:
                found = [r["id"] for r in authzen.ok(SUBJECTS, {"subject": {"type": "user"}, "action": {"name": a},
                                                                "resource": {"type": kind, "id": ident}})["results"]]
                assert found == list_actors(client, a, kind, ident), (a, kind, ident)
    authzen.close()


# -- the context: revisions and explanations ---------------------------------------------------

def test_context_revisions_and_explain(app, authzen, office):
    """issue 23 item 1: context.at_least_revision waits for a write's revision, at_revision and
    as_of answer from the history (R22: the past as it was), explain adds the reasons; bad values
    are a 400 naming the context field."""
    people, acme = office
    bob = people["bob"]
    ask = {"subject": user(bob), "action": {"name": "edit"}, "resource": project("doc-1")}
    before = authzen.ok(EVALUATION, ask)["context"]["revision"]
    app.memberships.pause_member(people["alice"], acme, bob)
    now = str(app.store.current_revision())
    assert authzen.ok(EVALUATION, {**ask, "context": {"at_least_revision": now}})["decision"] is False
    assert authzen.ok(EVALUATION, {**ask, "context": {"at_least_revision": int(now)}})["context"]["revision"] == now
    past = authzen.ok(EVALUATION, {**ask, "context": {"at_revision": before}})
    assert (past["decision"], past["context"]["revision"]) == (True, before)
    assert authzen.ok(SUBJECTS, {"subject": {"type": "user"}, "action": {"name": "edit"},
                                 "resource": project("doc-1"), "context": {"at_revision": before}})["results"] \
        == sorted([{"type": "user", "id": people["alice"]}, {"type": "user", "id": bob}], key=lambda r: r["id"])
    explained = authzen.ok(EVALUATION, {**ask, "context": {"explain": True}})
    assert explained["decision"] is False and any("paused" in r for r in explained["context"]["reasons"])
    for context, field in (({"at_least_revision": str(int(now) + 50)}, "context.at_least_revision"),
                           ({"at_revision": "soon"}, "context.at_revision"),
                           ({"as_of": "yesterday"}, "context.as_of"),
                           ({"at_revision": before, "as_of": "2026-01-01T00:00:00Z"}, "context.as_of"),
                           ({"explain": "yes"}, "context.explain")):
        status, _, error = authzen.post(EVALUATION, {**ask, "context": context})
        assert (status, error["field"]) == (400, field), error


# -- the transport -----------------------------------------------------------------------------

def test_errors_name_the_field_and_follow_the_specification(authzen, office):
    """issue 23 item 1: a missing entity is a 400 naming it; a body that is not JSON is a 400, a
    Content-Type that is not JSON a 415; no or a wrong token is a 401; an unknown path a 404;
    X-Request-ID is echoed on answers and errors alike."""
    people, _ = office
    for body, field in (({"action": {"name": "read"}, "resource": project("doc-1")}, "subject"),
                        ({"subject": {"type": "user"}, "action": {"name": "read"}, "resource": project("doc-1")},
                         "subject.id"),
                        ({"subject": user(people["bob"]), "action": {}, "resource": project("doc-1")},
                         "action.name"),
                        ({"subject": user(people["bob"]), "action": {"name": "read"}, "resource": "doc-1"},
                         "resource"),
                        ({"subject": user("has space"), "action": {"name": "read"}, "resource": project("doc-1")},
                         "subject.id")):
        status, headers, error = authzen.post(EVALUATION, body, headers={"X-Request-ID": "req-1"})
        assert (status, error["field"], error["reason"]) == (400, field, "INVALID_ARGUMENT"), error
        assert headers["x-request-id"] == "req-1"
    status, _, error = authzen.post(EVALUATION, raw=b'{"subject": {"type": "user", "id": "\\ud800"}, '
                                    b'"action": {"name": "read"}, "resource": {"type": "project", "id": "p"}}')
    assert (status, error["field"]) == (400, "subject.id"), error
    status, _, error = authzen.post(EVALUATION, raw=b"{not json")
    assert (status, error["field"]) == (400, "request")
    status, _, error = authzen.post(EVALUATION, raw=b"[1, 2]")
    assert status == 400
    status, _, _ = authzen.post(EVALUATION, raw=b"{}", headers={"Content-Type": "text/plain"})
    assert status == 415
    status, _, error = authzen.post(SUBJECTS, {"subject": {"type": "user"}, "action": {"name": "read"},
                                              "resource": project("doc-1"), "page": {"token": "!!"}})
    assert (status, error["field"]) == (400, "page.token")
    status, headers, error = AuthZenClient(authzen.connection.port, token=None).post(EVALUATION, {})
    assert (status, error["reason"]) == (401, "UNAUTHENTICATED") and headers["www-authenticate"].startswith("Bearer")
    status, _, _ = AuthZenClient(authzen.connection.port, token="not-the-token-at-all").post(EVALUATION, {})
    assert status == 401
    status, _, error = authzen.post("/access/v1/nothing", {})
    assert status == 404 and error["status"] == 404
    status, headers, answer = authzen.post(EVALUATION, {"subject": user(people["bob"]), "action": {"name": "read"},
                                                        "resource": project("doc-1")},
                                           headers={"X-Request-ID": "bfe9eb29-ab87-4ca3-be83-a1d5d8305716"})
    assert status == 200 and headers["x-request-id"] == "bfe9eb29-ab87-4ca3-be83-a1d5d8305716"


def test_limits_starting_and_too_large_bodies(app, served, authzen, office):
    """issue 23 item 1: past the caller's requests in flight, 429 with Retry-After; before the
    application is ready, 503; past --max-message-bytes, 413. All with a JSON body."""
    server, _ = served
    people, _ = office
    ask = {"subject": user(people["bob"]), "action": {"name": "read"}, "resource": project("doc-1")}
    mandate = server.server
    limits = mandate.plumbing.requests
    limits.per_caller = 1
    server._call(_enter(limits, "env-0"))  # one request of env-0 is in flight
    try:
        status, headers, error = authzen.post(EVALUATION, ask)
        assert (status, error["reason"], headers["retry-after"]) == (429, "TOO_MANY_REQUESTS", "1")
    finally:
        server._call(_leave(limits, "env-0"))
    assert authzen.post(EVALUATION, ask)[0] == 200
    ready, mandate.authzen.authzen = mandate.authzen.authzen, None
    try:
        status, _, error = authzen.post(EVALUATION, ask)
        assert (status, error["reason"]) == (503, "UNAVAILABLE")
    finally:
        mandate.authzen.authzen = ready
    with serving(app, max_message_bytes=2048) as (small, _):
        status, _, error = AuthZenClient(small.authzen_port).post(EVALUATIONS, raw=b'{"evaluations": ['
                                                                  + b" " * 4096 + b"]}")
        assert status == 413 and error["status"] == 413


async def _enter(limits, name):
    limits.enter(name)


async def _leave(limits, name):
    limits.leave(name)


def test_calls_share_the_logs_and_metrics_of_grpc(authzen, office, caplog):
    """issue 23 item 1: each call ends with the request line (method, caller, request id) and
    counts in grpc_server_handled_total and mandate_decisions_total."""
    people, _ = office

    def handled(code: str) -> float:
        return REGISTRY.get_sample_value("grpc_server_handled_total", {
            "grpc_type": "http", "grpc_service": "authzen", "grpc_method": "evaluation", "grpc_code": code}) or 0

    decisions = REGISTRY.get_sample_value("mandate_decisions_total", {
        "resource_type": "Project", "action": "read", "allowed": "true"}) or 0
    ok, refused = handled("OK"), handled("INVALID_ARGUMENT")
    with caplog.at_level(logging.DEBUG, logger="mandate.request"):
        authzen.post(EVALUATION, {"subject": user(people["bob"]), "action": {"name": "read"},
                                  "resource": project("doc-1")}, headers={"X-Request-ID": "line-1"})
        authzen.post(EVALUATION, {"subject": user(people["bob"])}, headers={"X-Request-ID": "line-2"})
    assert (handled("OK"), handled("INVALID_ARGUMENT")) == (ok + 1, refused + 1)
    assert REGISTRY.get_sample_value("mandate_decisions_total", {
        "resource_type": "Project", "action": "read", "allowed": "true"}) == decisions + 1
    lines = [r for r in caplog.records if r.name == "mandate.request" and r.fields["method"] == "/authzen/evaluation"]
    assert [(r.fields["caller"], r.fields["code"], r.fields["request_id"]) for r in lines] == \
        [("env-0", "OK", "line-1"), ("env-0", "INVALID_ARGUMENT", "line-2")]
    assert lines[0].fields["actor"] == f"User:{people['bob']}" and lines[0].levelno == logging.DEBUG


def test_https_and_callers_known_by_their_client_certificate(app, pki, tmp_path, caplog):  # noqa: F811
    """issue 23 item 1: with --tls-cert and --tls-client-ca, AuthZEN is HTTPS with the same
    certificates, and a caller named by its certificate subject (CN=gateway,O=Acme, as gRPC
    reads it) needs no token; a client without a certificate is refused at the handshake."""
    callers = tmp_path / "callers.toml"
    callers.write_text('[callers.gateway]\nclient_cert_subject = "CN=gateway,O=Acme"\n')
    with serving(app, tls_cert=pki["server"], tls_key=pki["server-key"], tls_client_ca=pki["ca"],
                 callers_file=callers) as (server, _):
        context = ssl.create_default_context(cafile=str(pki["ca"]))
        context.load_cert_chain(pki["client"], pki["client-key"])
        by_certificate = AuthZenClient(server.authzen_port, token=None, context=context)
        with caplog.at_level(logging.DEBUG, logger="mandate.request"):
            status, _, answer = by_certificate.post(EVALUATION, {"subject": user("u1"), "action": {"name": "read"},
                                                                 "resource": project("p1")})
        assert (status, answer["decision"]) == (200, False)
        assert [r.fields["caller"] for r in caplog.records if r.name == "mandate.request"
                and r.fields["method"] == "/authzen/evaluation"] == ["gateway"]
        document = by_certificate.get("/.well-known/authzen-configuration")[2]
        assert document["policy_decision_point"] == f"https://localhost:{server.authzen_port}"
        by_certificate.close()
        without = ssl.create_default_context(cafile=str(pki["ca"]))
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            AuthZenClient(server.authzen_port, context=without).post(EVALUATION, {})


def test_every_process_of_a_fleet_serves_authzen_on_the_same_port(tmp_path):
    """issue 23 item 1: under --processes, each process listens on the AuthZEN port too."""
    listen, authzen = f"127.0.0.1:{free_port()}", free_port()
    env = {**os.environ, "MANDATE_API_TOKENS": TOKEN, "MANDATE_DATABASE_URL": f"sqlite:///{tmp_path}/mandate.db",
           "MANDATE_AUTHZEN_LISTEN": f"127.0.0.1:{authzen}"}
    log_path = tmp_path / "fleet.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "mandate.cli", "serve", "--listen", listen, "--processes",
                                    "2", "--policy-dir", str(POLICY_DIR)], env=env, cwd=tmp_path, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        def serving() -> set[str]:
            return set(re.findall(r"AuthZEN at http://127\.0\.0\.1:\d+/access/v1/ \(pid (\d+)\)", log_path.read_text()))

        assert wait_until(lambda: len(serving()) == 2 or process.poll() is not None, 90), log_path.read_text()
        for _ in range(4):  # fresh connections: the kernel spreads them over the processes
            client = AuthZenClient(authzen)
            assert client.ok(EVALUATION, {"subject": user("u1"), "action": {"name": "read"},
                                          "resource": project("p1")})["decision"] is False
            client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log_path.read_text()


def test_the_authzen_address_follows_the_transport_rules():
    """issue 23 item 1: MANDATE_AUTHZEN_LISTEN, off by default; plaintext only on loopback."""
    assert Config.from_env({}).authzen_listen == ""
    assert Config.from_env({"MANDATE_AUTHZEN_LISTEN": "127.0.0.1:8080"}).authzen_listen == "127.0.0.1:8080"
    with pytest.raises(ValueError, match="--insecure"):
        Config(authzen_listen="0.0.0.0:8080").check_transport()
    Config(authzen_listen="0.0.0.0:8080", insecure=True).check_transport()
    with pytest.raises(ValueError, match="host:port"):
        Config(authzen_listen="8080", insecure=True).check_transport()


SCOPED = "scoped-caller-token-not-secret"


def test_a_caller_limited_to_some_organizations_asks_only_about_them(app, world, office, tmp_path):
    """issue 23 item 1: the caller scope of the callers file (`organizations`) holds for AuthZEN as
    for gRPC: another organization's resource is a 403 OUTSIDE_CALLER_SCOPE, a resource search
    finds only the caller's organizations' resources."""
    import hashlib

    people, acme = office
    other = world.organization(world.user("erin"), name="Elsewhere")
    world.project(other, "elsewhere-1")
    world.member(other, "colleague", people["bob"])
    callers = tmp_path / "callers.toml"
    callers.write_text(f'[callers.scoped]\ntoken_sha256 = "{hashlib.sha256(SCOPED.encode()).hexdigest()}"\n'
                       f'organizations = ["{acme}"]\n')
    with serving(app, callers_file=callers) as (server, _):
        scoped = AuthZenClient(server.authzen_port, token=SCOPED)
        ask = {"subject": user(people["bob"]), "action": {"name": "read"}}
        assert scoped.ok(EVALUATION, {**ask, "resource": project("doc-1")})["decision"] is True
        for body in ({**ask, "resource": project("elsewhere-1")}, {**ask, "resource": project("no-such-project")},
                     {**ask, "resource": {"type": "todo", "id": "1"}}):
            status, _, error = scoped.post(EVALUATION, body)
            assert (status, error.get("reason")) == (403, "OUTSIDE_CALLER_SCOPE"), (body, error)
        status, _, error = scoped.post(EVALUATIONS, {**ask, "evaluations": [
            {"resource": project("doc-1")}, {"resource": project("elsewhere-1")}]})
        assert (status, error["reason"]) == (403, "OUTSIDE_CALLER_SCOPE")
        found = scoped.ok(RESOURCES, {**ask, "resource": {"type": "project"}})["results"]
        assert [r["id"] for r in found] == ["doc-1", "doc-2", "doc-3"]
        for path, body in ((SUBJECTS, {"subject": {"type": "user"}, "action": {"name": "read"},
                                       "resource": project("elsewhere-1")}),
                           (ACTIONS, {"subject": user(people["bob"]), "resource": project("elsewhere-1")})):
            status, _, error = scoped.post(path, body)
            assert (status, error["reason"]) == (403, "OUTSIDE_CALLER_SCOPE"), (path, error)
        scoped.close()


def test_an_authzen_address_in_use_stops_the_start_naming_the_flag():
    """issue 23 item 1: like --listen, a taken AuthZEN address is refused before serving."""
    import socket

    from mandate.runtime.server import BackgroundServer, CannotListen

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = Config(listen="127.0.0.1:0", policy_dir=POLICY_DIR, api_tokens=[TOKEN],
                        authzen_listen=f"127.0.0.1:{taken.getsockname()[1]}")
        with pytest.raises(CannotListen, match="--authzen-listen"):
            BackgroundServer(None, config)
