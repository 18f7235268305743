"""Settings with ranges: how a schema field declares its allowed values (:func:`setting`), how a
config is checked against them (:func:`check_settings`), and the error that names a bad key
(:class:`ConfigError`); :func:`check_writable` checks a directory a setting names."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import field
from pathlib import Path
from typing import Any

from omegaconf import MISSING


class ConfigError(ValueError):
    """A config value is unusable; the message names the key (e.g. ``tuner.mode``)."""


def setting(
    default: Any = MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    default_factory: Any = None,
    min_items: int | None = None,
) -> Any:
    """A schema field with an allowed range, e.g. ``epochs: int = setting(5, ge=1)``.

    :func:`check_settings` enforces it (``None`` passes, for optional settings) before the
    study is created. Hydra and OmegaConf check types only; ranges are nasfw's. For a list
    field (``default_factory=...``) the range applies to each item, and ``min_items`` is the
    fewest items it may hold, e.g. ``gpus: list[int] | None = setting(None, ge=0)``.

    Rules between fields go in the schema's ``check()`` method (see :func:`check_settings`).
    """
    bounds = {k: v for k, v in {"ge": ge, "gt": gt, "le": le, "lt": lt}.items() if v is not None}
    metadata: dict[str, Any] = {"nasfw.range": bounds}
    if min_items is not None:
        metadata["nasfw.min_items"] = min_items
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


_RANGE_TEXT = {"ge": ">= {}", "gt": "> {}", "le": "<= {}", "lt": "< {}"}
_RANGE_OK = {
    "ge": lambda v, b: v >= b,
    "gt": lambda v, b: v > b,
    "le": lambda v, b: v <= b,
    "lt": lambda v, b: v < b,
}


def check_settings(node: Any, prefix: str = "") -> None:
    """Check a config against its schema's ranges; raise :class:`ConfigError` naming the key.

    ``node`` is a composed ``DictConfig`` (the whole run's, or one group's with ``prefix`` such
    as ``"tuner"``) or a schema dataclass instance. Every value is checked against the range
    its field declares with :func:`setting`, and no float may be NaN or infinite (no setting
    means one). Nested nodes and lists are walked; a list field's range applies to each of its
    items (named ``key[i]``), and its ``min_items`` to its length.

    Then the schema's own rules between its fields: a schema dataclass may define
    ``check(self, key: str) -> None``, raising :class:`ConfigError` naming the keys under
    ``key`` (the node's place, e.g. ``"pruner"``: ``pruner.min_resource``). It runs once every
    field is in range, on the schema's instance.
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, ListConfig | list | tuple):
        for i, item in enumerate(node):
            check_settings(item, f"{prefix}[{i}]")
        return
    if isinstance(node, DictConfig):
        schema = OmegaConf.get_type(node)
        keys = [str(k) for k in node if not OmegaConf.is_missing(node, k)]

        def value_of(key: str) -> Any:
            return node[key]
    elif dataclasses.is_dataclass(node) and not isinstance(node, type):
        schema = type(node)
        keys = [f.name for f in dataclasses.fields(node)]

        def value_of(key: str) -> Any:
            return getattr(node, key)
    else:
        return
    fields = (
        {f.name: f for f in dataclasses.fields(schema)}
        if schema is not None and dataclasses.is_dataclass(schema)
        else {}
    )
    for key in keys:
        name = f"{prefix}.{key}" if prefix else key
        value = value_of(key)
        if value is MISSING:
            continue
        metadata = fields[key].metadata if key in fields else {}
        if isinstance(value, ListConfig | list | tuple):
            fewest = metadata.get("nasfw.min_items")
            if fewest is not None and len(value) < fewest:
                raise ConfigError(
                    f"{name}={list(value)} needs at least {fewest} item{'s' * (fewest != 1)}"
                )
            for i, item in enumerate(value):
                _check_value(item, f"{name}[{i}]", metadata.get("nasfw.range", {}))
            continue
        _check_value(value, name, metadata.get("nasfw.range", {}))
    rule = getattr(schema, "check", None) if schema is not None else None
    if callable(rule):
        from omegaconf.errors import OmegaConfBaseException

        try:
            instance = node if not isinstance(node, DictConfig) else OmegaConf.to_object(node)
        except OmegaConfBaseException:  # a value still missing: named where it is read
            return
        rule(instance, prefix or "")


def _check_value(value: Any, name: str, bounds: dict[str, float]) -> None:
    """One value against its field's range (numbers), or walked (nodes, lists)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}={value} must be a finite number")
    if not isinstance(value, int | float) or isinstance(value, bool):
        check_settings(value, name)
        return
    for kind, bound in bounds.items():
        if not _RANGE_OK[kind](value, bound):
            wanted = " and ".join(_RANGE_TEXT[k].format(b) for k, b in bounds.items())
            raise ConfigError(f"{name}={value} is out of range: it must be {wanted}")


def check_writable(directory: str | Path, key: str) -> None:
    """Raise :class:`ConfigError` naming ``key`` unless files can be written in ``directory``.

    Missing directories are created to try, then removed again (a run that fails later leaves
    no empty folders), so the check is a real write, right for root and read-only mounts too.
    """
    import os
    import tempfile

    path = Path(directory).expanduser().absolute()
    chain = [path, *path.parents]  # the folder, then the ones above it
    for attempt in range(10):
        created: list[Path] = []  # by this check, the deepest first
        try:
            # Searches started together check the same missing folder: each removes only
            # what it made, and one's removal between the other's mkdir and write is retried.
            for folder in reversed(chain):
                try:
                    folder.mkdir()
                    created.insert(0, folder)
                except FileExistsError:
                    pass
            with tempfile.NamedTemporaryFile(dir=path, prefix=".nasfw-write-check-"):
                pass
            return
        except FileNotFoundError as err:
            if attempt == 9:
                raise ConfigError(f"{key}: cannot write in {path} ({err.strerror})") from None
        except OSError as err:
            raise ConfigError(
                f"{key}: cannot write in {path} ({err.strerror or type(err).__name__})"
            ) from None
        finally:
            for folder in created:
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
