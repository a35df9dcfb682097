"""Names defined once: every action the service asks the policy about, per resource type, every
error reason a client can match on, every event type, and the roles and states the store keeps.
The service, the store, the policy's validation, the docs' tables (held by tests/public/test_names.py)
and the tests import them from here (warehouse keeps its permissions the same way)."""

from __future__ import annotations

from enum import StrEnum


class OrganizationAction(StrEnum):
    """R23: each mutation inside an organization asks for one of these on the Organization."""

    VIEW = "view"
    LIST_MEMBERS = "list_members"
    INVITE_MEMBER = "invite_member"
    CANCEL_INVITATION = "cancel_invitation"
    LIST_INVITATIONS = "list_invitations"
    REMOVE_MEMBER = "remove_member"
    PAUSE_MEMBER = "pause_member"
    RESUME_MEMBER = "resume_member"
    SET_MEMBER_ROLE = "set_member_role"
    TAG_PARTNER_EMPLOYEE = "tag_partner_employee"
    PUT_RESOURCE = "put_resource"
    DELETE_RESOURCE = "delete_resource"
    LINK = "link"
    SWITCH = "switch"
    ADD_CLIENT = "add_client"
    LIST_CLIENTS = "list_clients"
    EXPORT_CLIENTS = "export_clients"
    ASSIGN_CLIENT = "assign_client"
    REQUEST_DISCONNECT = "request_disconnect"
    ACCEPT_CLIENT_INVITATION = "accept_client_invitation"
    LIST_PARTNERS = "list_partners"
    UPDATE_GRANTED_SCOPES = "update_granted_scopes"
    RESPOND_DISCONNECT = "respond_disconnect"
    REVOKE_PARTNER = "revoke_partner"
    APPROVE_PARTNER_EMPLOYEE = "approve_partner_employee"


class ResourceAction(StrEnum):
    """Asked on a registered resource by the service itself: moving it to another organization,
    when its type declares "move" (otherwise "delete_resource" on its organization decides).
    Every other action of a resource type is the policy's to declare (its `permissions`)."""

    MOVE = "move"


class ProjectAction(StrEnum):
    """The default policy's Project permissions: the scopes a client grants, and moving a
    project to another organization. The policy declares them; the service asks only "move"."""

    READ = "read"
    EDIT = "edit"
    PUBLISH = "publish"
    APPROVE = "approve"
    DELETE = "delete"
    MOVE = "move"


class RoleGrantAction(StrEnum):
    """Asked about the role being given or taken on one resource (GrantResourceRole, RevokeResourceRole)."""

    GRANT = "grant"
    REVOKE = "revoke"


class MemberAction(StrEnum):
    """Asked about the membership a mutation changes (R2, R4, R6, R7, R15)."""

    INVITE = "invite"
    REMOVE = "remove"
    PAUSE = "pause"
    RESUME = "resume"
    SET_ROLE = "set_role"
    TAG = "tag"  # R15: tagging the member a partner employee
    UNTAG = "untag"
    ASSIGN = "assign"  # R15: assigning the partner's member to a client (only tagged employees)


class InvitationAction(StrEnum):
    """Asked about the client invitation being accepted (R9 to R11)."""

    ACCEPT = "accept"


class ConnectionAction(StrEnum):
    """Asked about the connection a partner-program mutation changes (R12, R14, R16, R17)."""

    UPDATE_GRANTED_SCOPES = "update_granted_scopes"
    REQUEST_DISCONNECT = "request_disconnect"
    ACCEPT_DISCONNECT = "accept_disconnect"
    DECLINE_DISCONNECT = "decline_disconnect"
    REVOKE = "revoke"
    ASSIGN = "assign"
    UNASSIGN = "unassign"
    APPROVE_EMPLOYEE = "approve_employee"
    REVOKE_EMPLOYEE = "revoke_employee"


class LinkAction(StrEnum):
    """Asked about two master accounts being linked (R13)."""

    CREATE = "create"


# Every action the service asks about, by the resource type it asks on. A policy must declare
# them all (checked at load).
SERVICE_ACTIONS: dict[str, type[StrEnum]] = {
    "Organization": OrganizationAction,
    "Member": MemberAction,
    "ClientInvitation": InvitationAction,
    "Connection": ConnectionAction,
    "RoleGrant": RoleGrantAction,
    "OrganizationLink": LinkAction,
}


class Reason(StrEnum):
    """Every reason a refusal carries in its google.rpc.ErrorInfo (api.md), and the reason
    `mandate policy check` prints. The README's table lists exactly these (a test keeps it so)."""

    # INVALID_ARGUMENT
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNKNOWN_SCOPE = "UNKNOWN_SCOPE"
    UNKNOWN_RESOURCE_TYPE = "UNKNOWN_RESOURCE_TYPE"  # the policy declares no such resource type
    UNKNOWN_ROLE = "UNKNOWN_ROLE"  # the resource's type declares no such role
    REQUEST_ID_REUSED = "REQUEST_ID_REUSED"  # the request_id was used for another request
    # UNAUTHENTICATED
    UNAUTHENTICATED = "UNAUTHENTICATED"
    # PERMISSION_DENIED: the policy refused the acting user (R23)
    NOT_ALLOWED = "NOT_ALLOWED"
    READ_ONLY_CALLER = "READ_ONLY_CALLER"  # a read-only caller (callers file) asked for a change
    ADMIN_ONLY = "ADMIN_ONLY"  # AdminService, called by a caller without `admin = true` (callers file)
    OUTSIDE_CALLER_SCOPE = "OUTSIDE_CALLER_SCOPE"  # an organization the caller is not limited to (callers file)
    # NOT_FOUND
    NOT_FOUND = "NOT_FOUND"
    USER_NOT_FOUND = "USER_NOT_FOUND"
    ORGANIZATION_NOT_FOUND = "ORGANIZATION_NOT_FOUND"
    MEMBER_NOT_FOUND = "MEMBER_NOT_FOUND"
    INVITATION_NOT_FOUND = "INVITATION_NOT_FOUND"
    CONNECTION_NOT_FOUND = "CONNECTION_NOT_FOUND"
    ASSIGNMENT_NOT_FOUND = "ASSIGNMENT_NOT_FOUND"
    RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
    PARENT_NOT_FOUND = "PARENT_NOT_FOUND"
    # ALREADY_EXISTS
    ALREADY_EXISTS = "ALREADY_EXISTS"
    ALREADY_MEMBER = "ALREADY_MEMBER"
    PARTNER_RECORD_CONFLICT = "PARTNER_RECORD_CONFLICT"
    INVITATION_PENDING = "INVITATION_PENDING"
    ALREADY_CONNECTED = "ALREADY_CONNECTED"
    ALREADY_ASSIGNED = "ALREADY_ASSIGNED"
    EMAIL_TAKEN = "EMAIL_TAKEN"
    IMPORT_CONFLICT = "IMPORT_CONFLICT"  # an imported record exists already (on_conflict fail)
    # FAILED_PRECONDITION
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    INVITATION_NOT_PENDING = "INVITATION_NOT_PENDING"
    LAST_OWNER = "LAST_OWNER"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    NOT_PARTNER_EMPLOYEE = "NOT_PARTNER_EMPLOYEE"
    NOT_A_COLLEAGUE = "NOT_A_COLLEAGUE"
    MEMBER_ALREADY_PAUSED = "MEMBER_ALREADY_PAUSED"
    MEMBER_ALREADY_ACTIVE = "MEMBER_ALREADY_ACTIVE"
    CONNECTION_STATE = "CONNECTION_STATE"
    PARENT_CYCLE = "PARENT_CYCLE"  # the parent given is the resource itself or one of its descendants
    RESOURCE_HAS_CHILDREN = "RESOURCE_HAS_CHILDREN"  # delete or move the children first
    REVISION_UNAVAILABLE = "REVISION_UNAVAILABLE"
    # RESOURCE_EXHAUSTED
    SEAT_LIMIT_REACHED = "SEAT_LIMIT_REACHED"
    TOO_MANY_STREAMS = "TOO_MANY_STREAMS"
    TOO_MANY_REQUESTS = "TOO_MANY_REQUESTS"
    TOO_MANY_REVISIONS = "TOO_MANY_REVISIONS"  # one request names more past revisions or times than allowed
    # DEADLINE_EXCEEDED: nothing was changed
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    # UNAVAILABLE: the server is starting or draining
    UNAVAILABLE = "UNAVAILABLE"
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    # INTERNAL (details only in the server log)
    INTERNAL = "INTERNAL"
    # `mandate policy check`, server start and reload: a policy that breaks the contract
    POLICY_CONTRACT = "POLICY_CONTRACT"


class EventType(StrEnum):
    """The type of every event a change records (R22), `area.what_happened`. docs/events.md lists
    exactly these (a test keeps it so); ListEvents and Watch return them in `Event.type`."""

    # Directory
    USER_REGISTERED = "user.registered"
    ORGANIZATION_CREATED = "organization.created"
    ORGANIZATION_LINKED = "organization.linked"
    RESOURCE_PUT = "resource.put"
    RESOURCE_DELETED = "resource.deleted"
    RESOURCE_ROLE_GRANTED = "resource.role_granted"
    RESOURCE_ROLE_REVOKED = "resource.role_revoked"
    # Membership
    MEMBER_INVITED = "member.invited"
    MEMBER_JOINED = "member.joined"
    MEMBER_PAUSED = "member.paused"
    MEMBER_RESUMED = "member.resumed"
    MEMBER_REMOVED = "member.removed"
    MEMBER_ROLE_CHANGED = "member.role_changed"
    MEMBER_TAGGED = "member.tagged"
    MEMBER_UNTAGGED = "member.untagged"
    MEMBER_ACCESS_EXPIRY_CHANGED = "member.access_expiry_changed"
    INVITATION_CANCELLED = "invitation.cancelled"
    INVITATION_EXPIRED = "invitation.expired"
    # Partner program
    CLIENT_INVITED = "client.invited"
    CLIENT_INVITE_LINK_CREATED = "client.invite_link_created"
    CLIENT_CONNECTED = "client.connected"
    CLIENT_SCOPES_UPDATED = "client.scopes_updated"
    CLIENT_ACCESS_EXPIRY_CHANGED = "client.access_expiry_changed"
    CLIENT_DISCONNECT_REQUESTED = "client.disconnect_requested"
    CLIENT_DISCONNECT_DECLINED = "client.disconnect_declined"
    CLIENT_DISCONNECTED = "client.disconnected"
    PARTNER_REVOKED = "partner.revoked"
    PARTNER_EMPLOYEE_ASSIGNED = "partner_employee.assigned"
    PARTNER_EMPLOYEE_UNASSIGNED = "partner_employee.unassigned"
    PARTNER_EMPLOYEE_APPROVED = "partner_employee.approved"
    PARTNER_EMPLOYEE_REVOKED = "partner_employee.revoked"
    PARTNER_EMPLOYEE_ACCESS_EXPIRY_CHANGED = "partner_employee.access_expiry_changed"
    # Operations
    POLICY_SERVED = "policy.served"
    WORLD_IMPORTED = "world.imported"
    PERSON_ERASED = "person.erased"


# -- roles and states, stored by value (mandate.store.models) ----------------------------------


class Role(StrEnum):
    """The roles a member holds in an organization. The policy gives them their meaning; the
    protos, docs/world-format.md and docs/policy-tests.md list them (tests/public/test_names.py)."""

    OWNER = "owner"
    LEGAL_REPRESENTATIVE = "legal_representative"
    COLLEAGUE = "colleague"
    CLIENT = "client"


class MemberStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    REMOVED = "removed"


class InvitationKind(StrEnum):
    MEMBER = "member"
    CLIENT = "client"


class InvitationStatus(StrEnum):
    PENDING = "pending"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # nobody accepted it before its expires_at


class ConnectionStatus(StrEnum):
    ACTIVE = "active"
    DISCONNECT_REQUESTED = "disconnect_requested"
    DISCONNECTED = "disconnected"


class EmployeeApproval(StrEnum):
    CLIENT = "client"
    PARTNER = "partner"


class EventCause(StrEnum):
    """Why the service made a change nobody asked for in so many words (empty: it was asked for)."""

    CASCADE = "cascade"  # R18: a consequence of another change, such as a removal ending assignments
    EXPIRED = "expired"
