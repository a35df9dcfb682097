"""The fact index held compactly (issue 22): one string object per id, equal values shared,
and an index loaded by another process carried on from its revision (the parent of
`--processes` loads it once before forking its server processes). On every engine."""

from __future__ import annotations

from mandate.clock import SystemClock
from mandate.engine.index import FactIndex
from mandate.runtime.app import App

from tests.conftest import POLICY_DIR
from tests.factories import World


def facts(index: FactIndex) -> dict:
    """What the index holds, without the empty containers removals leave behind."""
    def nonempty(mapping):
        return {key: value for key, value in mapping.items() if value}

    return {
        "users": set(index.users), "organizations": set(index.organizations),
        "resources": dict(index.resources), "by_organization": nonempty(index.by_organization),
        "memberships": nonempty(index.memberships), "members": nonempty(index.members),
        "partners": nonempty(index.partners), "clients": nonempty(index.clients),
        "assignments": nonempty(index.assignments), "links": nonempty(index.links),
    }


def fresh(app: App) -> FactIndex:
    index = FactIndex(app.store, SystemClock())
    index.catch_up()
    return index


def partner_world(world: World):
    partner, client = world.organization(name="Partner"), world.organization(name="Client")
    world.connect(partner, client)
    staff = [world.member(partner, "colleague", partner_employee=True) for _ in range(3)]
    return partner, client, staff


def test_an_index_loaded_before_writes_is_carried_on_like_a_fresh_load(app, world, database_url):
    partner, client, staff = partner_world(world)
    project = world.project(client)
    world.assign(partner, client, staff[0])
    loaded = fresh(app)  # as the parent of --processes loads it, before the writes below
    world.assign(partner, client, staff[1], approve=False)
    app.partners.unassign_client(world.owner_of(partner), partner, client, staff[0])
    app.memberships.pause_member(world.owner_of(partner), partner, staff[2])
    world.project(client)
    later = world.organization(name="Later")
    world.member(later, "colleague", staff[0])

    carried = App(database_url, POLICY_DIR, index=loaded)
    try:
        assert carried.index is loaded and loaded.store is carried.store
        assert loaded.revision == app.index.revision == fresh(app).revision
        assert facts(loaded) == facts(app.index) == facts(fresh(app))
        for user in staff:
            for action in ("read", "edit"):
                assert carried.authorizer.check("User", user, action, "Project", project) == \
                    world.allowed(user, action, "Project", project)
    finally:
        carried.close()


def test_ids_are_one_string_and_equal_values_are_shared(app, world):
    partner, client, staff = partner_world(world)
    other = world.organization(name="Other")
    world.member(other, "colleague", staff[0])
    world.member(other, "colleague", staff[1])
    for index in (app.index, fresh(app)):
        ids = {user: user for user in index.users}
        for user in staff:
            member_key = next(key for key in index.memberships if key == user)
            assert member_key is ids[user]
            assert next(u for u in index.members[partner] if u == user) is ids[user]
        # Two colleagues, active, tagged or not: one membership value for each kind.
        assert index.memberships[staff[0]][partner] is index.memberships[staff[1]][partner]
        assert index.memberships[staff[0]][other] is index.memberships[staff[1]][other]
        assert index.memberships[staff[0]][other] != index.memberships[staff[0]][partner]


def test_a_shared_assignment_map_is_replaced_never_changed(app, world):
    partner, client, staff = partner_world(world)
    second = world.organization(name="Second partner")
    world.connect(second, client)
    world.member(second, "colleague", staff[0], partner_employee=True)
    world.assign(partner, client, staff[0])
    world.assign(partner, client, staff[1])
    index = app.index
    assert index.assignments[(staff[0], client)] == {partner: True}
    assert index.assignments[(staff[0], client)] is index.assignments[(staff[1], client)]

    # staff[0] moves to the second partner (one partner record per client): staff[1]'s map stays.
    app.partners.unassign_client(world.owner_of(partner), partner, client, staff[0])
    world.assign(second, client, staff[0], approve=False)
    assert index.assignments[(staff[0], client)] == {second: False}
    assert index.assignments[(staff[1], client)] == {partner: True}

    app.partners.unassign_client(world.owner_of(partner), partner, client, staff[1])
    assert (staff[1], client) not in index.assignments
    assert facts(index) == facts(fresh(app))
