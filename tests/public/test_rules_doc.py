"""docs/rules.md states the domain rules R1 to R24 in the project's own words, and says where each
one lives: the policy lines, the RPCs, the modules and the tests. Its "Where" parts are generated
from the tree (tests/rules_doc.py), so they cannot drift from it."""

import re

from tests import rules_doc


def test_rules_doc_where_parts_are_current():
    current = rules_doc.DOC.read_text()
    assert rules_doc.render(current) == current, "run: .venv/bin/python -m tests.rules_doc"


def test_every_rule_is_stated_placed_and_tested():
    text = rules_doc.DOC.read_text()
    places = {**rules_doc.policy_lines()}
    code, tested = rules_doc.modules(), rules_doc.tests()
    for rule in rules_doc.RULES:
        assert f"### R{rule} " in text and f"<!-- where R{rule} -->" in text
        assert places.get(rule) or code.get(rule), f"R{rule} is carried nowhere"
        assert tested.get(rule), f"no test is named after R{rule}"


def test_every_doc_the_tree_names_exists():
    """A comment, a message or a doc that names a doc points at a file that is there."""
    named = set()
    for folder in ("server", "protos", "policies", "tests", "docs", "bench", "examples"):
        for path in (rules_doc.ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {".py", ".proto", ".polar", ".md", ".yaml"}:
                named.update(re.findall(r"docs/[\w./-]+?\.md", path.read_text(errors="ignore")))
    named.update(re.findall(r"docs/[\w./-]+?\.md", (rules_doc.ROOT / "README.md").read_text()))
    missing = sorted(name for name in named if not (rules_doc.ROOT / name).is_file())
    assert named and missing == []
