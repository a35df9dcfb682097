"""Worlds: a known set of facts, in the world format (docs/world-format.md, read by
mandate.worldfile), loaded straight into a store. Used by `mandate policy test`, `mandate
policy matrix`, `mandate serve --ephemeral --world FILE` and `mandate.testing`; `mandate
import` reads the same files into a real store, with the business rules checked.

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
        - {resource: "Post:hello", user: bob, role: editor}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.exc import IntegrityError

from mandate import errors
from mandate.store import models
from mandate.store.db import Store
from mandate.worldfile import Record, WorldError, read_records, world_records

__all__ = ["WorldError", "read_yaml", "read_world", "load_world", "EphemeralApp"]


def read_yaml(path: Path | str) -> dict[str, Any]:
    with open(path) as handle:
        try:
            data = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            raise WorldError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise WorldError(f"{path}: the file must be a mapping with a 'world' key")
    return data


def read_world(path: Path | str) -> list[Record] | dict[str, Any]:
    """The records of a world file, YAML or JSON Lines (docs/world-format.md); a YAML world with
    nested resources or roles on one resource as its `world:` mapping (see `load_world`)."""
    with open(path, encoding="utf-8") as handle:
        head = handle.read(4096)
    if not head.lstrip().startswith("{"):
        data = read_yaml(path)
        world = data.get("world") if isinstance(data.get("world"), dict) else None
        if world is not None and ("resource_roles" in world or any(
                isinstance(spec, dict) and spec.get("parent") for spec in world.get("resources") or [])):
            return world
    try:
        return list(read_records(path))
    except errors.DomainError as error:
        raise WorldError(f"{path}: {error.message}") from None


def load_world(store: Store, world: dict[str, Any] | list[Record] | None, policy=None) -> int:
    """Write the world (a `world:` mapping, or the records of a world file) into the store in one
    transaction; returns its revision. A test world may hold what the service would refuse
    (docs/policy-tests.md): only its references are checked. Owners that are not among the
    users are added. Nested `resources` (with a `parent`) and `resource_roles` of a mapping are
    written after the rest, in a second transaction (with `policy`, checked against its types
    and roles)."""
    from mandate.domain.admin import Admin

    later: dict[str, Any] = {}
    if isinstance(world, dict) and ("resource_roles" in world or any(
            isinstance(spec, dict) and spec.get("parent") for spec in world.get("resources") or [])):
        world = dict(world)
        resources = list(world.get("resources") or [])
        world["resources"] = [spec for spec in resources if not (isinstance(spec, dict) and spec.get("parent"))]
        later = {"resources": [spec for spec in resources if isinstance(spec, dict) and spec.get("parent")],
                 "resource_roles": world.pop("resource_roles", None) or []}
    revision = _import(store, world, Admin)
    if later:
        for key in later:
            for number, spec in enumerate(later[key]):
                if not isinstance(spec, dict):
                    raise WorldError(f"{key}[{number}]: must be a mapping, not {spec!r}")
        try:
            with store.write("world") as tx:
                _load_resources(tx.session, later, tx.revision, policy)
                tx.emit("world.loaded", resources=len(later["resources"]), roles=len(later["resource_roles"]))
            revision = tx.revision
        except IntegrityError as error:
            raise WorldError(f"world: an entry names something that does not exist or repeats one "
                             f"({error.orig})") from None
    return revision


def _import(store: Store, world, Admin) -> int:
    records = list(world) if isinstance(world, list) else list(world_records(world))
    users = {str(r.fields.get("id")) for r in records if r.kind == "user"}
    for record in [r for r in records if r.kind == "organization"]:
        owner = record.fields.get("owner")
        if owner not in (None, "") and str(owner) not in users:
            users.add(str(owner))
            records.insert(0, Record(0, "user", {"id": owner}))
    try:
        return Admin(store).import_records(records, "fail", checked=False).revision
    except errors.DomainError as error:
        raise WorldError(f"world: {error.message}") from None


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

    def __init__(self, policy_dir: Path | str, world: dict[str, Any] | list[Record] | None = None, policy=None):
        import shutil
        import tempfile

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
