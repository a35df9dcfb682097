"""Keeps the documents' settings tables the ones `mandate.runtime.config.SETTINGS` declares. A table
lies between the markers `<!-- settings: ... -->` (every setting, with the README's notes) or
`<!-- settings MANDATE_A MANDATE_B ...: ... -->` (those variables' rows, in that order) and
`<!-- /settings -->`, in README.md and docs/*.md.

    .venv/bin/python -m tests.settings_doc          # rewrite the tables
    .venv/bin/python -m tests.settings_doc --check  # exit 1 if one is stale (tests/runtime/test_settings.py)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mandate.runtime.config import settings_table

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
BLOCK = re.compile(r"(<!-- settings((?: MANDATE_[A-Z_]+)*):[^\n]*-->\n)(.*?)(<!-- /settings -->)", re.S)


def current(text: str) -> str:
    def table(match: re.Match) -> str:
        envs = match.group(2).split() or None
        return match.group(1) + settings_table(envs) + match.group(4)

    return BLOCK.sub(table, text)


def main(argv: list[str]) -> int:
    if not BLOCK.search(DOCUMENTS[0].read_text()):
        print("README.md has no settings markers", file=sys.stderr)
        return 1
    stale = []
    for document in DOCUMENTS:
        text = document.read_text()
        fresh = current(text)
        if fresh == text:
            continue
        stale.append(document.relative_to(ROOT))
        if "--check" not in argv:
            document.write_text(fresh)
    if stale and "--check" in argv:
        print(f"stale settings tables in {', '.join(map(str, stale))}: run .venv/bin/python -m tests.settings_doc",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
