"""An answer about a time never changes once given (issue 18 item 4), through gRPC on every
engine, with writers racing the questions. A write's time was stamped before its commit, so a
question "as of now" asked in between answered the revision before it, and the same question
asked a moment later the revision of the write: 39 of 1,741 such answers changed, 16 of them to
the opposite decision. Revisions are now stamped under the revision lock, in rising order, and a
question about a time no committed revision is stamped after waits for the write in flight."""

from __future__ import annotations

import threading

import pytest
from mandate.runtime.app import App
from mandate.store import history
from mandate.store.db import utc_now
from mandate.v1 import authorization_pb2 as pb
from mandate.v1 import common_pb2
from sqlalchemy import event
from sqlalchemy.orm import Session

from tests.conftest import POLICY_DIR

WAIT = 30  # seconds: a bound on waits for what happens at once when all is well


def ref(kind: str, ident: str) -> common_pb2.ObjectRef:
    return common_pb2.ObjectRef(type=kind, id=ident)


@pytest.fixture
def paused_and_resumed(world):
    """A member whose owner pauses and resumes them: each write flips the member's access."""
    organization = world.organization()
    member = world.member(organization)
    owner = world.owner_of(organization)
    memberships = world.app.memberships
    flips = iter(range(10**6))

    def flip() -> None:
        (memberships.pause_member if next(flips) % 2 == 0 else memberships.resume_member)(owner, organization, member)

    request = pb.CheckRequest(actor=ref("User", member), action="view", resource=ref("Organization", organization))
    return flip, request


def as_of(client, request: pb.CheckRequest, moment: str) -> tuple[str, bool]:
    question = pb.CheckRequest()
    question.CopyFrom(request)
    question.as_of = moment
    reply = client.authorization.Check(question, timeout=WAIT)
    return reply.revision, reply.allowed


def test_a_question_between_a_writes_time_and_its_commit_is_answered_once_and_for_all(
        client, app, paused_and_resumed, monkeypatch):
    """issue 18 item 4: the question is asked after the write took its time and before it
    commits (held there until the server has looked up the question's revision)."""
    flip, request = paused_and_resumed
    stamped, looked_up = threading.Event(), threading.Event()
    writer = {}

    def before_commit(session):
        if threading.current_thread() is writer.get("thread") and not stamped.is_set():
            stamped.set()
            looked_up.wait(WAIT)

    # The server looked the question up: without waiting for the write, or waiting for it.
    revision_at = history.revision_at

    def looked(session, moment):
        found = revision_at(session, moment)
        looked_up.set()
        return found

    settled = app.store.settled

    def settling():
        looked_up.set()
        return settled()

    monkeypatch.setattr(history, "revision_at", looked)
    monkeypatch.setattr(app.store, "settled", settling)
    event.listen(Session, "before_commit", before_commit)
    try:
        writer["thread"] = threading.Thread(target=flip)
        writer["thread"].start()
        assert stamped.wait(WAIT)
        moment = utc_now()  # after the write took its time, before it commits
        first = as_of(client, request, moment)
        writer["thread"].join(WAIT)
    finally:
        event.remove(Session, "before_commit", before_commit)
        looked_up.set()
    assert not writer["thread"].is_alive()
    assert as_of(client, request, moment) == first
    assert first == (str(app.store.current_revision()), False)  # the pause counts: its time came first


def test_answers_as_of_now_never_change_while_writers_race_them(client, app, paused_and_resumed):
    """issue 18 item 4: writers and "as of now" questions race; every answer asked again later,
    here and on another replica of the same store, is the same."""
    flip, request = paused_and_resumed
    writes = 40
    asking, done = threading.Event(), threading.Event()
    failures = []

    def write():
        try:
            asking.wait(WAIT)  # the first answer comes before any of these writes
            for _ in range(writes):
                flip()
        except Exception as error:  # noqa: BLE001 - asserted below
            failures.append(error)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    answers = []
    while not done.is_set() or len(answers) < 10:
        moment = utc_now()
        answers.append((moment, as_of(client, request, moment)))
        asking.set()
    writer.join(WAIT)
    assert failures == [] and len(answers) >= 10
    later = [(moment, given, as_of(client, request, moment)) for moment, given in answers]
    assert [(moment, given, again) for moment, given, again in later if again != given] == []
    replica = App(app.store.url, POLICY_DIR)
    try:
        elsewhere = [(moment, given[0], str(replica.history.revision_as_of(moment))) for moment, given in answers]
    finally:
        replica.close()
    assert [(moment, given, there) for moment, given, there in elsewhere if there != given] == []
    assert len({revision for _, (revision, _) in answers}) > 1  # asked before, during and after the writes
