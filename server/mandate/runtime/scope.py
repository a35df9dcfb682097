"""What a caller limited to some organizations (callers file: `organizations`) may ask.

Every Mandate method is listed here by the request fields that name an organization; the
plumbing (runtime/interceptors.py) holds each one given to the caller's scope
(`callers.require_organization`) as soon as the request is parsed, before anything is read or
run. Where the organization is that of something the request names (a resource, an
invitation), the code that finds it asks the same rule, before it says anything else about it:

- the check plane (checks/rpc.py): the organization the resource belongs to, in the
  view that answers (now, or the past asked for); `ListResources` lists the caller's
  organizations' resources only;
- `DeleteResource`, `PutResource` of a resource that belongs to an organization now or under a
  parent, and the roles on one resource (`GrantResourceRole`, `RevokeResourceRole`,
  `ListResourceRoles`): the resource's organization;
- `CancelInvitation`: the invitation's organization; `AcceptClientInvitation`: the partner's.

A method that is not listed is refused to a limited caller (fail closed): a new RPC is open to
limited callers only once it is listed here.
"""

from __future__ import annotations

from mandate.errors import OutsideCallerScope
from mandate.runtime.callers import Caller, require_organization

CONNECTION = ("partner_id", "client_id")
MEMBER = ("organization_id",)

# Method -> the request fields naming organizations; "" (not given) is left to validation, and for
# events means "every organization the caller may see" (events/rpc.py).
NAMED_BY: dict[str, tuple[str, ...]] = {
    # The check plane: the resource's organization (checks/rpc.py).
    "AuthorizationService.Check": (),
    "AuthorizationService.BatchCheck": (),
    "AuthorizationService.ListActions": (),
    "AuthorizationService.ListResources": (),
    "AuthorizationService.ListActors": (),
    "AuthorizationService.Explain": (),
    "AuthorizationService.AccessReview": ("organization_id",),
    "EventService.ListEvents": ("organization_id",),
    "EventService.Watch": ("organization_id",),
    "DirectoryService.LinkOrganizations": ("organization_id", "other_organization_id"),
    "DirectoryService.PutResource": ("organization_id",),
    "DirectoryService.DeleteResource": (),
    "DirectoryService.GrantResourceRole": (),
    "DirectoryService.RevokeResourceRole": (),
    "DirectoryService.ListResourceRoles": (),
    "MembershipService.InviteMember": MEMBER,
    "MembershipService.CancelInvitation": (),
    "MembershipService.ListInvitations": MEMBER,
    "MembershipService.ListMembers": MEMBER,
    "MembershipService.RemoveMember": MEMBER,
    "MembershipService.PauseMember": MEMBER,
    "MembershipService.ResumeMember": MEMBER,
    "MembershipService.SetMemberRole": MEMBER,
    "MembershipService.TagPartnerEmployee": MEMBER,
    "PartnerService.InviteClient": ("partner_id",),
    "PartnerService.CreateInviteLink": ("partner_id",),
    "PartnerService.AcceptClientInvitation": ("client_id",),
    "PartnerService.ListClients": ("partner_id",),
    "PartnerService.ExportClients": ("partner_id",),
    "PartnerService.ListPartners": ("client_id",),
    "PartnerService.UpdateGrantedScopes": CONNECTION,
    "PartnerService.RequestDisconnect": CONNECTION,
    "PartnerService.AcceptDisconnect": CONNECTION,
    "PartnerService.DeclineDisconnect": CONNECTION,
    "PartnerService.RevokePartner": CONNECTION,
    "PartnerService.AssignClient": CONNECTION,
    "PartnerService.UnassignClient": CONNECTION,
    "PartnerService.ApprovePartnerEmployee": CONNECTION,
    "PartnerService.RevokePartnerEmployee": CONNECTION,
}

# Methods that change what is in no organization yet, or in any: never for a limited caller.
UNSCOPED = {
    "DirectoryService.RegisterUser": "signing up completes the person's invitations in any organization",
    "DirectoryService.CreateOrganization": "a new organization is in no caller's scope",
    # Administration reads and writes the whole store.
    "AdminService.Import": "it writes every organization",
    "AdminService.Export": "it reads every organization",
    "AdminService.ErasePerson": "a person is in every organization they belong to",
}


def method_key(method: str) -> str:
    """'/mandate.v1.MembershipService/InviteMember' -> 'MembershipService.InviteMember'."""
    service, _, name = method.strip("/").partition("/")
    return f"{service.rsplit('.', 1)[-1]}.{name}"


def check_request(method: str, request, caller: Caller | None) -> None:
    """OutsideCallerScope unless a limited caller may send this request: each organization it
    names is one of the caller's. Reads nothing but the request."""
    if caller is None or caller.organizations is None:
        return
    key = method_key(method)
    fields = NAMED_BY.get(key)
    if fields is None:
        raise OutsideCallerScope(f"caller {caller.name} is limited to some organizations (callers file: "
                                 f"organizations); {key} is not for such a caller: "
                                 f"{UNSCOPED.get(key, 'it is not known to stay within them')}")
    for field in fields:
        value = getattr(request, field)
        if value:
            require_organization(caller, value)
