"""Test data through the domain services (the same code the RPCs call), so every fixture
world obeys the rules it is built under."""

from __future__ import annotations

import itertools

from mandate.runtime.app import App

_numbers = itertools.count(1)


class World:
    def __init__(self, app: App):
        self.app = app

    def user(self, name: str | None = None) -> str:
        name = name or f"user{next(_numbers)}"
        user, _ = self.app.directory.register_user(f"{name}-{next(_numbers)}@example.com", name.title())
        return user.id

    def email(self, user_id: str) -> str:
        from mandate.store import models

        with self.app.store.read() as session:
            return session.get(models.User, user_id).email

    def organization(self, owner_id: str | None = None, *, currency: str = "EUR", seat_limit: int | None = 0,
                     name: str = "Org") -> str:
        owner_id = owner_id or self.user("owner")
        return self.app.directory.create_organization(owner_id, name, currency, seat_limit).id

    def owner_of(self, organization_id: str) -> str:
        return self.app.directory.get_organization(organization_id).owner_id

    def member(self, organization_id: str, role: str = "colleague", user_id: str | None = None, *,
               partner_employee: bool = False) -> str:
        user_id = user_id or self.user(role)
        owner = self.owner_of(organization_id)
        self.app.memberships.invite_member(owner, organization_id, self.email(user_id), role)
        if partner_employee:
            self.app.memberships.tag_partner_employee(owner, organization_id, user_id, True)
        return user_id

    def project(self, organization_id: str, project_id: str | None = None) -> str:
        project_id = project_id or f"proj-{next(_numbers)}"
        self.app.directory.put_resource(self.owner_of(organization_id), "Project", project_id, organization_id)
        return project_id

    def connect(self, partner_id: str, client_id: str, *, scopes=("read", "edit"), granted=None,
                employee_approval: str = "client") -> None:
        """A client invitation by link, accepted by the client's owner."""
        partner_owner = self.owner_of(partner_id)
        currency = self.app.directory.get_organization(partner_id).currency
        link = self.app.partners.create_invite_link(partner_owner, partner_id, "Customer", "", currency,
                                                    list(scopes))
        self.app.partners.accept_client_invitation(
            self.owner_of(client_id), "", link.token, client_id,
            list(scopes if granted is None else granted), employee_approval)

    def assign(self, partner_id: str, client_id: str, user_id: str, *, approve: bool = True) -> None:
        self.app.partners.assign_client(self.owner_of(partner_id), partner_id, client_id, user_id)
        if approve:
            self.app.partners.approve_partner_employee(self.owner_of(client_id), client_id, partner_id, user_id)

    def allowed(self, user_id: str, action: str, resource_type: str, resource_id: str) -> bool:
        return self.app.authorizer.check("User", user_id, action, resource_type, resource_id)
