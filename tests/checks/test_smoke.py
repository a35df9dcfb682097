from mandate.v1 import authorization_pb2, common_pb2


def test_r2_colleague_reads_project_through_grpc(client, world):
    org = world.organization()
    colleague = world.member(org, "colleague")
    project = world.project(org)
    reply = client.authorization.Check(authorization_pb2.CheckRequest(
        actor=common_pb2.ObjectRef(type="User", id=colleague), action="read",
        resource=common_pb2.ObjectRef(type="Project", id=project)))
    assert reply.allowed
