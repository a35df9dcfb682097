from mandate.v1 import partner_pb2


def test_assigned_partner_employee_edits_until_the_client_revokes(mandate_client):
    assert mandate_client.check("emma", "edit", "Project:shop-site")
    assert not mandate_client.check("emma", "delete", "Project:shop-site")  # the shop did not grant it
    mandate_client.partner.RevokePartnerEmployee(partner_pb2.AssignmentRequest(
        actor_id="olga", partner_id="agency", client_id="shop", user_id="emma"))
    assert not mandate_client.check("emma", "edit", "Project:shop-site")


def test_lists_and_explains(mandate_client):
    assert mandate_client.list_resources("emma", "read", "Project") == ["shop-site"]
    assert [bool(d) for d in mandate_client.batch_check([("emma", "read", "Project:shop-site"),
                                                         ("nora", "read", "Project:shop-site")])] == [True, False]
    explanation = mandate_client.explain("nora", "read", "Project:shop-site")
    assert not explanation.allowed and explanation.reasons
