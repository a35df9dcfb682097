"""Helpers shared by the domain services: ids, look-ups that raise NOT_FOUND."""

from __future__ import annotations

import functools
import secrets
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from mandate import errors
from mandate.names import EventType, Reason
from mandate.runtime import callers
from mandate.store import models
from mandate.store.db import Transaction


def calling_service() -> str:
    """The name of the calling service of the request being served ("" outside a request): the
    domain tells the store (`Store.write(caller=...)`, on the events) and keys request ids by it."""
    return callers.current_name()


class Unchanged(Exception):
    """Raised inside a write transaction when the mutation would change nothing. The transaction
    rolls back, so the write takes no revision and records no event, and the service method
    (decorated with `reports_unchanged`) answers with `result` as a success."""

    def __init__(self, result):
        super().__init__("unchanged")
        self.result = result


def unchanged(tx: Transaction, result, *rows) -> None:
    """End a write that changes nothing. The `rows` the answer shows leave the session first, so
    the rollback does not expire them."""
    for row in rows:
        tx.session.expunge(row)
    raise Unchanged(result)


def reports_unchanged(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except Unchanged as nothing:
            return nothing.result
    return wrapper


def new_id(prefix: str) -> str:
    """Opaque ids that sort by creation time (so id order is a stable, meaningful page order)."""
    return f"{prefix}_{time.time_ns() // 1000:014x}{secrets.token_hex(5)}"


def get_user(session: Session, user_id: str, field: str = "user_id") -> models.User:
    user = session.get(models.User, user_id)
    if user is None:
        raise errors.NotFound(f"{field}: no user {user_id!r}", Reason.USER_NOT_FOUND)
    return user


def get_organization(session: Session, organization_id: str, field: str = "organization_id") -> models.Organization:
    organization = session.get(models.Organization, organization_id)
    if organization is None:
        raise errors.NotFound(f"{field}: no organization {organization_id!r}", Reason.ORGANIZATION_NOT_FOUND)
    return organization


def get_member(session: Session, organization_id: str, user_id: str) -> models.Membership:
    membership = session.get(models.Membership, (organization_id, user_id))
    if membership is None or membership.status == models.MemberStatus.REMOVED:
        raise errors.NotFound(
            f"user_id: user {user_id!r} is not a member of organization {organization_id!r}", Reason.MEMBER_NOT_FOUND
        )
    return membership


def get_connection(session: Session, partner_id: str, client_id: str, *, live: bool = True) -> models.Connection:
    connection = session.get(models.Connection, (partner_id, client_id))
    if connection is None or (live and connection.status == models.ConnectionStatus.DISCONNECTED):
        raise errors.NotFound(
            f"client_id: organization {client_id!r} is not a connected client of partner {partner_id!r}",
            Reason.CONNECTION_NOT_FOUND,
        )
    return connection


def email_of(session: Session, user_id: str) -> str:
    return session.execute(select(models.User.email).where(models.User.id == user_id)).scalar_one()


def end_assignments(tx: Transaction, *conditions, cause: str = "") -> None:
    """Withdraw every live assignment matching the conditions (R14, R17, R18): the person no
    longer reaches that client, and a later assignment starts without the old approval.
    `cause` is EventCause.CASCADE when this follows from another change (a removal, a disconnect)."""
    assignments = tx.session.execute(
        select(models.Assignment).where(models.Assignment.assigned.is_(True), *conditions)
    ).scalars()
    for assignment in assignments:
        assignment.assigned = False
        assignment.client_approved = False
        assignment.revision = tx.revision
        tx.emit(EventType.PARTNER_EMPLOYEE_UNASSIGNED, cause=cause, partner_id=assignment.partner_id,
                client_id=assignment.client_id, user_id=assignment.user_id)


def end_resource_roles(tx: Transaction, *conditions, cause: str = "") -> None:
    """End every role on one resource matching the conditions (R6, R18: a removal ends the roles
    that came with the membership; a deleted resource's roles end with it)."""
    roles = tx.session.execute(
        select(models.ResourceRole).where(models.ResourceRole.granted.is_(True), *conditions)).scalars().all()
    for role in roles:
        role.granted = False
        role.access_expires_at = None
        role.revision = tx.revision
        organization_id = tx.session.execute(select(models.Resource.organization_id).where(
            models.Resource.type == role.resource_type, models.Resource.id == role.resource_id)).scalar()
        tx.emit(EventType.RESOURCE_ROLE_REVOKED, cause=cause, organization_id=organization_id or "",
                resource_type=role.resource_type, resource_id=role.resource_id, user_id=role.user_id, role=role.role)


def end_roles_of_member(tx: Transaction, organization_id: str, user_id: str, cause: str = "") -> None:
    """R6, R18: a member removed from an organization loses the roles on its resources, and on the
    resources of its clients where they are not a member themselves (the roles its partner
    employees were given there)."""
    resources = select(models.Resource.type, models.Resource.id).where(
        models.Resource.organization_id == organization_id)
    clients = select(models.Connection.client_id).where(models.Connection.partner_id == organization_id)
    own = select(models.Membership.organization_id).where(models.Membership.user_id == user_id,
                                                          models.Membership.status != models.MemberStatus.REMOVED)
    client_resources = select(models.Resource.type, models.Resource.id).where(
        models.Resource.organization_id.in_(clients), models.Resource.organization_id.not_in(own))
    from sqlalchemy import or_, tuple_
    key = tuple_(models.ResourceRole.resource_type, models.ResourceRole.resource_id)
    end_resource_roles(tx, models.ResourceRole.user_id == user_id,
                       or_(key.in_(resources), key.in_(client_resources)), cause=cause)
