"""``python -m nasfw --help``'s config section: every key with its value and, after it, what
it means (the ``#`` comment above its schema field), its range (:func:`nasfw.setting`, or an
enum's values) and, on each group's line, the option chosen and the plugin that provides it.

Hydra's help template (``hydra.help.template`` in ``conf/config.yaml``) calls it through the
resolver ``${nasfw.help_config:}``, with the composed config.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import textwrap
from functools import cache
from typing import Any

RESOLVER = "nasfw.help_config"
# A key's note starts at this column (or two spaces after a longer line).
COLUMN = 44
# The meaning is the comment's first sentence, cut to this many characters.
MEANING = 100


def register_resolver() -> None:
    """Make ``${nasfw.help_config:}`` available to Hydra's help template."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver(RESOLVER, _resolve, replace=True)


def _resolve(_root_: Any) -> str:
    # The template goes through string.Template after this: "$" must be doubled.
    return config_help(_root_).replace("$", "$$")


def config_help(root: Any) -> str:
    """The annotated YAML of ``root`` (a composed config, with or without its ``hydra`` node,
    whose ``hydra.runtime.choices`` names the option of each group)."""
    from omegaconf import DictConfig, OmegaConf

    choices: dict[str, str] = {}
    if "hydra" in root:
        found = OmegaConf.select(root, "hydra.runtime.choices", default=None)
        if isinstance(found, DictConfig):
            choices = {str(k): str(v) for k, v in found.items() if v is not None}
    lines: list[str] = []
    _walk(root, 0, "", choices, lines)
    return "\n".join(lines)


def _walk(node: Any, depth: int, path: str, choices: dict[str, str], out: list[str]) -> None:
    from omegaconf import DictConfig, OmegaConf

    schema = OmegaConf.get_type(node)
    notes = field_notes(schema) if _is_schema(schema) else {}
    raw = OmegaConf.to_container(node, resolve=False, enum_to_str=True)
    assert isinstance(raw, dict)
    pad = "  " * depth
    for key in node:
        key = str(key)
        if not path and key == "hydra":
            continue
        child = node._get_node(key)
        name = f"{path}.{key}" if path else key
        note = " ".join(n for n in (notes.get(key, ""), _enum_note(child)) if n)
        if isinstance(child, DictConfig) and len(child):
            out.append(_noted(f"{pad}{key}:", _group_note(name, choices) or note))
            _walk(child, depth + 1, name, choices, out)
            continue
        text = _yaml({key: raw[key]}).splitlines()
        out.append(_noted(pad + text[0], note))
        out.extend(pad + line for line in text[1:])


def _noted(line: str, note: str) -> str:
    if not note:
        return line
    return f"{line.ljust(COLUMN - 1)} # {note}" if len(line) < COLUMN - 1 else f"{line}  # {note}"


def _group_note(name: str, choices: dict[str, str]) -> str:
    """``tuner=codeepneat, from plugin 'codeepneat' (nasfw 0.1.0)`` for a group's node;
    ``from plugin ...`` for a lifecycle plugin's ``plugins.<name>``."""
    from nasfw.registry import PLUGINS_GROUP, registry

    if name.startswith(f"{PLUGINS_GROUP}.") and name.count(".") == 1:
        provider = registry().providers.get(("configs", (PLUGINS_GROUP, name.split(".")[1])))
        return f"from {provider}" if provider else ""
    option = choices.get(name)
    if option is None:
        return ""
    provider = registry().providers.get(("configs", (name, option)))
    return f"{name}={option}, " + (f"from {provider}" if provider else "a preset of nasfw")


def _enum_note(child: Any) -> str:
    kind = getattr(getattr(child, "_metadata", None), "ref_type", None)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return "[one of " + ", ".join(member.name for member in kind) + "]"
    return ""


def _yaml(value: dict[str, Any]) -> str:
    """``{key: value}`` as YAML: one line for a scalar or a list of scalars (``[a, b]``),
    block style for nested lists and mappings."""
    import yaml

    ((key, item),) = value.items()
    if isinstance(item, list) and not any(isinstance(i, dict | list) for i in item):
        flow = yaml.safe_dump(item, default_flow_style=True, width=1000).strip()
        return f"{key}: {flow}"
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False, width=1000).rstrip()


def _is_schema(schema: Any) -> bool:
    return isinstance(schema, type) and dataclasses.is_dataclass(schema)


@cache
def field_notes(schema: type) -> dict[str, str]:
    """Each field of ``schema``: the first sentence of the ``#`` comment above it (the
    nearest class in its MRO that has one), then its range, e.g. ``"Generations. >= 1"``."""
    from nasfw.settings import _RANGE_TEXT

    meanings: dict[str, str] = {}
    for cls in reversed(schema.__mro__):
        if _is_schema(cls):
            meanings.update(_comments(cls))
    notes = {}
    for f in dataclasses.fields(schema):
        bounds = f.metadata.get("nasfw.range", {})
        wanted = " and ".join(_RANGE_TEXT[k].format(b) for k, b in bounds.items())
        if "nasfw.min_items" in f.metadata:
            wanted += f"{', ' if wanted else ''}at least {f.metadata['nasfw.min_items']} items"
        parts = [meanings.get(f.name, ""), f"[{wanted}]" if wanted else ""]
        notes[f.name] = " ".join(p for p in parts if p)
    return notes


def _comments(cls: type) -> dict[str, str]:
    """The first sentence of the comment block right above each field ``cls`` declares."""
    try:
        lines, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):  # no source (a class made at run time)
        return {}
    tree = ast.parse(textwrap.dedent("".join(lines)))
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    found = {}
    for statement in body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        comment: list[str] = []
        number = statement.lineno - 2  # the line above (line numbers start at 1)
        while number >= 0 and lines[number].strip().startswith("#"):
            comment.insert(0, lines[number].strip().lstrip("#:").strip())
            number -= 1
        if comment:
            found[statement.target.id] = _first_sentence(" ".join(comment))
    return found


def _first_sentence(text: str) -> str:
    end = text.find(". ")
    sentence = text if end < 0 else text[: end + 1]
    return sentence if len(sentence) <= MEANING else sentence[: MEANING - 1].rstrip() + "…"
