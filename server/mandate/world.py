"""Worlds: a known set of users, organizations, memberships, connections, assignments and
projects, written in YAML, loaded straight into a store. Used by `mandate policy test`,
`mandate policy matrix`, `mandate serve --ephemeral --world FILE` and `mandate.testing`.

    world:
      users: [alice, bob]                       # ids; emails are <id>@example.test
      organizations:
        acme: {owner: alice, currency: EUR, seat_limit: 5}
      members:
        - {organization: acme, user: bob, role: colleague, paused: false, partner_employee: false}
      connections:
        - {partner: agency, client: acme, granted: [read, edit], employee_approval: client,
           status: active}
      assignments:
        - {partner: agency, client: acme, user: bob, approved: true}
      links: [[acme, acme-usd]]
      projects:
        - {id: spring, organization: acme}
      resources:                                # any type the policy declares; parents first
        - {type: Page, id: home, organization: acme}
        - {type: Post, id: hello, parent: "Page:home"}
      resource_roles:                           # to any user: the policy decides what it grants
        - {resource: "Post:hello", user: bob, role: editor, access_expires_at: "2030-01-01T00:00:00Z"}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mandate.store import models
from mandate.store.db import Store, utc_now


class WorldError(ValueError):
    """The world file is malformed; the message names the entry."""


def read_yaml(path: Path | str) -> dict[str, Any]:
    with open(path) as handle:
        try:
            data = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            raise WorldError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise WorldError(f"{path}: the file must be a mapping with a 'world' key")
    return data


def load_world(store: Store, world: dict[str, Any], policy=None) -> int:
    """Write the world into the store in one transaction; returns its revision. With `policy`,
    resource types and roles must be ones it declares."""
    if not isinstance(world, dict):
        raise WorldError("world: must be a mapping")
    unknown = set(world) - {"users", "organizations", "members", "connections", "assignments", "links", "projects",
                            "resources", "resource_roles"}
    if unknown:
        raise WorldError(f"world: unknown keys {sorted(unknown)}")
    if not isinstance(world.get("organizations") or {}, dict):
        raise WorldError("world.organizations: must be a mapping of id to {owner: ...}")
    for key in ("members", "connections", "assignments", "projects", "resources", "resource_roles"):
        for number, spec in enumerate(world.get(key) or []):
            if not isinstance(spec, dict):
                raise WorldError(f"{key}[{number}]: must be a mapping, not {spec!r}")
    for org_id, spec in (world.get("organizations") or {}).items():
        if spec is not None and not isinstance(spec, dict):
            raise WorldError(f"organizations.{org_id}: must be a mapping, not {spec!r}")
    now = utc_now()
    with store.write("world") as tx:
        session = tx.session
        revision = tx.revision
        users = list(world.get("users") or [])
        for organization in (world.get("organizations") or {}).values():
            if organization and organization.get("owner") not in users:
                users.append(organization.get("owner"))
        for user_id in users:
            session.add(models.User(id=str(user_id), email=f"{user_id}@example.test".lower(),
                                    display_name=str(user_id), created_at=now, revision=revision))
        session.flush()
        for org_id, spec in (world.get("organizations") or {}).items():
            spec = spec or {}
            owner = _required(spec, "owner", f"organizations.{org_id}")
            session.add(models.Organization(
                id=str(org_id), name=spec.get("name", str(org_id)), currency=spec.get("currency", "EUR"),
                seat_limit=int(spec.get("seat_limit", 0)), owner_id=str(owner), created_at=now, revision=revision))
            session.flush()
            session.add(models.Membership(organization_id=str(org_id), user_id=str(owner), role="owner",
                                          status="active", partner_employee=False, revision=revision))
        session.flush()
        for number, spec in enumerate(world.get("members") or []):
            where = f"members[{number}]"
            role = spec.get("role", "colleague")
            if role not in [r.value for r in models.Role]:
                raise WorldError(f"{where}: unknown role {role!r}")
            organization_id = str(_required(spec, "organization", where))
            session.merge(models.Membership(
                organization_id=organization_id, user_id=str(_required(spec, "user", where)), role=role,
                status="paused" if spec.get("paused") else "active",
                partner_employee=bool(spec.get("partner_employee", False)), revision=revision))
        for number, spec in enumerate(world.get("connections") or []):
            where = f"connections[{number}]"
            partner, client = str(_required(spec, "partner", where)), str(_required(spec, "client", where))
            granted = list(spec.get("granted", []))
            bad = [s for s in granted if s not in (policy.scopes if policy is not None else models.SCOPES)]
            if bad:
                raise WorldError(f"{where}: unknown scopes {bad}")
            if session.get(models.Organization, partner) is None:
                raise WorldError(f"{where}: no organization {partner!r}")
            for key, values, default in (("status", models.ConnectionStatus, "active"),
                                         ("employee_approval", models.EmployeeApproval, "client")):
                if spec.get(key, default) not in [v.value for v in values]:
                    raise WorldError(f"{where}: {key} must be one of {[v.value for v in values]}")
            invitation_id = f"world-{partner}-{client}"
            session.add(models.Invitation(
                id=invitation_id, kind="client", organization_id=partner, email="", role="", status="finished",
                invited_by=session.get(models.Organization, partner).owner_id, customer_name=spec.get(
                    "customer_name", client), customer_number=str(spec.get("customer_number", "")),
                currency=session.get(models.Organization, partner).currency, requested_scopes=granted,
                created_at=now, expires_at=now, revision=revision))
            session.flush()
            session.add(models.Connection(
                partner_id=partner, client_id=client, status=spec.get("status", "active"),
                customer_name=spec.get("customer_name", client), customer_number=str(spec.get("customer_number", "")),
                currency=session.get(models.Organization, partner).currency, requested_scopes=granted,
                granted_scopes=sorted(granted), employee_approval=spec.get("employee_approval", "client"),
                referral=bool(spec.get("referral", False)), connected_at=now, invitation_id=invitation_id,
                revision=revision))
        for number, spec in enumerate(world.get("assignments") or []):
            where = f"assignments[{number}]"
            session.add(models.Assignment(
                partner_id=str(_required(spec, "partner", where)), client_id=str(_required(spec, "client", where)),
                user_id=str(_required(spec, "user", where)), assigned=True,
                client_approved=bool(spec.get("approved", False)), revision=revision))
        for number, pair in enumerate(world.get("links") or []):
            if not isinstance(pair, list) or len(pair) != 2:
                raise WorldError(f"links[{number}]: must be a pair [organization, organization]")
            a, b = str(pair[0]), str(pair[1])
            session.add(models.OrganizationLink(organization_id=a, other_organization_id=b, revision=revision))
            session.add(models.OrganizationLink(organization_id=b, other_organization_id=a, revision=revision))
        for number, spec in enumerate(world.get("projects") or []):
            where = f"projects[{number}]"
            session.add(models.Resource(type="Project", id=str(_required(spec, "id", where)),
                                        organization_id=str(_required(spec, "organization", where)),
                                        deleted=False, revision=revision))
        session.flush()
        _load_resources(session, world, revision, policy)
        tx.emit("world.loaded", users=len(users))
    return revision


def _load_resources(session, world: dict[str, Any], revision: int, policy) -> None:
    """`resources` (parents listed before their children) and `resource_roles`."""
    declared = policy.resource_types if policy is not None else None
    for number, spec in enumerate(world.get("resources") or []):
        where = f"resources[{number}]"
        resource_type, ident = str(_required(spec, "type", where)), str(_required(spec, "id", where))
        if declared is not None and resource_type not in declared:
            raise WorldError(f"{where}: the policy declares no resource type {resource_type!r}")
        parent_type = parent_id = None
        if spec.get("parent"):
            parent_type, _, parent_id = str(spec["parent"]).partition(":")
            parent = session.get(models.Resource, (parent_type, parent_id))
            if parent is None:
                raise WorldError(f"{where}: no resource {spec['parent']!r} listed before it")
            organization_id = parent.organization_id
        else:
            organization_id = str(_required(spec, "organization", where))
        session.add(models.Resource(type=resource_type, id=ident, organization_id=organization_id,
                                    parent_type=parent_type, parent_id=parent_id, deleted=False, revision=revision))
        session.flush()
    for number, spec in enumerate(world.get("resource_roles") or []):
        where = f"resource_roles[{number}]"
        resource_type, _, ident = str(_required(spec, "resource", where)).partition(":")
        role = str(_required(spec, "role", where))
        if policy is not None and role not in policy.roles.get(resource_type, ()):
            raise WorldError(f"{where}: a {resource_type} declares no role {role!r}")
        if session.get(models.Resource, (resource_type, ident)) is None:
            raise WorldError(f"{where}: no resource {spec['resource']!r}")
        session.add(models.ResourceRole(resource_type=resource_type, resource_id=ident,
                                        user_id=str(_required(spec, "user", where)), role=role, granted=True,
                                        granted_by="", access_expires_at=spec.get("access_expires_at") or None,
                                        revision=revision))


def _required(spec: dict, key: str, where: str):
    if not isinstance(spec, dict) or spec.get(key) in (None, ""):
        raise WorldError(f"{where}: '{key}' is required")
    return spec[key]


_migrated_template: Path | None = None


def _remember_template(path: Path) -> None:
    """Keep a copy of a freshly migrated database: later ephemeral stores start from it."""
    import atexit
    import shutil
    import tempfile

    global _migrated_template
    directory = tempfile.mkdtemp(prefix="mandate-template-")
    _migrated_template = Path(shutil.copy(path, Path(directory) / "template.db"))
    atexit.register(shutil.rmtree, directory, True)


class EphemeralApp:
    """An App on a throwaway SQLite database (deleted on close), optionally filled with a world."""

    def __init__(self, policy_dir: Path | str, world: dict[str, Any] | None = None, policy=None):
        import shutil
        import tempfile

        from sqlalchemy.exc import IntegrityError

        from mandate.app import App
        from mandate.store.migrate import upgrade

        self._directory = tempfile.mkdtemp(prefix="mandate-")
        self._remove = shutil.rmtree
        path = Path(self._directory) / "mandate.db"
        self.database_url = f"sqlite:///{path}"
        if _migrated_template is None:
            upgrade(self.database_url)
            _remember_template(path)
        else:
            shutil.copy(_migrated_template, path)
        self.app = App(self.database_url, policy_dir, policy=policy)
        if world:
            try:
                load_world(self.app.store, world, self.app.authorizer.policy)
            except IntegrityError as error:
                self.close()
                raise WorldError(f"world: an entry names something that does not exist or repeats one "
                                 f"({error.orig})") from None
            except BaseException:
                self.close()
                raise
            self.app.index.catch_up()

    def close(self) -> None:
        self.app.close()
        self._remove(self._directory, ignore_errors=True)

    def __enter__(self):
        return self.app

    def __exit__(self, *exc) -> None:
        self.close()
