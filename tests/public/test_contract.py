"""The API's names, read from a running server through reflection as a client generator reads them:
every service, RPC and field that clients are written against is there, with its type
(tests/contract.py holds the table; names are only ever added)."""

from tests.contract import CONTRACT, problems


def test_every_name_of_the_contract_is_served(server_address):
    checked, found = problems(server_address)
    assert found == []
    assert checked == sum(len(rpcs) for rpcs in CONTRACT.values())
