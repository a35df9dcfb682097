"""Keeps the README's settings table the one `mandate.config.SETTINGS` declares (between the
markers `<!-- settings ... -->` and `<!-- /settings -->`).

    .venv/bin/python -m tests.settings_doc          # rewrite the table in README.md
    .venv/bin/python -m tests.settings_doc --check  # exit 1 if it is stale (tests/test_settings.py)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mandate.config import settings_table

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"(<!-- settings:[^\n]*-->\n)(.*?)(<!-- /settings -->)", re.S)


def current(text: str) -> str:
    return BLOCK.sub(lambda match: match.group(1) + settings_table() + match.group(3), text, count=1)


def main(argv: list[str]) -> int:
    text = README.read_text()
    if not BLOCK.search(text):
        print("README.md has no settings markers", file=sys.stderr)
        return 1
    fresh = current(text)
    if "--check" in argv:
        if fresh != text:
            print("README.md's settings table is stale: run .venv/bin/python -m tests.settings_doc", file=sys.stderr)
            return 1
        return 0
    README.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
