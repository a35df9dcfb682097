"""One state per answer: `ListResources` answers from the same index state as `Check` (R24: a
list never names a resource that Check denies). The store is put ahead of the serving index by
a second application writing to the same database; the serving one has no background polling
in tests, so it stays behind until something asks it to catch up."""

from __future__ import annotations

from mandate.runtime.app import App
from mandate.v1 import authorization_pb2, common_pb2

from tests.conftest import POLICY_DIR
from tests.factories import World


def listed(client, user: str, action: str = "read", revision: str = "") -> list[str]:
    return list(client.authorization.ListResources(authorization_pb2.ListResourcesRequest(
        actor=common_pb2.ObjectRef(type="User", id=user), action=action, resource_type="Project",
        at_least_revision=revision)).resource_ids)


def allowed(client, user: str, project: str, action: str = "read") -> bool:
    return client.authorization.Check(authorization_pb2.CheckRequest(
        actor=common_pb2.ObjectRef(type="User", id=user), action=action,
        resource=common_pb2.ObjectRef(type="Project", id=project))).allowed


def test_r24_list_resources_and_check_answer_from_one_state_when_the_store_is_ahead(app, client, world):
    organization = world.organization()
    colleague = world.member(organization, "colleague")
    kept = world.project(organization, "kept")
    other = world.organization(world.owner_of(organization))  # the same owner: may move between them
    moving = world.project(other, "moving")
    assert listed(client, colleague) == [kept]

    writer = App(app.store.url, POLICY_DIR)  # another process, in effect, on the same database
    try:
        writer_world = World(writer)
        writer_world.project(organization, "added-elsewhere")
        writer.directory.put_resource(writer_world.owner_of(organization), "Project", moving, organization)
        writer.directory.delete_resource(writer_world.owner_of(organization), "Project", kept)
    finally:
        writer.close()
    ahead = str(app.store.current_revision())
    assert app.index.revision < int(ahead)

    # The serving index is behind: Check and ListResources agree on the old state.
    assert listed(client, colleague) == [kept]
    assert allowed(client, colleague, kept)
    assert not allowed(client, colleague, "added-elsewhere")
    assert not allowed(client, colleague, moving)
    # Asked for the newer revision, both answer from the new state.
    assert listed(client, colleague, revision=ahead) == sorted(["added-elsewhere", moving])
    assert not allowed(client, colleague, kept)
    assert allowed(client, colleague, "added-elsewhere") and allowed(client, colleague, moving)


def test_r24_list_resources_pages_from_the_index(client, world):
    organization = world.organization()
    colleague = world.member(organization, "colleague")
    projects = sorted(world.project(organization, f"p{n:02}") for n in range(7))
    found, token = [], ""
    while True:
        reply = client.authorization.ListResources(authorization_pb2.ListResourcesRequest(
            actor=common_pb2.ObjectRef(type="User", id=colleague), action="edit", resource_type="Project",
            page_size=3, page_token=token))
        assert len(reply.resource_ids) <= 3
        found += reply.resource_ids
        token = reply.next_page_token
        if not token:
            break
    assert found == projects
