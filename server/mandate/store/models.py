"""Tables. Every row that carries access facts records the revision that last wrote it,
so a reader can catch up on every change since a revision (see mandate.engine.index)."""

from __future__ import annotations

import enum

from sqlalchemy import JSON, BigInteger, Boolean, Column, ForeignKey, Index, Integer, LargeBinary, String, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The roles and states stored in these tables are defined once, in mandate.names.
from mandate.names import (  # noqa: F401 - models.Role and the others stay importable from here
    ConnectionStatus,
    EmployeeApproval,
    EventCause,
    InvitationKind,
    InvitationStatus,
    MemberStatus,
    Role,
)


class Base(DeclarativeBase):
    pass


# The scopes a client can grant a partner are the policy's (`client_scopes`, Policy.scopes);
# these are the default policy's, for data generators and examples.
SCOPES = ("read", "edit", "publish", "approve", "delete")


def enum_column(enum_type: type[enum.StrEnum]):
    """Enums are stored by value, as plain strings (portable across engines)."""
    return String(max(len(m.value) for m in enum_type))


class RevisionCounter(Base):
    """One row. Every write transaction increments it first: that gives the transaction its
    revision and serializes writers, so revisions commit in order on every engine."""

    __tablename__ = "revision_counter"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, nullable=False)


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), nullable=False, unique=True)
    display_name: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[str] = mapped_column(String(40), nullable=False)
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)


class Organization(Base):
    __tablename__ = "organizations"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    seat_limit: Mapped[int] = mapped_column(Integer, nullable=False)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), nullable=False)
    created_at: Mapped[str] = mapped_column(String(40), nullable=False)
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)


class Membership(Base):
    __tablename__ = "memberships"
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(enum_column(Role), nullable=False)
    status: Mapped[str] = mapped_column(enum_column(MemberStatus), nullable=False)
    partner_employee: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # When the membership ends by itself (mandate.shared.expiry); None: it does not.
    access_expires_at: Mapped[str | None] = mapped_column(String(40), index=True)
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)


class Invitation(Base):
    """A member invitation, or a client invitation by email or by link (token_hash set)."""

    __tablename__ = "invitations"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(enum_column(InvitationKind), nullable=False)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), nullable=False)
    email: Mapped[str] = mapped_column(String(254), nullable=False, default="")
    role: Mapped[str] = mapped_column(String(40), nullable=False, default="")
    status: Mapped[str] = mapped_column(enum_column(InvitationStatus), nullable=False)
    invited_by: Mapped[str] = mapped_column(ForeignKey("users.id"), nullable=False)
    customer_name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    customer_number: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    currency: Mapped[str] = mapped_column(String(3), nullable=False, default="")
    requested_scopes: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    # SHA-256 of an invitation link's token; the token itself is never stored.
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[str] = mapped_column(String(40), nullable=False)
    # When the invitation lapses if nobody accepted it (MANDATE_INVITATION_TTL after created_at).
    expires_at: Mapped[str] = mapped_column(String(40), nullable=False)
    # Member invitations: when the membership it grants ends by itself (None: it does not).
    access_expires_at: Mapped[str | None] = mapped_column(String(40))
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False)

    __table_args__ = (
        Index("ix_invitations_org_status", "organization_id", "status"),
        Index("ix_invitations_email_status", "email", "status"),
        Index("ix_invitations_status_expires", "status", "expires_at"),
    )


class Resource(Base):
    """A caller's resource, of a type the policy declares, registered inside an organization or
    under a parent resource. `organization_id` is always its top ancestor's (a move rewrites the
    subtree's), so the organization whose facts decide is one look-up away."""

    __tablename__ = "resources"
    type: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), nullable=False)
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    # The parent resource (None: a top-level resource of organization_id).
    parent_type: Mapped[str | None] = mapped_column(String(40))
    parent_id: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (Index("ix_resources_org", "organization_id", "type", "id"),
                      Index("ix_resources_parent", "parent_type", "parent_id"))


class ResourceRole(Base):
    """A role given to one user on one resource (GrantResourceRole). Kept when revoked
    (granted = false), so the change reaches every reader of the revisions."""

    __tablename__ = "resource_roles"
    resource_type: Mapped[str] = mapped_column(String(40), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(100), primary_key=True)
    granted: Mapped[bool] = mapped_column(Boolean, nullable=False)
    granted_by: Mapped[str] = mapped_column(String(40), nullable=False, default="")
    # When the role ends by itself (mandate.shared.expiry); None: it does not.
    access_expires_at: Mapped[str | None] = mapped_column(String(40), index=True)
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)


class OrganizationLink(Base):
    """Two master accounts linked by their owner (R13); stored in both directions."""

    __tablename__ = "organization_links"
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    other_organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)


class Connection(Base):
    """A partner and one of its clients (R9 to R14)."""

    __tablename__ = "connections"
    partner_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True, index=True)
    status: Mapped[str] = mapped_column(enum_column(ConnectionStatus), nullable=False)
    customer_name: Mapped[str] = mapped_column(String(200), nullable=False)
    customer_number: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    requested_scopes: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    granted_scopes: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    employee_approval: Mapped[str] = mapped_column(enum_column(EmployeeApproval), nullable=False)
    referral: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    connected_at: Mapped[str] = mapped_column(String(40), nullable=False)
    # When the connection ends by itself, as a disconnect (R14); None: it does not.
    access_expires_at: Mapped[str | None] = mapped_column(String(40), index=True)
    invitation_id: Mapped[str] = mapped_column(ForeignKey("invitations.id"), nullable=False)
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)


class Assignment(Base):
    """A partner employee assigned to a client, and the client's approval (R15 to R19).
    Kept when withdrawn (assigned = false), so the change reaches every reader."""

    __tablename__ = "assignments"
    partner_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    assigned: Mapped[bool] = mapped_column(Boolean, nullable=False)
    client_approved: Mapped[bool] = mapped_column(Boolean, nullable=False)
    # When the assignment ends by itself (R17); None: it does not.
    access_expires_at: Mapped[str | None] = mapped_column(String(40), index=True)
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)

    __table_args__ = (Index("ix_assignments_user_client", "user_id", "client_id"),)


class Event(Base):
    """The append-only change log (R22): written in the transaction of the change.

    An event concerns up to two organizations: the one where the change happened and the other
    party (a partner's client, a linked account). Both see it when they list their events."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    type: Mapped[str] = mapped_column(String(60), nullable=False)
    actor_id: Mapped[str] = mapped_column(String(40), nullable=False, default="")
    attributes: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    occurred_at: Mapped[str] = mapped_column(String(40), nullable=False)
    organization_id: Mapped[str | None] = mapped_column(String(40))
    other_organization_id: Mapped[str | None] = mapped_column(String(40))
    caller: Mapped[str] = mapped_column(String(100), nullable=False, default="", server_default="")
    cause: Mapped[str] = mapped_column(String(20), nullable=False, default="", server_default="")

    __table_args__ = (
        Index("ix_events_organization", "organization_id", "id"),
        Index("ix_events_other_organization", "other_organization_id", "id"),
        Index("ix_events_occurred_at", "occurred_at"),  # as_of: the last revision at a time
    )


def event_organizations(attributes: dict) -> tuple[str | None, str | None]:
    """The organizations an event concerns, read from its attributes: where it happened (the
    organization, or the partner) and the other party (the linked account, or the client).
    Migration 0002 backfills old events with the same reading."""
    here = attributes.get("organization_id") or attributes.get("partner_id")
    other = attributes.get("other_organization_id") or attributes.get("client_id")
    return here or None, other or None




class RequestRecord(Base):
    """The outcome of a mutation that carried a `request_id`, kept 24 hours so that a retry gets
    the same answer and changes nothing (mandate.runtime.requests). Written in the mutation's own
    transaction; the primary key makes racing retries produce one change."""

    __tablename__ = "request_records"
    caller: Mapped[str] = mapped_column(String(100), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    method: Mapped[str] = mapped_column(String(100), nullable=False)
    # SHA-256 of the request without its request_id: the same key with other fields is refused.
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    # The reply (serialized protobuf), or the refusal.
    response: Mapped[bytes | None] = mapped_column(LargeBinary)
    error_code: Mapped[str | None] = mapped_column(String(40))
    error_reason: Mapped[str | None] = mapped_column(String(60))
    error_message: Mapped[str | None] = mapped_column(Text)


# -- history (issue 10) ------------------------------------------------------------------------
#
# The fact tables above hold the present, for the fact index and the writers. Each one has a
# history table beside it with every version its rows ever had: the same columns, plus the
# revision that ended the version (None: still current). A version is valid at revision R when
# `revision <= R < ended_revision`, so the facts at R are one query per table
# (mandate.store.history). The writing transaction records the versions it creates.


# Look-ups of one decision about the past (a user's memberships, a client's connections, a
# user's assignments at a client) beside each history table's primary key.
HISTORY_LOOKUPS = {"memberships": ("user_id",), "connections": ("client_id",), "assignments": ("user_id", "client_id"),
                   "resource_roles": ("user_id",)}


def _history_table(model) -> Table:
    columns = [Column(c.name, c.type, nullable=c.nullable, primary_key=c.primary_key or c.name == "revision")
               for c in model.__table__.columns]
    name = f"{model.__tablename__}_history"
    lookup = HISTORY_LOOKUPS.get(model.__tablename__)
    indexes = [Index(f"ix_{name}_lookup", *lookup)] if lookup else []
    return Table(name, Base.metadata, *columns, Column("ended_revision", BigInteger, index=True),
                 Index(f"ix_{name}_revision", "revision"), *indexes)


FACT_MODELS = (User, Organization, Membership, Resource, Connection, Assignment, OrganizationLink, ResourceRole)
HISTORY = {model: _history_table(model) for model in FACT_MODELS}


class HistoryHorizon(Base):
    """One row: the oldest revision whose facts the history still holds (older versions were
    let go by the retention, or predate the history: migration 0004 starts it at the upgrade)."""

    __tablename__ = "history_horizon"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kept_from_revision: Mapped[int] = mapped_column(BigInteger, nullable=False)


class PolicyText(Base):
    """Every policy version that ever served: its files, keyed by its version (the hash of them)."""

    __tablename__ = "policy_texts"
    policy_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    sources: Mapped[dict] = mapped_column(JSON, nullable=False)  # file name -> text


class PolicyPeriod(Base):
    """From `from_revision` (and `from_at`) on, `policy_version` served, until the next period."""

    __tablename__ = "policy_periods"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    policy_version: Mapped[str] = mapped_column(ForeignKey("policy_texts.policy_version"), nullable=False)
    from_revision: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    from_at: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
