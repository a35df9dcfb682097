"""The work of one write (issue 22 item 1): the hot mutations take a handful of statements, and
what they write (the change, its history version, its event) is exactly what a reader sees."""

from __future__ import annotations

import contextlib

import pytest
from mandate import errors
from mandate.names import EventType, Reason
from mandate.store import models
from mandate.store.models import HISTORY
from sqlalchemy import event, func, select

from tests.factories import World


@contextlib.contextmanager
def statements(app):
    """Counts the statements sent to the database (BEGIN on SQLite included)."""
    sent = []

    def count(_connection, _cursor, statement, *_args):
        sent.append(statement)

    event.listen(app.store.engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        event.remove(app.store.engine, "before_cursor_execute", count)


def versions(app, model, *where) -> list:
    with app.store.read() as session:
        history = HISTORY[model]
        return session.execute(select(history.c.revision, history.c.ended_revision)
                               .where(*where).order_by(history.c.revision)).all()


def events_at(app, revision: int) -> list[str]:
    with app.store.read() as session:
        return list(session.execute(select(models.Event.type).where(models.Event.revision == revision)).scalars())


def test_pause_and_resume_take_a_handful_of_statements_and_write_their_history(app):
    """issue 22 item 1: a pause (R7) is at most 8 statements (BEGIN on SQLite, the revision, the
    membership with its email, the change, one last look for the tables written, the time and the
    NOTIFY, the history, the events), and leaves one history version per revision and one event."""
    world = World(app)
    organization = world.organization()
    owner = world.owner_of(organization)
    member = world.member(organization, "colleague")
    project = world.project(organization)
    with statements(app) as sent:
        paused = app.memberships.pause_member(owner, organization, member)
    assert len(sent) <= 8, sent
    assert paused.membership.status == models.MemberStatus.PAUSED and paused.email == world.email(member)
    revision = paused.membership.revision
    assert revision == app.store.current_revision() == app.index.revision  # applied as it committed
    assert not world.allowed(member, "read", "Project", project)
    resumed = app.memberships.resume_member(owner, organization, member)
    assert world.allowed(member, "read", "Project", project)
    M = HISTORY[models.Membership].c
    assert versions(app, models.Membership, M.organization_id == organization, M.user_id == member)[-2:] == [
        (revision, resumed.membership.revision), (resumed.membership.revision, None)]
    assert events_at(app, revision) == [EventType.MEMBER_PAUSED]


def test_assign_and_unassign_take_a_handful_of_statements_and_keep_the_record(app):
    """issue 22 item 1: an assignment (R15) is at most 10 statements and a withdrawal (R17) at
    most 8; the withdrawn record stays, unassigned and unapproved, and a second withdrawal is
    refused with ASSIGNMENT_NOT_FOUND and writes nothing."""
    world = World(app)
    partner, client = world.organization(), world.organization()
    world.connect(partner, client)
    employee = world.member(partner, "colleague", partner_employee=True)
    actor = world.owner_of(partner)
    with statements(app) as sent:
        assigned = app.partners.assign_client(actor, partner, client, employee)
    assert len(sent) <= 10, sent
    assert (assigned.assigned, assigned.client_approved, assigned.revision) == (True, False,
                                                                                 app.store.current_revision())
    app.partners.approve_partner_employee(world.owner_of(client), client, partner, employee)
    with statements(app) as sent:
        withdrawn = app.partners.unassign_client(actor, partner, client, employee)
    assert len(sent) <= 8, sent
    assert (withdrawn.assigned, withdrawn.client_approved, withdrawn.revision) == (False, False,
                                                                                    app.store.current_revision())
    assert events_at(app, withdrawn.revision) == [EventType.PARTNER_EMPLOYEE_UNASSIGNED]
    before = app.store.current_revision()
    with pytest.raises(errors.NotFound) as refused:
        app.partners.unassign_client(actor, partner, client, employee)
    assert refused.value.reason == Reason.ASSIGNMENT_NOT_FOUND
    assert app.store.current_revision() == before
    again = app.partners.assign_client(actor, partner, client, employee)  # the kept record is reused
    assert (again.assigned, again.client_approved) == (True, False)
    with app.store.read() as session:
        rows = session.execute(select(func.count()).select_from(models.Assignment).where(
            models.Assignment.user_id == employee)).scalar_one()
    assert rows == 1
