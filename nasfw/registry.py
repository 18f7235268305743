"""The plugin manager and what plugins registered.

Built-in plugins and third-party ones are loaded the same way, from the ``nasfw`` entry-point
group. ``NASFW_DISABLE_PLUGINS=name1,name2`` blocks plugins by entry-point name.

Mistakes in a plugin fail in one line that names it (:class:`PluginError`): a hook name that
is no nasfw hook (with the closest one), hook arguments the spec does not have, a
``register_*`` hook that returns what it should pass to ``register``, a pruner schema that
does not carry its option's name, two plugins registering one name (both named, with their
distributions), an option asked for whose plugin is blocked. A blocked name that matches no
installed plugin, and a function named like a hook but not decorated with :data:`hookimpl`
(which nasfw would never call), are a :class:`PluginWarning`.

``nasfw.registry`` is this module, and calling it, ``nasfw.registry()``, is :func:`registry`
(the process-wide :class:`Registry`), so both ``nasfw.registry().ops`` and
``nasfw.registry.preset(...)`` work.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
import types
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from nasfw import hookspecs

if TYPE_CHECKING:
    from nasfw.config import PrunerConfig
    from nasfw.launcher import Launcher
    from nasfw.ops import OpSpec
    from nasfw.problem import Problem, ProblemConfig
    from nasfw.search_space import BaseSearchSpace
    from nasfw.tuner import Tuner

ENTRY_POINT_GROUP = "nasfw"
DISABLE_ENV = "NASFW_DISABLE_PLUGINS"

hookimpl = pluggy.HookimplMarker("nasfw")


class PluginError(RuntimeError):
    """A plugin is broken, or two plugins claim the same name."""


class PluginWarning(UserWarning):
    """A plugin setting that is probably a mistake but stops nothing (e.g. a misspelt block)."""


def blocked_names() -> list[str]:
    """The entry-point names ``NASFW_DISABLE_PLUGINS`` blocks, in the order given."""
    return [s.strip() for s in os.environ.get(DISABLE_ENV, "").split(",") if s.strip()]


@dataclass
class Registry:
    """Everything the loaded plugins registered, by name."""

    ops: dict[str, OpSpec] = field(default_factory=dict)
    tuners: dict[str, type[Tuner]] = field(default_factory=dict)
    problems: dict[str, Callable[[ProblemConfig], Problem]] = field(default_factory=dict)
    postprocessors: dict[str, Any] = field(default_factory=dict)
    scorers: dict[str, Any] = field(default_factory=dict)
    launchers: dict[str, type[Launcher[Any]]] = field(default_factory=dict)
    # name -> (schema, factory): the option pruner=<name> and what makes its pruner.
    pruners: dict[str, tuple[type[PrunerConfig], Callable[[Any], Any]]] = field(
        default_factory=dict
    )
    # (group, name) -> config node, stored into Hydra's ConfigStore by ``store_configs``.
    configs: dict[tuple[str, str], Any] = field(default_factory=dict)
    # (kind, name) -> the plugin that registered it, as errors name it: e.g.
    # ("problems", "moons") or ("configs", ("problem", "moons")) -> "plugin 'example'
    # (nasfw-example-plugin 0.1.0)".
    providers: dict[tuple[str, Any], str] = field(default_factory=dict)
    # schema -> kind of search space (register_search_space_kinds).
    space_kinds: dict[type, type[BaseSearchSpace]] = field(default_factory=dict)

    def space(self, config: Any, ops: Mapping[str, OpSpec] | None = None) -> BaseSearchSpace:
        """The search space ``config`` (a ``search_space`` option, typed) configures: of the
        kind registered for its schema (the nearest in its class's ancestry), or the core's
        kind of stages for :class:`nasfw.SearchSpaceConfig`; over ``ops`` (default: every
        registered op).

        Raises:
            PluginError: no kind is registered for the schema.
        """
        from omegaconf import DictConfig, OmegaConf

        from nasfw.config import SearchSpaceConfig
        from nasfw.search_space import SearchSpace

        ops = self.ops if ops is None else ops
        if isinstance(config, DictConfig):
            config = OmegaConf.to_object(config)
        for schema in type(config).__mro__:
            if schema in self.space_kinds:
                return self.space_kinds[schema](config, ops)  # type: ignore[call-arg]
            if schema is SearchSpaceConfig:
                return SearchSpace(config, ops)
        provider = blocked_provider("space_kinds", type(config))
        raise PluginError(
            f"search_space={getattr(config, 'name', '?')}: no kind of search space is "
            f"registered for its schema {type(config).__qualname__}"
            + (f" (plugin {provider!r} provides it and is blocked)" if provider else "")
        )

    def get(self, kind: str, name: str) -> Any:
        """Look ``name`` up in ``kind`` ("tuners", ...); the error lists what exists."""
        table: dict[str, Any] = getattr(self, kind)
        if name not in table:
            provider = blocked_provider(kind, name)
            if provider is not None:
                raise PluginError(
                    f"no {kind[:-1]} named {name!r} is registered: it comes from plugin "
                    f"{provider!r}, which {DISABLE_ENV}={os.environ.get(DISABLE_ENV, '')} "
                    "blocks"
                )
            raise PluginError(
                f"no {kind[:-1]} named {name!r} is registered (available: {sorted(table)})"
            )
        return table[name]


class _Adder:
    """Adds to the tables of a :class:`Registry`, noting which plugin added what, so that
    two plugins claiming one name are both named."""

    def __init__(self, reg: Registry) -> None:
        self.reg = reg
        self.plugin = "a plugin"  # set to the plugin whose hook is being called

    def add(self, field_name: str, kind: str, name: Any, value: Any) -> None:
        table: dict[Any, Any] = getattr(self.reg, field_name)
        key = (field_name, name)
        if name in table and table[name] is not value and table[name] != value:
            first = self.reg.providers.get(key, "a plugin")
            what = f"the {kind} {_shown(name)}"
            if first == self.plugin:
                raise PluginError(f"{first} registers {what} twice, as different things")
            raise PluginError(
                f"two plugins register {what}: {first} and {self.plugin}. Uninstall one, or "
                f"block one with {DISABLE_ENV}=<its entry-point name>"
            )
        table[name] = value
        self.reg.providers.setdefault(key, self.plugin)

    def to(self, field_name: str, kind: str) -> Callable[[Any, Any], None]:
        return lambda name, value: self.add(field_name, kind, name, value)


def _shown(name: Any) -> str:
    """A registered name as errors show it: ``'tpe'``, or ``problem=moons`` for an option."""
    if isinstance(name, tuple) and len(name) == 2:
        group, option = name
        return f"{group}.{option}" if group == PLUGINS_GROUP else f"{group}={option}"
    return repr(name)


def make_plugin_manager(extra_plugins: tuple[object, ...] = ()) -> pluggy.PluginManager:
    """A plugin manager with the hook specs, the entry-point plugins and ``extra_plugins``.

    Raises :class:`PluginError` for a plugin that fails to load or implements a hook wrongly;
    warns (:class:`PluginWarning`) about blocked names that match no installed plugin, since
    a misspelt block silently blocks nothing.
    """
    from importlib.metadata import entry_points

    pm = _Manager("nasfw")
    pm.add_hookspecs(hookspecs)
    installed = list(entry_points(group=ENTRY_POINT_GROUP))
    names = sorted({ep.name for ep in installed})
    for name in blocked_names():
        pm.set_blocked(name)
        if name not in names:
            warnings.warn(
                PluginWarning(
                    f"{DISABLE_ENV} names {name!r}, which is no installed nasfw plugin "
                    f"(installed: {', '.join(names)})"
                ),
                stacklevel=2,
            )
    for ep in installed:
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
        dist = getattr(ep, "dist", None)
        if dist is not None:
            pm.sources[ep.name] = f"{dist.metadata['Name']} {dist.version}"
        _register(pm, plugin, ep.name)
    for plugin in extra_plugins:
        _register(pm, plugin, None)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError:
        raise _unknown_hook_error(pm) from None
    return pm


class _Manager(pluggy.PluginManager):
    """pluggy's manager, knowing which distribution installed each entry-point plugin."""

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        # entry-point name -> "<distribution> <version>"
        self.sources: dict[str, str] = {}


def _label(name: str | None, plugin: object) -> str:
    """How errors name a plugin: its entry-point name, else its module or class."""
    if name and not name.isdigit():  # pluggy names unnamed objects by their id()
        return name
    return getattr(plugin, "__name__", None) or type(plugin).__qualname__


def describe(pm: pluggy.PluginManager, name: str | None, plugin: object) -> str:
    """A plugin as messages name it: ``plugin 'example' (nasfw-example-plugin 0.1.0)``, with
    the distribution that installed its entry point when it has one."""
    label = _label(name, plugin)
    source = getattr(pm, "sources", {}).get(name)
    return f"plugin {label!r}" + (f" ({source})" if source else "")


def _register(pm: pluggy.PluginManager, plugin: object, name: str | None) -> None:
    """``pm.register``, with pluggy's multi-line validation errors as one line."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as err:
        lines = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
        raise PluginError(
            f"plugin {_label(name, plugin)!r} implements a hook wrongly: {'; '.join(lines)}"
        ) from None
    _warn_unmarked(pm, plugin, name)


def _warn_unmarked(pm: pluggy.PluginManager, plugin: object, name: str | None) -> None:
    """Warn about functions of ``plugin`` named like hooks (a hook's name, or ``nasfw_*``)
    that lack ``@nasfw.hookimpl``: pluggy ignores them, so nasfw would never call them."""
    known = {n for n in vars(hookspecs) if n.startswith(("register_", "nasfw_"))}
    module = plugin.__name__ if isinstance(plugin, types.ModuleType) else None
    for attr in sorted(dir(plugin)):
        if not (attr in known or attr.startswith("nasfw_")):
            continue
        value = getattr(plugin, attr, None)
        if not callable(value) or isinstance(value, type):
            continue
        if module is not None and getattr(value, "__module__", module) != module:
            continue  # imported from elsewhere: not this plugin's hook
        if pm.parse_hookimpl_opts(plugin, attr) is not None:
            continue
        hint = "" if attr in known else " (and check its name: it is no nasfw hook)"
        warnings.warn(
            PluginWarning(
                f"plugin {_label(name, plugin)!r}: {attr} has no @nasfw.hookimpl, so nasfw "
                f"never calls it; decorate it with @nasfw.hookimpl{hint}, or rename it"
            ),
            stacklevel=3,
        )


def _unknown_hook_error(pm: pluggy.PluginManager) -> PluginError:
    """The error for a hookimpl that matches no hook spec, naming the nearest hook."""
    known = sorted(n for n, c in vars(pm.hook).items() if not n.startswith("_") and c.has_spec())
    for name, caller in vars(pm.hook).items():
        if name.startswith("_") or caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.optionalhook:
                continue
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"the hooks: {', '.join(known)}"
            return PluginError(
                f"plugin {_label(impl.plugin_name, impl.plugin)!r} implements {name!r}, "
                f"which is no nasfw hook ({hint})"
            )
    return PluginError("a plugin implements a hook that nasfw does not have")


def _call_register_hook(
    pm: pluggy.PluginManager, hook_name: str, register: Any, adder: _Adder
) -> None:
    """Call each plugin's ``hook_name(register=...)``, in pluggy's order, noting in ``adder``
    whose call it is; a plugin that returned something is an error.

    A ``register_*`` hook that returns its tuners (say) instead of calling ``register``
    would otherwise register nothing, silently: the option would just be missing.
    """
    caller = getattr(pm.hook, hook_name)
    for impl in reversed(caller.get_hookimpls()):  # pluggy calls the last registered first
        adder.plugin = describe(pm, impl.plugin_name, impl.plugin)
        returned = impl.function(**{arg: register for arg in impl.argnames})
        if returned is not None:
            text = repr(returned)
            raise PluginError(
                f"plugin {_label(impl.plugin_name, impl.plugin)!r}: {hook_name} returned "
                f"{text if len(text) <= 80 else text[:77] + '...'} instead of calling "
                "register(...) once per thing it provides"
            )


def named(cls: type, kind: str) -> str:
    """The option name a tuner or launcher class carries: its ``config_class``'s ``name``
    default (e.g. ``TPETuner.config_class = TPEConfig``, whose ``name`` is ``"tpe"``).

    Raises:
        PluginError: the class has no such config class.
    """
    schema = getattr(cls, "config_class", None)
    fields = {f.name: f for f in dataclasses.fields(schema)} if _is_schema(schema) else {}
    default = fields["name"].default if "name" in fields else None
    if not isinstance(default, str):
        raise PluginError(
            f"{kind} {cls.__module__}.{cls.__qualname__} cannot be registered by itself: give it "
            f"config_class = <its config dataclass, whose name field defaults to the {kind}'s "
            f"option name>, or register(name, {cls.__qualname__})"
        )
    return default


def _is_schema(schema: Any) -> bool:
    return isinstance(schema, type) and dataclasses.is_dataclass(schema)


def collect(pm: pluggy.PluginManager) -> Registry:
    """Call every ``register_*`` hook and gather what the plugins registered."""
    reg = Registry()
    adder = _Adder(reg)
    add_config = adder.to("configs", "config option")

    def by_class(kind: str, table: str, group: str) -> Callable[..., None]:
        """``register(cls)``: the class carries its name and its schema (``config_class``),
        registered as the option ``group=<name>``; ``register(name, cls)`` (nasfw 0.1) too."""

        def add(*args: Any) -> None:
            if len(args) == 2:
                name, cls = args
            else:
                (cls,) = args
                name = named(cls, kind)
                add_config((group, name), cls.config_class)
            adder.add(table, kind, name, cls)

        return add

    def add_problem(name: str, loader: Callable[..., Problem], node: Any = None) -> None:
        adder.add("problems", "problem", name, loader)
        add_config(("problem", name), {"name": name} if node is None else node)

    def add_pruner(schema: type[PrunerConfig], factory: Callable[[Any], Any]) -> None:
        name = pruner_name(schema)
        if not callable(factory):
            raise PluginError(f"pruner {name!r}: register(schema, factory) got {factory!r}")
        adder.add("pruners", "pruner", name, (schema, factory))
        add_config(("pruner", name), schema)

    def add_space_kind(cls: Any) -> None:
        schema = getattr(cls, "config_class", None)
        if not (_is_schema(schema) and isinstance(cls, type)):
            raise PluginError(
                f"register_search_space_kinds: {cls!r} has no config_class (its schema, a "
                "dataclass subclass of nasfw.SpaceConfig)"
            )
        adder.add("space_kinds", "kind of search space", schema, cls)

    for hook_name, register in (
        ("register_ops", lambda spec: adder.add("ops", "op", spec.name, spec)),
        ("register_search_space_kinds", add_space_kind),
        ("register_tuners", by_class("tuner", "tuners", "tuner")),
        ("register_launchers", by_class("launcher", "launchers", "launcher")),
        ("register_pruners", add_pruner),
        ("register_postprocessors", adder.to("postprocessors", "post-processor")),
        ("register_scorers", adder.to("scorers", "scorer")),
        ("register_configs", lambda group, name, node: add_config((group, name), node)),
        ("register_problems", add_problem),
        ("register_search_spaces", lambda name, node: add_config(("search_space", name), node)),
    ):
        _call_register_hook(pm, hook_name, register, adder)
    return reg


def pruner_name(schema: Any) -> str:
    """The option name a pruner schema carries (its ``name`` default), checked: ``schema``
    must be a dataclass subclass of :class:`nasfw.PrunerConfig` and the name not ``none``
    (the core's ``pruner=none``)."""
    from omegaconf import MISSING

    from nasfw.config import PrunerConfig

    if not (
        isinstance(schema, type)
        and issubclass(schema, PrunerConfig)
        and dataclasses.is_dataclass(schema)
    ):
        raise PluginError(
            f"register_pruners: {schema!r} is not a dataclass subclass of nasfw.PrunerConfig"
        )
    where = f"{schema.__module__}.{schema.__qualname__}"
    name = getattr(schema, "name", None)
    if not isinstance(name, str) or name in ("", MISSING):
        raise PluginError(
            f"register_pruners: {where} has no name: give its field a default, "
            'e.g. name: str = "mine" for pruner=mine'
        )
    if name == "none":
        raise PluginError(f"register_pruners: {where} is named 'none', the core's pruner=none")
    return name


def blocked_provider(kind: str, name: Any) -> str | None:
    """The blocked plugin that would provide ``name`` in ``kind`` (a :class:`Registry` field,
    e.g. ``("tuners", "tpe")`` or ``("configs", ("tuner", "tpe"))``), if any.

    For errors about something missing: blocked plugins are loaded (not registered) to ask
    them, so this costs an import each, once per process.
    """
    for plugin, reg in blocked_registries().items():
        if name in getattr(reg, kind):
            return plugin
    return None


def blocked_registries() -> dict[str, Registry]:
    """What each installed, blocked plugin would register, by entry-point name; a plugin
    that fails to load or register is left out (it cannot say what it provides)."""
    return _blocked_registries(tuple(blocked_names()))


@cache
def _blocked_registries(blocked: tuple[str, ...]) -> dict[str, Registry]:
    from importlib.metadata import entry_points

    found: dict[str, Registry] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in blocked or ep.name in found:
            continue
        try:
            pm = pluggy.PluginManager("nasfw")
            pm.add_hookspecs(hookspecs)
            pm.register(ep.load(), name=ep.name)
            found[ep.name] = collect(pm)
        except Exception:  # blocked because it is broken: it cannot say what it provides
            continue
    return found


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
    _blocked_registries.cache_clear()


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


def space_node(node: Any) -> Any:
    """A registered ``search_space`` option, typed: a schema (a :class:`nasfw.SpaceConfig`
    subclass: its kind) as it is, a mapping or YAML file as the core's kind of space
    (:class:`nasfw.SearchSpaceConfig`, stages)."""
    from omegaconf import OmegaConf

    from nasfw.config import SearchSpaceConfig

    node = config_node(node)
    if dataclasses.is_dataclass(node):
        return node
    return OmegaConf.merge(OmegaConf.structured(SearchSpaceConfig), node)


def preset(group: str, name: str) -> Any:
    """The option ``name`` of config group ``group`` as a ``DictConfig`` (or ``None`` if there
    is none): a YAML preset of ``nasfw.conf`` or what a plugin registered, as
    ``group=name`` on the command line would compose it (unmerged with the group's schema)."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    path = files("nasfw.conf").joinpath(group, f"{name}.yaml")
    if path.is_file():
        node = OmegaConf.load(str(path))
        node.pop("defaults", None)  # the schema it extends: unmerged, as said
        return node
    node = registry().configs.get((group, name))
    if node is None:
        return None
    node = config_node(node)
    return OmegaConf.structured(node) if dataclasses.is_dataclass(node) else OmegaConf.create(node)


PLUGINS_GROUP = "plugins"
# The primary config's defaults list merges this node: every ``plugins.<name>`` at once.
PLUGINS_NODE = "nasfw_plugins"


def store_configs(reg: Registry) -> None:
    """Put the plugins' config options into Hydra's ConfigStore.

    Options of a group (``tuner``, ``problem`` ...) are choices, one per run. Nodes registered
    under ``plugins`` are not: each is the always-present ``plugins.<name>`` of a plugin that
    hooks into every search (a lifecycle plugin), set as ``plugins.<name>.<key>=value``.
    """
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    plugins: dict[str, Any] = {}
    for (group, name), node in reg.configs.items():
        if group == PLUGINS_GROUP:
            plugins[name] = config_node(node)
        elif group == "search_space":
            cs.store(group=group, name=name, node=space_node(node), provider="nasfw-plugins")
        else:
            cs.store(group=group, name=name, node=config_node(node), provider="nasfw-plugins")
    cs.store(name=PLUGINS_NODE, node={PLUGINS_GROUP: plugins}, provider="nasfw-plugins")


class _RegistryModule(types.ModuleType):
    """``nasfw.registry``: this module, which called is :func:`registry` (as nasfw 0.1's
    ``nasfw.registry()`` was a function), so plugins written either way work."""

    def __call__(self) -> Registry:
        return registry()


sys.modules[__name__].__class__ = _RegistryModule
