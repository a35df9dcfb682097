"""Questions about the past must not cost the present (issue 18, items 1, 2, 5 and 6), through
gRPC against the real store on every engine: a question about the past runs in the worker pool
and never holds up a present Check while a past index is built; one request names a bounded
number of past times, the past indexes kept stay within their memory budget, and long work stops
when its caller gives up; AccessReview racing the history retention is REVISION_UNAVAILABLE;
AccessReview pages are bounded in bytes. No timing is asserted: waits are bounded, work is counted."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from mandate import deadlines, errors
from mandate.checks.history import BYTES_PER_ROW, MAX_PAST_TIMES
from mandate.checks.review import access_review
from mandate.engine.explain import explain
from mandate.engine.index import FactIndex
from mandate.runtime import validate
from mandate.store import history
from mandate.v1 import authorization_pb2 as pb
from mandate.v1 import common_pb2

from tests.support import error_info, reason_of

WAIT = 30  # seconds: a bound on waits for something that happens at once when all is well


def ref(kind: str, ident: str) -> common_pb2.ObjectRef:
    return common_pb2.ObjectRef(type=kind, id=ident)


@pytest.fixture
def past(world):
    """An organization with a project and a colleague who was removed: revisions before and after."""
    organization = world.organization()
    project = world.project(organization)
    colleague = world.member(organization)
    revisions = [world.app.store.current_revision()]
    for _ in range(MAX_PAST_TIMES + 1):  # more past revisions than one request may name
        world.member(organization)
        revisions.append(world.app.store.current_revision())
    world.app.memberships.remove_member(world.owner_of(organization), organization, colleague)
    return organization, project, colleague, revisions


def check(user: str, project: str, **when) -> pb.CheckRequest:
    return pb.CheckRequest(actor=ref("User", user), action="read", resource=ref("Project", project), **when)


@pytest.fixture
def held_builds(monkeypatch):
    """Every build of a whole past index waits at its start until `release` is set."""
    entered, release = threading.Event(), threading.Event()
    original = FactIndex.at.__func__

    def at(cls, store, revision, around=None):
        if around is None:
            entered.set()
            release.wait(WAIT)
        return original(cls, store, revision, around)

    monkeypatch.setattr(FactIndex, "at", classmethod(at))
    yield entered, release
    release.set()


def test_a_question_about_the_past_never_holds_up_a_present_check(client, app, past, held_builds):
    """issue 18 item 1: while one caller's question builds a past index, a present Check and a
    single past decision about another revision are answered (the past ran on the event loop and
    waited there for the history lock, stalling every other call)."""
    organization, project, colleague, revisions = past
    entered, release = held_builds
    answers = {}

    def batch():
        answers["batch"] = client.authorization.BatchCheck(pb.BatchCheckRequest(
            checks=[check(colleague, project, at_revision=str(revisions[0]))]), timeout=WAIT)

    builder = threading.Thread(target=batch)
    builder.start()
    try:
        assert entered.wait(WAIT)
        for _ in range(20):  # the present, while the build holds on
            assert not client.authorization.Check(check(colleague, project), timeout=WAIT).allowed
        alone = client.authorization.Check(check(colleague, project, at_revision=str(revisions[1])), timeout=WAIT)
        assert alone.allowed and alone.revision == str(revisions[1])
        assert not release.is_set() and builder.is_alive()  # all of it answered while the build waited
    finally:
        release.set()
        builder.join(WAIT)
    assert [r.allowed for r in answers["batch"].results] == [True]


def test_one_request_names_a_bounded_number_of_past_times(client, past):
    """issue 18 item 2: at most MAX_PAST_TIMES distinct past revisions or times in one request;
    past it RESOURCE_EXHAUSTED, reason TOO_MANY_REVISIONS, naming the field and the limit."""
    _, project, colleague, revisions = past
    allowed = client.authorization.BatchCheck(pb.BatchCheckRequest(checks=[
        check(colleague, project, at_revision=str(r)) for r in revisions[:MAX_PAST_TIMES]] * 2
        + [check(colleague, project)]))
    assert [r.allowed for r in allowed.results] == [True] * (2 * MAX_PAST_TIMES) + [False]
    for extra in (check(colleague, project, at_revision=str(revisions[MAX_PAST_TIMES])),
                  check(colleague, project, as_of="2026-01-01T00:00:00Z")):
        with pytest.raises(grpc.RpcError) as caught:
            client.authorization.BatchCheck(pb.BatchCheckRequest(checks=[
                check(colleague, project, at_revision=str(r)) for r in revisions[:MAX_PAST_TIMES]] + [extra]))
        field = f"checks[{MAX_PAST_TIMES}].{'at_revision' if extra.at_revision else 'as_of'}"
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason_of(caught.value) == "TOO_MANY_REVISIONS"
        assert field in caught.value.details() and str(MAX_PAST_TIMES) in caught.value.details()
        assert error_info(caught.value).metadata["field"] == field


def test_the_past_indexes_kept_stay_within_their_memory_budget(client, app, past):
    """issue 18 item 2: whole past indexes are kept for the next question only within the byte
    budget; the least recently asked go first, and one larger than the budget is not kept."""
    _, project, colleague, revisions = past

    def ask(revision):
        reply = client.authorization.BatchCheck(pb.BatchCheckRequest(checks=[
            check(colleague, project, at_revision=str(revision))]))
        assert reply.results[0].allowed

    size = {r: FactIndex.at(app.store, r).rows * BYTES_PER_ROW for r in revisions}
    app.history.memory_budget = size[revisions[3]] + size[revisions[4]]  # room for the last two asked
    for revision in revisions[1:5]:
        ask(revision)
        assert 0 < app.history.kept_bytes() <= app.history.memory_budget
    assert sorted(app.history._indexes) == revisions[3:5]
    app.history.memory_budget = size[revisions[5]] - 1
    ask(revisions[5])
    assert revisions[5] not in app.history._indexes  # too big alone: answered, not kept


@pytest.mark.parametrize("gives_up", ["deadline", "cancel"])
def test_a_build_of_the_past_stops_when_its_caller_gives_up(client, app, past, monkeypatch, gives_up):
    """issue 18 item 2: building a past index stops at its next look at the caller once the
    deadline passed or the caller cancelled (it went on for seconds after the caller left)."""
    import mandate.engine.index

    _, project, colleague, revisions = past
    monkeypatch.setattr(mandate.engine.index, "DEADLINE_ROWS", 1)  # look at the caller after every row
    reading, release, stopped = threading.Event(), threading.Event(), threading.Event()
    original_rows, original_at = history.fact_rows, FactIndex.at.__func__
    seen = {}  # what the build looks at to know that its caller cancelled

    def fact_rows(session, model, at_revision=None, *where):
        rows = original_rows(session, model, at_revision, *where)
        for number, row in enumerate(rows):
            if number == 1:
                seen.setdefault("cancelled", deadlines._cancelled.get())
                reading.set()
                release.wait(WAIT)
            yield row

    def at(cls, store, revision, around=None):
        try:
            return original_at(cls, store, revision, around)
        except errors.DeadlineExceeded:
            stopped.set()
            raise

    monkeypatch.setattr(history, "fact_rows", fact_rows)
    monkeypatch.setattr(FactIndex, "at", classmethod(at))
    request = pb.BatchCheckRequest(checks=[check(colleague, project, at_revision=str(revisions[0]))])
    if gives_up == "deadline":
        call = client.authorization.BatchCheck.future(request, timeout=2.0)
    else:
        call = client.authorization.BatchCheck.future(request)
        assert reading.wait(WAIT)
        call.cancel()
        # The server learns of the cancel a moment later (later still on a busy machine); the
        # build, held at its second row, goes on only once the server knows.
        assert seen["cancelled"] is not None and seen["cancelled"].wait(WAIT)
    with pytest.raises(grpc.FutureCancelledError if gives_up == "cancel" else grpc.RpcError):
        call.result(WAIT)
    release.set()
    # (On a machine so busy that the build had not begun by the deadline, it is never begun.)
    assert not reading.is_set() or stopped.wait(WAIT), "the build went on after its caller gave up"
    assert revisions[0] not in app.history._indexes


def test_every_long_answer_stops_for_a_caller_that_gave_up(app, past):
    """issue 18 item 2: lists, AccessReview, Explain and BatchCheck look at their caller as they
    go (a cancelled caller, here): none of them finishes its work for nobody."""
    organization, project, colleague, revisions = past
    authorizer = app.authorizer
    gone = threading.Event()
    gone.set()
    owner = app.directory.get_organization(organization).owner_id
    long_calls = [
        lambda: authorizer.list_resources(owner, "read", "Project", 100, ""),
        lambda: authorizer.list_actors("read", "Project", project, 100, ""),
        lambda: access_review(authorizer, app.store, organization, 100),
        lambda: explain(authorizer, "User", colleague, "read", "Project", project),
        lambda: app.history.authorizer_at(revisions[0], None),
    ]
    for number, call in enumerate(long_calls):
        with pytest.raises(errors.DeadlineExceeded, match="cancelled"):
            deadlines.run_within(None, call, cancelled=gone)
            pytest.fail(f"long call {number} finished for a caller that gave up")
    deadline = time.monotonic() - 1  # passed: refused before it starts
    with pytest.raises(errors.DeadlineExceeded):
        deadlines.run_within(deadline, long_calls[0])


def test_access_review_racing_the_history_retention_is_revision_unavailable(client, app, past, monkeypatch):
    """issue 18 item 5: the retention lets go of the revision between the question's check and
    the rows the review reads (it answered INTERNAL)."""
    organization, _, colleague, revisions = past
    answered = app.history.authorizer_at

    def then_retention(*args, **kwargs):
        authorizer = answered(*args, **kwargs)
        with app.store.bookkeeping() as session:  # the sweeper, on this or another replica
            history.forget_before(session, app.store.current_revision())
        return authorizer

    monkeypatch.setattr(app.history, "authorizer_at", then_retention)
    with pytest.raises(grpc.RpcError) as caught:
        client.authorization.AccessReview(pb.AccessReviewRequest(organization_id=organization,
                                                                 at_revision=str(revisions[0])))
    assert (caught.value.code(), reason_of(caught.value)) == (grpc.StatusCode.FAILED_PRECONDITION,
                                                              "REVISION_UNAVAILABLE")
    assert "retention" in caught.value.details()


def test_access_review_pages_are_bounded_in_bytes(client, world, monkeypatch):
    """issue 18 item 6: long partner names and many projects made one AccessReview page larger
    than a reply may be; a page now ends before MAX_PAGE_BYTES, and paging still returns every
    entry once, in order."""
    client_organization = world.organization(name="Client " + "with a long name " * 11)
    for number in range(3):
        partner = world.organization(name=f"Partner {number} " + "with a long name " * 11)
        world.member(partner, "legal_representative")
        world.connect(partner, client_organization)
    for number in range(12):
        world.project(client_organization, f"project-{number:03d}")

    def pages(size: int):
        token, replies = "", []
        while True:
            reply = client.authorization.AccessReview(pb.AccessReviewRequest(
                organization_id=client_organization, page_size=size, page_token=token))
            replies.append(reply)
            token = reply.next_page_token
            if not token:
                return replies

    whole = pages(1000)
    assert len(whole) == 1 and whole[0].ByteSize() > 4096
    entries = list(whole[0].entries)
    monkeypatch.setattr(validate, "MAX_PAGE_BYTES", 4096)
    bounded = pages(1000)
    assert len(bounded) > 2
    assert all(reply.ByteSize() <= 4096 + 200 for reply in bounded)  # the entries, plus token and revision
    assert [e for reply in bounded for e in reply.entries] == entries


def test_the_memory_for_the_past_is_a_setting():
    """issue 18 item 2: the budget of the past indexes kept is MANDATE_HISTORY_MEMORY (MiB),
    or --history-memory; a bad value stops the server with the setting's name."""
    from mandate.runtime.config import Config

    assert Config.from_env({}).history_memory_mib == 256
    assert Config.from_env({"MANDATE_HISTORY_MEMORY": "64"}).history_memory_mib == 64
    assert Config.from_env({"MANDATE_HISTORY_MEMORY": "0"}).history_memory_mib == 0  # keep none
    for bad in ("-1", "lots"):
        with pytest.raises(ValueError, match="MANDATE_HISTORY_MEMORY"):
            Config.from_env({"MANDATE_HISTORY_MEMORY": bad})
