#!/usr/bin/env python3
"""Write README.md from docs/index.md, the docs site's home page, so the two never drift.

    python scripts/readme.py           # rewrite README.md
    python scripts/readme.py --check   # exit 1 if README.md is not what docs/index.md gives

The page's links to other pages (``tuners.md``) become links into ``docs/`` (``docs/tuners.md``);
everything else is copied as it is. ``tests/test_docs.py`` runs the check.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "docs" / "index.md"
README = REPO / "README.md"
NOTE = "<!-- Generated from docs/index.md by scripts/readme.py: edit that page, then run it. -->"
# A Markdown link or image target that is a path relative to the page.
_RELATIVE = re.compile(r"\]\((?![a-z][a-z0-9+.-]*:|#|/)([^)\s]+)\)")


def render(page: str) -> str:
    """README.md's text for the home page's text ``page``."""
    return _RELATIVE.sub(r"](docs/\1)", page).rstrip() + "\n\n" + NOTE + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check README.md")
    args = parser.parse_args()
    wanted = render(SOURCE.read_text())
    if args.check:
        if README.read_text() != wanted:
            print("README.md differs from docs/index.md: run python scripts/readme.py")
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
