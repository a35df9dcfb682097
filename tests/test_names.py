"""Names defined once (server/mandate/names.py): the README's reason table, the proto comments,
the errors and the service's code use the same reasons, and the shipped policy declares the
same actions the service asks about (R23)."""

from __future__ import annotations

import inspect
import re

from mandate import errors
from mandate.names import SERVICE_ACTIONS, Reason
from mandate.policy import Policy

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
