"""mkdocs hooks (``hooks:`` in mkdocs.yml) for nasfw's documentation."""

from __future__ import annotations

import re
from typing import Any

MARKER = "<!-- nasfw: the rest of __all__ -->"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace :data:`MARKER` with a section documenting every name of ``nasfw.__all__`` the
    page does not place itself, so a name made public is in the reference at once."""
    if MARKER not in markdown:
        return markdown
    import nasfw

    placed = set(re.findall(r"^::: nasfw\.(\w+)\s*$", markdown, re.MULTILINE))
    rest = [name for name in nasfw.__all__ if name not in placed]
    section = "## More\n\n" + "\n\n".join(f"::: nasfw.{name}" for name in rest) if rest else ""
    return markdown.replace(MARKER, section)
