"""Names defined once (server/mandate/names.py): the README's reason table, the proto comments,
the errors and the service's code use the same reasons, and the shipped policy declares the
same actions the service asks about (R23)."""

from __future__ import annotations

import inspect
import re

from mandate import errors
from mandate.engine.policy import Policy
from mandate.names import SERVICE_ACTIONS, ConnectionStatus, EmployeeApproval, EventType, MemberStatus, Reason, Role

from tests.conftest import POLICY_DIR, ROOT

REASON_TOKEN = re.compile(r"`([A-Z][A-Z_]{3,})`")


def readme_reason_table() -> dict[str, set[str]]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| code | reasons |"):]
    table = table[:table.index("\n\n")]
    rows = {}
    for line in table.splitlines()[2:]:
        code, reasons = line.strip("|").split("|", 1)
        rows[code.strip()] = set(REASON_TOKEN.findall(reasons))
    return rows


def test_r23_the_readme_reason_table_lists_exactly_the_reasons():
    listed = set().union(*readme_reason_table().values())
    assert listed == {r.value for r in Reason}


def test_r23_every_error_class_carries_a_defined_reason():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.DomainError)]
    assert len(classes) > 10
    for cls in classes:
        assert cls.reason in set(Reason), cls


def test_r23_no_reason_is_spelled_out_in_the_service_code():
    """A reason passed to an error as a string literal would escape the table."""
    literal = re.compile(r'"([A-Z][A-Z_]{4,})"')
    found = []
    for path in sorted((ROOT / "server" / "mandate").rglob("*.py")):
        if path.name in ("names.py", "client.py") or "/v1/" in str(path):
            continue  # client.py names status codes (its retry policy), not reasons
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for word in literal.findall(line):
                if word in {r.value for r in Reason} and word != "INTERNAL":
                    found.append(f"{path.relative_to(ROOT)}:{number}: {word}")
    assert found == []


def test_r23_the_proto_comments_name_only_defined_reasons():
    for path in sorted((ROOT / "protos").rglob("*.proto")):
        for line in path.read_text().splitlines():
            comment = line.partition("//")[2]
            for word in re.findall(r"\b([A-Z][A-Z]+_[A-Z_]+)\b", comment):
                assert word in set(Reason), f"{path.name}: {word}"


def test_r23_the_policy_declares_exactly_the_actions_the_service_asks_about():
    policy = Policy(POLICY_DIR)
    for resource_type, actions in SERVICE_ACTIONS.items():
        assert set(policy.permissions[resource_type]) == {a.value for a in actions}, resource_type


def test_r22_docs_events_lists_exactly_the_event_types():
    text = (ROOT / "docs" / "events.md").read_text()
    listed = re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", text, re.M)
    assert sorted(listed) == sorted(t.value for t in EventType)
    assert len(listed) == len(set(listed))


def test_r22_no_event_type_is_spelled_out_in_the_service_code():
    """An event type written as a string literal would escape the enum (and docs/events.md)."""
    types = {t.value for t in EventType}
    found = []
    for path in sorted((ROOT / "server" / "mandate").rglob("*.py")):
        if path.name == "names.py" or "/v1/" in str(path):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for word in re.findall(r'"([a-z_]+\.[a-z_]+)"', line):
                if word in types:
                    found.append(f"{path.relative_to(ROOT)}:{number}: {word}")
    assert found == []


def _listed_after(text: str, row_start: str, key: str) -> set[str]:
    """The backticked words after `key` in the docs table row starting with `row_start`, up to ';'."""
    row = next(line for line in text.splitlines() if line.startswith(row_start))
    return set(re.findall(r"`([a-z_]+)`", row.split(key, 1)[1].split(";", 1)[0]))


def test_r2_the_docs_and_protos_list_exactly_the_roles_and_states():
    roles = {r.value for r in Role}
    world = (ROOT / "docs" / "world-format.md").read_text()
    assert _listed_after(world, "| `member` ", "`role`:") == roles
    assert _listed_after(world, "| `member` ", "`status`:") == {s.value for s in MemberStatus}
    assert _listed_after(world, "| `connection` ", "`status`:") == {s.value for s in ConnectionStatus}
    assert _listed_after(world, "| `connection` ", "`employee_approval`:") == {a.value for a in EmployeeApproval}
    tests_doc = (ROOT / "docs" / "policy-tests.md").read_text()
    assert _listed_after(tests_doc, "| `members` ", "`role`:") == roles
    assert _listed_after(tests_doc, "| `connections` ", "`status`:") == {s.value for s in ConnectionStatus}
    common = (ROOT / "protos" / "mandate" / "v1" / "common.proto").read_text()
    member_roles = [set(re.findall(r'"([a-z_]+)"', line)) for line in common.splitlines()
                    if "string role = " in line and '"' in line]
    assert member_roles == [roles]
