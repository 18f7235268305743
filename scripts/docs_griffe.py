"""A griffe extension (mkdocstrings, mkdocs.yml) for how nasfw writes its docstrings.

- nasfw documents dataclass fields with ``#`` comments above them (as Hydra's own schemas
  do, and as ``--cfg job`` users read them); the comment becomes the field's docstring, so a
  field added with a comment is in the API reference with no other step.
- Docstrings use Sphinx roles (``:class:`nasfw.Tuner```), which Markdown would show
  verbatim; they become code spans.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):`~?([^`]+)`")


def _markdown(comment: str) -> str:
    """A comment as Markdown: ``<key>`` outside code spans would vanish as an HTML tag."""
    parts = re.split(r"(`[^`]*`)", comment)
    return "".join(p if p.startswith("`") else p.replace("<", "&lt;") for p in parts)


class CommentsAndRoles(griffe.Extension):
    """Field comments become docstrings; Sphinx roles become code spans."""

    def on_attribute_instance(
        self, *, node: ast.AST | griffe.ObjectNode, attr: griffe.Attribute, **kwargs: Any
    ) -> None:
        if attr.docstring is not None or attr.lineno is None or not attr.parent:
            return
        if not attr.parent.is_class:
            return
        filepath = attr.filepath
        if not isinstance(filepath, Path) or filepath not in attr.lines_collection:
            return
        lines = attr.lines_collection[filepath]
        comment: list[str] = []
        number = attr.lineno - 2  # the line above the field (line numbers start at 1)
        while number >= 0 and lines[number].strip().startswith("#"):
            comment.insert(0, lines[number].strip().removeprefix("#").strip())
            number -= 1
        if comment:
            attr.docstring = griffe.Docstring(
                _markdown(" ".join(comment)),
                lineno=number + 2,
                endlineno=attr.lineno - 1,
                parent=attr,
            )

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(r"`\1`", obj.docstring.value)
