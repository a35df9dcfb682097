"""Access history (issue 10), through gRPC on every engine: for a recorded random sequence of
mutations, with a policy change in the middle, the answer at every past revision equals the
answer that was given live at that revision; `as_of` maps a time to its revision; revisions the
history does not hold are refused; retention moves the horizon; upgrades start the history."""

from __future__ import annotations

import random
import shutil

import grpc
import pytest
from mandate import errors
from mandate.client import MandateClient
from mandate.names import EventType
from mandate.runtime.app import App
from mandate.runtime.config import Config
from mandate.runtime.server import build_server
from mandate.v1 import authorization_pb2 as pb
from mandate.v1 import common_pb2

from tests.conftest import POLICY_DIR, TOKEN
from tests.factories import World
from tests.support import SHARED, edit_policy, reason_of

ACTIONS = {"Organization": ("view", "list_members", "invite_member", "remove_member", "add_client", "list_partners",
                            "assign_client", "update_granted_scopes"),
           "Project": ("read", "edit", "publish", "approve", "delete", "move")}


@pytest.fixture
def policy_dir(tmp_path):
    directory = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, directory)
    return directory


@pytest.fixture
def app(database_url, policy_dir):
    application = App(database_url, policy_dir)
    yield application
    application.close()


@pytest.fixture
def client(app, policy_dir):
    config = Config(listen="127.0.0.1:0", database_url=app.store.url, policy_dir=policy_dir, api_tokens=[TOKEN])
    server, port = build_server(app, config)
    server.start()
    with MandateClient(f"127.0.0.1:{port}", TOKEN) as mandate_client:
        yield mandate_client
    server.stop(grace=None)


def ref(kind: str, ident: str) -> common_pb2.ObjectRef:
    return common_pb2.ObjectRef(type=kind, id=ident)


def questions(users, resources):
    return [(user, action, kind, ident) for user in users for kind, ident in resources for action in ACTIONS[kind]]


def ask(client, asked, **when) -> tuple[list[bool], set[str]]:
    reply = client.authorization.BatchCheck(pb.BatchCheckRequest(checks=[
        pb.CheckRequest(actor=ref("User", user), action=action, resource=ref(kind, ident), **when)
        for user, action, kind, ident in asked]))
    return [r.allowed for r in reply.results], {r.revision for r in reply.results} | \
        {"policy:" + r.policy_version for r in reply.results}


def random_step(rng: random.Random, world: World, app: App, orgs, users, projects) -> None:
    """One mutation picked at random among those that change access; refusals are fine."""
    org, other = rng.sample(orgs, 2)
    user = rng.choice(users)
    owner = world.owner_of(org)
    steps = [
        lambda: world.member(org, rng.choice(("colleague", "legal_representative", "client")), user),
        lambda: app.memberships.pause_member(owner, org, user),
        lambda: app.memberships.resume_member(owner, org, user),
        lambda: app.memberships.set_member_role(owner, org, user, rng.choice(("colleague", "client"))),
        lambda: app.memberships.remove_member(owner, org, user),
        lambda: app.memberships.tag_partner_employee(owner, org, user, rng.random() < 0.7),
        lambda: world.connect(org, other, granted=rng.choice((("read",), ("read", "edit"), ()))),
        lambda: app.partners.update_granted_scopes(world.owner_of(other), org, other,
                                                   rng.choice((["read"], ["read", "edit"], []))),
        lambda: app.partners.revoke_partner(world.owner_of(other), org, other),
        lambda: world.assign(org, other, user, approve=rng.random() < 0.6),
        lambda: app.partners.revoke_partner_employee(world.owner_of(other), other, org, user),
        lambda: app.directory.put_resource(owner, "Project", rng.choice(projects), org),
        lambda: app.directory.delete_resource(owner, "Project", rng.choice(projects)),
    ]
    try:
        rng.choice(steps)()
    except errors.DomainError:
        pass


@pytest.mark.parametrize("seed", [1, 2])
def test_the_history_answer_at_every_revision_is_the_answer_given_live(client, app, policy_dir, seed):
    rng = random.Random(seed)
    world = World(app)
    orgs = [world.organization(name=f"Org{n}") for n in range(3)]
    users = [world.user() for _ in range(4)] + [world.owner_of(o) for o in orgs]
    projects = [world.project(org) for org in orgs]
    resources = [("Organization", o) for o in orgs] + [("Project", p) for p in projects]
    asked = questions(users, resources)
    live = {}
    for step in range(40):
        if step == 20:  # the policy changes: nobody deletes projects any more
            edit_policy(policy_dir, '  "delete" if "legal_representative" on "organization";\n', "")
            app.reload_policy()
            # The revision of the reload was then answered under the new policy: at_revision
            # answers with the last policy that served at a revision.
            live[app.store.current_revision()] = ask(client, asked)
        random_step(rng, world, app, orgs, users, projects)
        answers, stamp = ask(client, asked)
        live[app.store.current_revision()] = (answers, stamp)
    assert len(live) >= 8  # changes that were made (refusals and no-ops take no revision)
    for revision, (answers, stamp) in live.items():
        # One decision at a time reads only its own facts from the history (asked first, before
        # the whole index of the revision is built for the batch): the same answers.
        for n in range(revision % 5, len(asked), 23):
            user, action, kind, ident = asked[n]
            alone = client.authorization.Check(pb.CheckRequest(
                actor=ref("User", user), action=action, resource=ref(kind, ident), at_revision=str(revision)))
            assert alone.allowed == answers[n], (revision, asked[n])
        assert ask(client, asked, at_revision=str(revision)) == (answers, stamp), f"revision {revision}"


def test_list_actors_and_resources_at_a_past_revision(client, app):
    world = World(app)
    organization = world.organization()
    project = world.project(organization)
    colleague = world.member(organization)
    before = app.store.current_revision()
    app.memberships.remove_member(world.owner_of(organization), organization, colleague)
    now = client.authorization.ListActors(pb.ListActorsRequest(action="read", resource=ref("Project", project)))
    then = client.authorization.ListActors(pb.ListActorsRequest(action="read", resource=ref("Project", project),
                                                                at_revision=str(before)))
    assert colleague not in now.user_ids and colleague in then.user_ids and then.revision == str(before)
    resources = client.authorization.ListResources(pb.ListResourcesRequest(
        actor=ref("User", colleague), action="read", resource_type="Project", at_revision=str(before)))
    assert list(resources.resource_ids) == [project]
    explained = client.authorization.Explain(pb.CheckRequest(
        actor=ref("User", colleague), action="read", resource=ref("Project", project), at_revision=str(before)))
    assert explained.allowed and explained.revision == str(before)


def test_as_of_answers_at_the_last_revision_committed_by_then(client, app):
    world = World(app)
    organization = world.organization()
    colleague = world.member(organization)
    with app.store.read() as session:
        from mandate.store import models
        from sqlalchemy import select
        joined_at = session.execute(select(models.Event.occurred_at).where(
            models.Event.revision == app.store.current_revision())).scalars().first()
    app.memberships.remove_member(world.owner_of(organization), organization, colleague)
    request = pb.CheckRequest(actor=ref("User", colleague), action="view", resource=ref("Organization", organization))
    assert not client.authorization.Check(request).allowed
    request.as_of = joined_at
    assert client.authorization.Check(request).allowed, joined_at
    request.as_of = "2000-01-01T00:00:00Z"  # before anything was recorded: refused, not guessed
    with pytest.raises(grpc.RpcError) as caught:
        client.authorization.Check(request)
    assert reason_of(caught.value) == "REVISION_UNAVAILABLE"


def test_revisions_the_history_does_not_hold_are_refused(client, app):
    world = World(app)
    organization = world.organization()
    request = pb.CheckRequest(actor=ref("User", world.owner_of(organization)), action="view",
                              resource=ref("Organization", organization))
    request.at_revision = str(app.store.current_revision() + 5)
    with pytest.raises(grpc.RpcError) as caught:
        client.authorization.Check(request)
    assert (caught.value.code(), reason_of(caught.value)) == (grpc.StatusCode.FAILED_PRECONDITION,
                                                              "REVISION_UNAVAILABLE")
    request.ClearField("at_revision")
    request.as_of = "2999-01-01T00:00:00Z"  # the future is not answered (it would change later)
    with pytest.raises(grpc.RpcError) as caught:
        client.authorization.Check(request)
    assert reason_of(caught.value) == "REVISION_UNAVAILABLE" and "as_of" in caught.value.details()
    for fields, named in (({"at_revision": "1", "as_of": "2026-01-01T00:00:00Z"}, "as_of"),
                          ({"at_revision": "1", "at_least_revision": "1"}, "at_least_revision"),
                          ({"as_of": "yesterday"}, "as_of"), ({"at_revision": "-3"}, "at_revision")):
        with pytest.raises(grpc.RpcError) as caught:
            client.authorization.Check(pb.CheckRequest(actor=request.actor, action="read", resource=request.resource,
                                                       **fields))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and named in caught.value.details()


def test_retention_forgets_old_versions_and_refuses_what_it_forgot(client, app):
    import datetime

    from mandate.clock import ManualClock

    world = World(app)
    organization = world.organization()
    colleague = world.member(organization)
    early = app.store.current_revision()
    app.memberships.remove_member(world.owner_of(organization), organization, colleague)
    world.member(world.organization())
    app.lifetimes.clock = ManualClock(datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2))
    app.lifetimes.history_retention = datetime.timedelta(days=1)
    app.history.forget_expired()
    request = pb.CheckRequest(actor=ref("User", colleague), action="view", resource=ref("Organization", organization),
                              at_revision=str(early))
    with pytest.raises(grpc.RpcError) as caught:
        client.authorization.Check(request)
    assert reason_of(caught.value) == "REVISION_UNAVAILABLE" and "retention" in caught.value.details()
    request.at_revision = str(app.store.current_revision())
    assert not client.authorization.Check(request).allowed  # the present is always kept


def test_an_access_review_at_a_past_revision_is_the_review_given_then(client, app):
    world = World(app)
    agency, customer = world.organization(name="Agency"), world.organization(name="Customer")
    employee = world.member(agency, partner_employee=True)
    world.project(customer)
    world.connect(agency, customer, granted=("read", "edit"))
    world.assign(agency, customer, employee)
    request = pb.AccessReviewRequest(organization_id=customer)
    then = client.authorization.AccessReview(request)
    app.partners.revoke_partner(world.owner_of(customer), agency, customer)
    world.member(customer)
    now = client.authorization.AccessReview(request)
    assert employee in {e.user_id for e in then.entries} and employee not in {e.user_id for e in now.entries}
    again = client.authorization.AccessReview(pb.AccessReviewRequest(organization_id=customer,
                                                                     at_revision=then.revision))
    assert list(again.entries) == list(then.entries) and again.revision == then.revision


def test_r6_explain_about_the_past_says_when_the_access_was_to_end_then(client, app):
    world = World(app)
    organization = world.organization()
    owner = world.owner_of(organization)
    helper = world.user("freelancer")
    app.memberships.invite_member(owner, organization, world.email(helper), "colleague", "2099-01-31T17:00:00Z")
    then = app.store.current_revision()
    app.memberships.set_member_role(owner, organization, helper, "colleague", "never")
    request = pb.CheckRequest(actor=ref("User", helper), action="view", resource=ref("Organization", organization))
    now = client.authorization.Explain(request)
    assert now.allowed and not any("ends by itself" in reason for reason in now.reasons)
    request.at_revision = str(then)
    past = client.authorization.Explain(request)
    assert past.allowed and any("ends by itself at 2099-01-31T17:00:00" in reason for reason in past.reasons)


def test_r24_a_policy_the_history_cannot_record_does_not_serve(app, policy_dir, monkeypatch):
    """Every answer names a policy the history can give back: a reload that cannot be recorded is
    refused, and the policy before it keeps serving."""
    from mandate.engine.policy import PolicyError

    before = app.authorizer.policy.version
    path = policy_dir / SHARED
    path.write_text(path.read_text() + "\n# changed\n")

    def unreachable(policy):
        raise errors.DatabaseUnavailable("the database cannot be reached; retry")

    monkeypatch.setattr(app.history, "record_policy", unreachable)
    with pytest.raises(PolicyError, match="cannot record"):
        app.reload_policy()
    assert app.authorizer.policy.version == before


def test_a_policy_starts_serving_with_a_revision_of_its_own(client, app, policy_dir):
    world = World(app)
    organization = world.organization()
    request = pb.CheckRequest(actor=ref("User", world.owner_of(organization)), action="view",
                              resource=ref("Organization", organization))
    old = client.authorization.Check(request)
    path = policy_dir / SHARED
    path.write_text(path.read_text() + "\n# changed\n")
    app.reload_policy()  # no write in between: the reload is the change
    new = client.authorization.Check(request)
    assert int(new.revision) == int(old.revision) + 1 and new.policy_version != old.policy_version
    for answer in (old, new):
        request.at_revision = answer.revision
        again = client.authorization.Check(request)
        assert (again.revision, again.policy_version) == (answer.revision, answer.policy_version)
    assert app.events.list_events(int(old.revision), 0, 10)[0].type == EventType.POLICY_SERVED


def test_replicas_recording_one_new_policy_together_record_it_once(database_url, policy_dir):
    import threading

    apps = [App(database_url, policy_dir) for _ in range(3)]
    try:
        path = policy_dir / SHARED
        path.write_text(path.read_text() + "\n# changed\n")
        from mandate.engine.policy import Policy

        policy = Policy(policy_dir)
        start, failures = threading.Barrier(len(apps)), []

        def record(replica):
            start.wait()
            try:
                replica.history.record_policy(policy)
            except Exception as error:  # noqa: BLE001 - collected and asserted below
                failures.append(error)

        threads = [threading.Thread(target=record, args=(replica,)) for replica in apps]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert failures == []
        served = [e for e in apps[0].events.list_events(0, 0, 1000) if e.type == EventType.POLICY_SERVED]
        assert [e.attributes["policy_version"] for e in served][-1] == policy.version
        assert sum(e.attributes["policy_version"] == policy.version for e in served) == 1
    finally:
        for replica in apps:
            replica.close()


def test_retention_racing_a_question_about_the_past_refuses_it(app):
    """The horizon is read again in the snapshot the facts are read from: partial facts never answer."""
    from mandate.engine.index import FactIndex
    from mandate.store import history

    world = World(app)
    organization = world.organization()
    world.member(organization)
    early = app.store.current_revision()
    world.member(organization)
    with app.store.bookkeeping() as session:  # the sweeper's retention, between the check and the read
        history.forget_before(session, app.store.current_revision())
    with pytest.raises(errors.RevisionUnavailable):
        FactIndex.at(app.store, early)


@pytest.mark.parametrize("seed", [3])
def test_the_index_fed_by_its_own_writes_equals_one_read_from_the_store(app, seed):
    """After a local commit the index applies the rows the write read just before committing
    (FactIndex.apply_written) instead of reading them again: the same facts either way."""
    from mandate.engine.index import FactIndex

    rng = random.Random(seed)
    world = World(app)
    orgs = [world.organization(name=f"Org{n}") for n in range(3)]
    users = [world.user() for _ in range(4)] + [world.owner_of(o) for o in orgs]
    projects = [world.project(org) for org in orgs]
    for _ in range(40):
        random_step(rng, world, app, orgs, users, projects)
    fresh = FactIndex(app.store)
    fresh.catch_up()
    names = ("users", "organizations", "resources", "by_organization", "memberships", "members", "partners",
             "clients", "assignments", "links", "revision")

    def facts(index):  # an emptied entry left behind by a change is no fact
        return {n: ({k: v for k, v in value.items() if v != set() and v != {}} if isinstance(value, dict) else value)
                for n, value in ((n, getattr(index, n)) for n in names)}

    assert facts(app.index) == facts(fresh)
