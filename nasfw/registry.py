"""The plugin manager and what plugins registered.

Built-in plugins and third-party ones are loaded the same way, from the ``nasfw`` entry-point
group. ``NASFW_DISABLE_PLUGINS=name1,name2`` blocks plugins by entry-point name.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from nasfw import hookspecs

if TYPE_CHECKING:
    from nasfw.launcher import Launcher
    from nasfw.ops import OpSpec
    from nasfw.problem import Problem, ProblemConfig
    from nasfw.tuner import Tuner

ENTRY_POINT_GROUP = "nasfw"
DISABLE_ENV = "NASFW_DISABLE_PLUGINS"

hookimpl = pluggy.HookimplMarker("nasfw")


class PluginError(RuntimeError):
    """A plugin is broken, or two plugins claim the same name."""


@dataclass
class Registry:
    """Everything the loaded plugins registered, by name."""

    ops: dict[str, OpSpec] = field(default_factory=dict)
    tuners: dict[str, type[Tuner]] = field(default_factory=dict)
    problems: dict[str, Callable[[ProblemConfig], Problem]] = field(default_factory=dict)
    postprocessors: dict[str, Any] = field(default_factory=dict)
    scorers: dict[str, Any] = field(default_factory=dict)
    launchers: dict[str, type[Launcher[Any]]] = field(default_factory=dict)
    # (group, name) -> config node, stored into Hydra's ConfigStore by ``store_configs``.
    configs: dict[tuple[str, str], Any] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> Any:
        """Look ``name`` up in ``kind`` ("tuners", ...); the error lists what exists."""
        table: dict[str, Any] = getattr(self, kind)
        if name not in table:
            raise PluginError(
                f"no {kind[:-1]} named {name!r} is registered (available: {sorted(table)})"
            )
        return table[name]


def _adder(table: dict[Any, Any], kind: str) -> Callable[[Any, Any], None]:
    def add(name: Any, value: Any) -> None:
        if name in table and table[name] is not value:
            raise PluginError(f"two plugins register the {kind} {name!r}")
        table[name] = value

    return add


def make_plugin_manager(extra_plugins: tuple[object, ...] = ()) -> pluggy.PluginManager:
    """A plugin manager with the hook specs, the entry-point plugins and ``extra_plugins``."""
    pm = pluggy.PluginManager("nasfw")
    pm.add_hookspecs(hookspecs)
    for name in filter(None, (s.strip() for s in os.environ.get(DISABLE_ENV, "").split(","))):
        pm.set_blocked(name)
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
        except Exception as err:
            raise PluginError(
                f"plugin {ep.name!r} ({ep.value}, entry-point group {ENTRY_POINT_GROUP!r}) "
                f"failed to load: {type(err).__name__}: {err}. Block it with "
                f"{DISABLE_ENV}={ep.name} to run without it."
            ) from err
        pm.register(plugin, name=ep.name)
    for plugin in extra_plugins:
        pm.register(plugin)
    pm.check_pending()
    return pm


def collect(pm: pluggy.PluginManager) -> Registry:
    """Call every ``register_*`` hook and gather what the plugins registered."""
    reg = Registry()
    hook = pm.hook
    hook.register_ops(register=lambda spec: _adder(reg.ops, "op")(spec.name, spec))
    hook.register_tuners(register=_adder(reg.tuners, "tuner"))
    hook.register_launchers(register=_adder(reg.launchers, "launcher"))
    hook.register_postprocessors(register=_adder(reg.postprocessors, "post-processor"))
    hook.register_scorers(register=_adder(reg.scorers, "scorer"))
    add_config = _adder(reg.configs, "config option")
    hook.register_configs(register=lambda group, name, node: add_config((group, name), node))

    def add_problem(name: str, loader: Callable[..., Problem], node: Any = None) -> None:
        _adder(reg.problems, "problem")(name, loader)
        add_config(("problem", name), {"name": name} if node is None else node)

    hook.register_problems(register=add_problem)
    hook.register_search_spaces(
        register=lambda name, node: add_config(("search_space", name), node)
    )
    return reg


@cache
def _default() -> tuple[pluggy.PluginManager, Registry]:
    pm = make_plugin_manager()
    return pm, collect(pm)


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (built on first use)."""
    return _default()[0]


def registry() -> Registry:
    """The process-wide registry of everything plugins registered."""
    return _default()[1]


def reset() -> None:
    """Forget the process-wide plugin manager (tests that install plugins call this)."""
    _default.cache_clear()


def config_node(node: Any) -> Any:
    """Turn a registered config node into something Hydra's ConfigStore accepts."""
    from omegaconf import OmegaConf

    if isinstance(node, str | Path):
        path = Path(node)
        if not path.is_file():
            raise PluginError(f"config file {path} registered by a plugin does not exist")
        return OmegaConf.load(path)
    if isinstance(node, Mapping) or dataclasses.is_dataclass(node):
        return node
    raise PluginError(f"cannot use {node!r} as a config node (dataclass, mapping or YAML path)")


def store_configs(reg: Registry) -> None:
    """Put the plugins' config options into Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for (group, name), node in reg.configs.items():
        cs.store(group=group, name=name, node=config_node(node), provider="nasfw-plugins")
