"""Store rows to protobuf messages."""

from __future__ import annotations

from mandate.checks.review import Entry
from mandate.membership.service import Member
from mandate.runtime import validate as v
from mandate.store import models
from mandate.v1 import authorization_pb2, common_pb2, directory_pb2


def invitation(row: models.Invitation, token: str = "") -> common_pb2.Invitation:
    return common_pb2.Invitation(
        id=row.id, kind=row.kind, organization_id=row.organization_id, email=row.email, role=row.role,
        status=row.status, invited_by=row.invited_by, customer_name=row.customer_name,
        customer_number=row.customer_number, currency=row.currency, requested_scopes=row.requested_scopes,
        token=token, created_at=row.created_at, revision=str(row.revision), expires_at=row.expires_at,
    )


def membership(member: Member) -> common_pb2.Membership:
    row = member.membership
    return common_pb2.Membership(
        organization_id=row.organization_id, user_id=row.user_id, email=member.email, role=row.role,
        status=row.status, partner_employee=row.partner_employee, revision=str(row.revision),
        access_expires_at=row.access_expires_at or "",
    )


def connection(row: models.Connection) -> common_pb2.Connection:
    return common_pb2.Connection(
        partner_id=row.partner_id, client_id=row.client_id, status=row.status, customer_name=row.customer_name,
        customer_number=row.customer_number, currency=row.currency, requested_scopes=row.requested_scopes,
        granted_scopes=row.granted_scopes, employee_approval=row.employee_approval, referral=row.referral,
        connected_at=row.connected_at, revision=str(row.revision), access_expires_at=row.access_expires_at or "",
    )


def assignment(row: models.Assignment) -> common_pb2.Assignment:
    return common_pb2.Assignment(
        partner_id=row.partner_id, client_id=row.client_id, user_id=row.user_id,
        client_approved=row.client_approved, assigned=row.assigned, revision=str(row.revision),
        access_expires_at=row.access_expires_at or "",
    )


def event(row: models.Event, without_emails: bool = False) -> common_pb2.Event:
    """`without_emails` (a read-only caller): attributes that hold an email address are left out."""
    attributes = row.attributes
    if without_emails:
        attributes = {k: value for k, value in attributes.items() if "email" not in k and "@" not in value}
    return common_pb2.Event(revision=str(row.revision), type=row.type, actor_id=row.actor_id,
                            attributes=attributes, occurred_at=row.occurred_at, caller=row.caller,
                            cause=row.cause)


EMAIL_FIELD = "email"
_holds_email: dict = {}  # message descriptor -> whether it or a message within it has an `email` field


def holds_email(descriptor) -> bool:
    known = _holds_email.get(descriptor)
    if known is None:
        _holds_email[descriptor] = False  # a message that contains itself is settled by its other fields
        known = _holds_email[descriptor] = any(
            field.name == EMAIL_FIELD or (field.message_type is not None and holds_email(field.message_type))
            for field in descriptor.fields)
    return known


def clear_emails(message) -> None:
    """Clears every `email` field of a reply, at any depth (a read-only caller's: runtime/interceptors.py).
    Replies without any such field are left untouched at the cost of one look-up."""
    if not holds_email(message.DESCRIPTOR):
        return
    for field, value in message.ListFields():
        if field.name == EMAIL_FIELD:
            message.ClearField(field.name)
        elif field.message_type is not None and holds_email(field.message_type):
            if field.message_type.GetOptions().map_entry:  # a map whose values are messages
                items = value.values()
            else:
                items = value if field.is_repeated else (value,)
            for item in items:
                clear_emails(item)


def user(row: models.User, revision: int) -> directory_pb2.User:
    return directory_pb2.User(id=row.id, email=row.email, display_name=row.display_name, revision=str(revision))


def organization(row: models.Organization) -> directory_pb2.Organization:
    return directory_pb2.Organization(id=row.id, name=row.name, currency=row.currency, seat_limit=row.seat_limit,
                                      owner_id=row.owner_id, revision=str(row.revision))


def access_entry(entry: Entry, without_email: bool = False) -> authorization_pb2.AccessEntry:
    """`without_email` (a read-only caller): the person's email address is left out."""
    return authorization_pb2.AccessEntry(
        user_id=entry.user_id, email="" if without_email else entry.email,
        resource=common_pb2.ObjectRef(type=entry.resource_type, id=entry.resource_id), actions=entry.actions,
        path=entry.path, granted_at=entry.granted_at, granted_revision=str(entry.granted_revision),
        granted_by=entry.granted_by)


def resource_role(row: models.ResourceRole) -> directory_pb2.ResourceRole:
    return directory_pb2.ResourceRole(
        resource=common_pb2.ObjectRef(type=row.resource_type, id=row.resource_id), user_id=row.user_id,
        role=row.role, granted_by=row.granted_by, access_expires_at=row.access_expires_at or "",
        revision=str(row.revision))


def page(rows: list, size: int, key, to_message) -> tuple[list, str]:
    """The messages of one page, and the token of the next. Rows were fetched with one extra to
    know whether another page follows. A page also ends before it passes MAX_PAGE_BYTES (it always
    holds at least one item): one reply, and so what a client that stops reading leaves the server
    holding, stays bounded whatever page_size asks for."""
    messages, total = [], 0
    for row in rows[:size]:
        message = to_message(row)
        total += message.ByteSize()
        if messages and total > v.MAX_PAGE_BYTES:
            break
        messages.append(message)
    if len(messages) < len(rows):
        return messages, v.encode_page_token(key(rows[len(messages) - 1]))
    return messages, ""
