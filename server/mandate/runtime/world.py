"""Worlds: a known set of facts, in the world format (docs/world-format.md, read by
mandate.admin.worldfile), loaded straight into a store. Used by `mandate policy test`, `mandate
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

from mandate import errors
from mandate.admin.worldfile import Record, WorldError, read_records, world_records
from mandate.store.db import Store

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


def read_world(path: Path | str) -> list[Record]:
    """The records of a world file, YAML or JSON Lines (docs/world-format.md)."""
    try:
        return list(read_records(path))
    except errors.DomainError as error:
        raise WorldError(f"{path}: {error.message}") from None


def load_world(store: Store, world: dict[str, Any] | list[Record] | None, policy=None) -> int:
    """Write the world (a `world:` mapping, or the records of a world file) into the store in one
    transaction; returns its revision. A test world may hold what the service would refuse
    (docs/policy-tests.md): only its references are checked, and with `policy`, that its
    resources are of types the policy declares and its roles on one resource roles of their
    type. Owners that are not among the users are added."""
    from mandate.admin.service import Admin

    records = list(world) if isinstance(world, list) else list(world_records(world or {}))
    users = {str(r.fields.get("id")) for r in records if r.kind == "user"}
    for record in [r for r in records if r.kind == "organization"]:
        owner = record.fields.get("owner")
        if owner not in (None, "") and str(owner) not in users:
            users.add(str(owner))
            records.insert(0, Record(0, "user", {"id": owner}))
    try:
        return Admin(store, policy=policy).import_records(records, "fail", checked=False).revision
    except errors.DomainError as error:
        raise WorldError(f"world: {error.message}") from None


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

        from mandate.runtime.app import App
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
