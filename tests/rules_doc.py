"""Keeps docs/rules.md true: for each domain rule (R1 to R24) it lists where the rule lives, read from
the tree itself, between the markers `<!-- where Rn -->` and `<!-- /where -->`:

- the policy lines whose comment names the rule (`policies/**/*.polar`, as `file:line`);
- the RPCs whose comment in `protos/` names it;
- the Python modules that carry it (comments and docstrings in `server/mandate/`);
- the tests named after it (`test_..._rN_...` in `tests/`, and `policies/tests/rNN_*.yaml`).

A rule named in a range ("R15 to R18") counts for every rule of the range.

    .venv/bin/python -m tests.rules_doc          # rewrite the generated parts of docs/rules.md
    .venv/bin/python -m tests.rules_doc --check  # exit 1 if they are stale (tests/public/test_rules_doc.py)
"""

from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

from mandate.engine.policy import rule_names

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "rules.md"
RULES = range(1, 25)
BLOCK = re.compile(r"(<!-- where R(\d+) -->\n)(.*?)(<!-- /where -->)", re.S)
RPC = re.compile(r"^\s*rpc\s+(\w+)\(")


def rules_named(text: str) -> set[int]:
    """The rules a text names, read as Explain reads a policy comment."""
    return {int(name[1:]) for name in rule_names(text)} & set(RULES)


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def policy_lines() -> dict[int, list[str]]:
    found = defaultdict(list)
    for path in sorted((ROOT / "policies").rglob("*.polar")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            comment = line.partition("#")[2]
            for rule in rules_named(comment):
                found[rule].append(f"{_relative(path)}:{number}")
    return found


def rpcs() -> dict[int, list[str]]:
    """A comment names the rules of the RPCs right below it (a group of RPCs shares one comment)."""
    found = defaultdict(list)
    for path in sorted((ROOT / "protos").rglob("*.proto")):
        service, comment, after_rpc = "", "", False
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith("service "):
                service, comment = stripped.split()[1], ""
            elif stripped.startswith("//"):
                comment = (comment + " " if not after_rpc else "") + stripped
                after_rpc = False
            elif (match := RPC.match(line)) and service:
                found_rules = rules_named(comment)
                for rule in found_rules:
                    found[rule].append(f"{service}.{match.group(1)}")
                after_rpc = True
            else:
                comment, after_rpc = "", False
    return found


def modules() -> dict[int, list[str]]:
    found = defaultdict(list)
    for path in sorted((ROOT / "server" / "mandate").rglob("*.py")):
        if "v1" in path.relative_to(ROOT / "server" / "mandate").parts:
            continue  # generated stubs repeat the protos' comments
        for rule in sorted(rules_named(path.read_text())):
            found[rule].append(_relative(path))
    return found


def tests() -> dict[int, list[str]]:
    found = defaultdict(list)
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"):
                for rule in re.findall(r"(?:^|_)r(\d{1,2})(?=_|$)", node.name):
                    if int(rule) in RULES:
                        found[int(rule)].append(f"{_relative(path)}::{node.name}")
    for path in sorted((ROOT / "policies" / "tests").glob("*.yaml")):
        for rule in re.findall(r"(?:^|_)r(\d{2})(?=_)", path.stem):
            found[int(rule)].append(_relative(path))
    return {rule: sorted(set(names)) for rule, names in found.items()}


def where(rule: int, sources: dict[str, dict[int, list[str]]]) -> str:
    lines = []
    for label, found in sources.items():
        entries = found.get(rule, [])
        lines.append(f"- {label}: " + (", ".join(f"`{entry}`" for entry in entries) if entries else "none"))
    return "\n".join(lines) + "\n"


def render(text: str) -> str:
    sources = {"Policy": policy_lines(), "RPCs": rpcs(), "Code": modules(), "Tests": tests()}
    return BLOCK.sub(lambda m: m.group(1) + where(int(m.group(2)), sources) + m.group(4), text)


def main(argv: list[str]) -> int:
    current = DOC.read_text()
    wanted = render(current)
    if "--check" in argv:
        if wanted != current:
            print("docs/rules.md is stale: run .venv/bin/python -m tests.rules_doc", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
