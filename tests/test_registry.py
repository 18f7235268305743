"""The plugin manager's one-line errors and warnings, and the ``plugins.<name>`` config nodes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cli import TINY, help_groups, install_plugin, nasfw
from omegaconf import OmegaConf

from nasfw import ConfigError, PluginError, PrunerConfig, check_settings, hookimpl, setting
from nasfw.plugins.tuners.random_search import RandomSearch
from nasfw.registry import (
    DISABLE_ENV,
    PluginWarning,
    collect,
    make_plugin_manager,
    store_configs,
)


def plugin(name: str, **hooks: Callable[..., Any]) -> ModuleType:
    """A throw-away plugin module ``name`` with ``hooks`` as its hookimpls."""
    module = ModuleType(name)
    for hook_name, function in hooks.items():
        function.__name__ = hook_name
        setattr(module, hook_name, hookimpl(function))
    return module


def one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize(
    ("misspelt", "meant"),
    [("register_tuner", "register_tuners"), ("nasfw_trial_completed", "nasfw_trial_complete")],
)
def test_a_misspelt_hook_names_the_plugin_and_the_hook(misspelt: str, meant: str) -> None:
    broken = plugin("my_broken_plugin", **{misspelt: lambda register=None: None})
    with pytest.raises(PluginError) as err:
        make_plugin_manager(extra_plugins=(broken,))
    text = one_line(err)
    assert f"plugin 'my_broken_plugin' implements {misspelt!r}" in text
    assert f"did you mean {meant!r}?" in text


def test_a_name_far_from_every_hook_lists_the_hooks() -> None:
    broken = plugin("far", on_everything=lambda: None)
    with pytest.raises(PluginError) as err:
        make_plugin_manager(extra_plugins=(broken,))
    assert "the hooks: nasfw_check_config, " in one_line(err)


def test_a_hook_argument_the_spec_lacks_names_the_plugin() -> None:
    broken = plugin("bad_args", register_tuners=lambda reg: None)
    with pytest.raises(PluginError) as err:
        make_plugin_manager(extra_plugins=(broken,))
    text = one_line(err)
    assert "plugin 'bad_args' implements a hook wrongly" in text and "'reg'" in text


def test_a_register_hook_that_returns_instead_of_registering_names_the_plugin() -> None:
    broken = plugin("returner", register_tuners=lambda register: {"returned": RandomSearch})
    pm = make_plugin_manager(extra_plugins=(broken,))
    with pytest.raises(PluginError) as err:
        collect(pm)
    text = one_line(err)
    assert "plugin 'returner': register_tuners returned {'returned': " in text
    assert "instead of calling register(...)" in text


def test_a_register_hook_that_calls_register_is_fine() -> None:
    def register_tuners(register: Callable[[str, type], None]) -> None:
        register("mine", RandomSearch)

    reg = collect(
        make_plugin_manager(extra_plugins=(plugin("ok", register_tuners=register_tuners),))
    )
    assert reg.tuners["mine"] is RandomSearch


def test_a_tuner_class_carries_its_name_and_schema() -> None:
    from nasfw import Result, Tuner, TunerConfig

    @dataclass
    class ClimbConfig(TunerConfig):
        name: str = "climb"
        steps: int = setting(3, ge=1)

    class Climb(Tuner):
        config_class = ClimbConfig

        def ask(self) -> list[Any]:
            return []

        def tell(self, candidates: list[Any], results: list[Result]) -> None: ...

        def state(self) -> dict[str, Any]:
            return {}

        def restore(self, state: dict[str, Any]) -> None: ...

    def register_tuners(register: Callable[[type], None]) -> None:
        register(Climb)

    reg = collect(
        make_plugin_manager(extra_plugins=(plugin("climb", register_tuners=register_tuners),))
    )
    assert reg.tuners["climb"] is Climb
    assert reg.configs[("tuner", "climb")] is ClimbConfig  # registered once, with its class
    # The first-party tuners and launchers register the same way.
    assert reg.configs[("tuner", "random")] is RandomSearch.config_class
    assert ("launcher", "local") in reg.configs


def test_a_class_without_its_schema_cannot_register_by_itself() -> None:
    class Nameless(RandomSearch):
        config_class = None

    def register_tuners(register: Callable[[type], None]) -> None:
        register(Nameless)

    with pytest.raises(PluginError) as err:
        collect(
            make_plugin_manager(
                extra_plugins=(plugin("nameless", register_tuners=register_tuners),)
            )
        )
    assert "Nameless cannot be registered by itself: give it config_class" in one_line(err)


def test_a_blocked_name_that_matches_no_plugin_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLE_ENV, "tpe, tpee")
    with pytest.warns(PluginWarning) as caught:
        pm = make_plugin_manager()
    (warning,) = caught
    text = str(warning.message)
    assert "\n" not in text
    assert "NASFW_DISABLE_PLUGINS names 'tpee', which is no installed nasfw plugin" in text
    assert "installed: codeepneat, " in text and ", tpe" in text
    assert pm.is_blocked("tpe") and pm.get_plugin("tpe") is None


def test_a_missing_name_that_a_blocked_plugin_provides_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(DISABLE_ENV, "tpe")
    reg = collect(make_plugin_manager())
    with pytest.raises(PluginError) as err:
        reg.get("tuners", "tpe")
    assert one_line(err) == (
        "no tuner named 'tpe' is registered: it comes from plugin 'tpe', which "
        "NASFW_DISABLE_PLUGINS=tpe blocks"
    )
    with pytest.raises(PluginError, match=r"available: \['codeepneat'"):
        reg.get("tuners", "tpee")  # no blocked plugin has it: the usual listing


def test_the_cli_names_the_blocked_plugin_of_an_option(tmp_path: Any) -> None:
    out = nasfw(tmp_path, *TINY, "tuner=tpe", env={DISABLE_ENV: "tpe,evolution"})
    assert out.returncode == 2
    assert (
        "nasfw: note: tuner=tpe is not available because NASFW_DISABLE_PLUGINS=tpe,evolution "
        "blocks plugin 'tpe', which provides it; unset it or choose another option."
    ) in out.stderr.splitlines()
    # A misspelt option is not blamed on the blocked plugins (none of them has it).
    out = nasfw(tmp_path, *TINY, "tuner=tpee", env={DISABLE_ENV: "tpe"})
    assert out.returncode == 2 and "Could not find 'tuner/tpee'" in out.stderr
    assert "note:" not in out.stderr


def test_the_cli_warns_in_one_line_about_a_block_that_blocks_nothing(tmp_path: Any) -> None:
    out = nasfw(tmp_path, "--help", env={DISABLE_ENV: "tpee"})
    assert out.returncode == 0, out.stderr
    (line,) = [line for line in out.stderr.splitlines() if line.strip()]
    assert line.startswith("nasfw: warning: NASFW_DISABLE_PLUGINS names 'tpee'")


# -- plugins.<name>: the config nodes of lifecycle plugins ----------------------------------


@dataclass
class CounterConfig:
    """A lifecycle plugin's node (plugins.counter)."""

    every: int = setting(1, ge=1)
    label: str = "trials"


def compose_with_counter(*overrides: str) -> Any:
    """The run's config with a plugin that registers ``plugins.counter``, as the CLI
    composes it."""
    from hydra import compose, initialize_config_module

    from nasfw.compose import store_schemas

    def register_configs(register: Callable[[str, str, Any], None]) -> None:
        register("plugins", "counter", CounterConfig)

    counter = plugin("counter", register_configs=register_configs)
    store_schemas(collect(make_plugin_manager(extra_plugins=(counter,))))
    with initialize_config_module("nasfw.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture
def restore_config_store() -> Any:
    """Put the process-wide plugins' configs back after a test stored others."""
    yield
    from nasfw.registry import registry

    store_configs(registry())


@pytest.mark.usefixtures("restore_config_store")
def test_a_plugins_node_is_typed_and_range_checked() -> None:
    cfg = compose_with_counter("tracking=none")
    assert OmegaConf.get_type(cfg.plugins.counter) is CounterConfig
    assert cfg.plugins.counter == {"every": 1, "label": "trials"}
    cfg = compose_with_counter("tracking=none", "plugins.counter.every=5")
    assert cfg.plugins.counter.every == 5
    check_settings(cfg)
    bad = compose_with_counter("tracking=none", "plugins.counter.every=0")
    with pytest.raises(ConfigError, match=r"^plugins\.counter\.every=0 is out of range"):
        check_settings(bad)


@pytest.mark.usefixtures("restore_config_store")
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("plugins.counter.evry=2", "plugins.counter.evry"),
        ("plugins.counter.every=often", "plugins.counter.every"),
        ("plugins.countr.every=2", "plugins.countr"),
    ],
)
def test_a_bad_plugins_key_fails_at_compose_time(override: str, key: str) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as err:
        compose_with_counter("tracking=none", override)
    assert key in f"{err.value} {err.value.__cause__}"


def test_without_plugins_nodes_the_config_has_an_empty_plugins_node() -> None:
    from cli import compose

    assert OmegaConf.to_container(compose("tracking=none").plugins) == {}


# -- register_pruners: the schema carries the option's name ---------------------------------


@dataclass
class StopConfig(PrunerConfig):
    name: str = "stop"
    after: int = setting(1, ge=1)


@dataclass
class NamelessConfig(PrunerConfig):
    after: int = 1


@dataclass
class NoneConfig(PrunerConfig):
    name: str = "none"


def make_stop(settings: StopConfig) -> Any:
    return settings


def pruners_plugin(*schemas: Any, factory: Any = make_stop) -> ModuleType:
    def register_pruners(register: Callable[..., None]) -> None:
        for schema in schemas:
            register(schema, factory)

    return plugin("my_pruners", register_pruners=register_pruners)


def test_a_registered_pruner_is_an_option_named_by_its_schema() -> None:
    reg = collect(make_plugin_manager(extra_plugins=(pruners_plugin(StopConfig),)))
    assert reg.pruners["stop"] == (StopConfig, make_stop)
    assert reg.configs["pruner", "stop"] is StopConfig
    assert {"median", "hyperband"} <= set(reg.pruners)  # the built-in plugin's


@pytest.mark.parametrize(
    ("schemas", "factory", "message"),
    [
        ((NamelessConfig,), make_stop, "NamelessConfig has no name: give its field a default"),
        ((CounterConfig,), make_stop, "is not a dataclass subclass of nasfw.PrunerConfig"),
        ((StopConfig(),), make_stop, "is not a dataclass subclass of nasfw.PrunerConfig"),
        ((NoneConfig,), make_stop, "NoneConfig is named 'none', the core's pruner=none"),
        ((StopConfig,), "make_stop", "pruner 'stop': register(schema, factory) got 'make_stop'"),
        ((StopConfig, StopConfig), make_stop, None),  # twice the same: once
    ],
)
def test_a_pruner_is_refused_in_one_line(schemas: Any, factory: Any, message: str | None) -> None:
    pm = make_plugin_manager(extra_plugins=(pruners_plugin(*schemas, factory=factory),))
    if message is None:
        assert collect(pm).pruners["stop"] == (StopConfig, make_stop)
        return
    with pytest.raises(PluginError) as err:
        collect(pm)
    assert message in one_line(err)


def test_two_plugins_with_a_pruner_of_one_name_are_refused() -> None:
    @dataclass
    class Median(PrunerConfig):
        name: str = "median"

    with pytest.raises(PluginError) as err:
        collect(make_plugin_manager(extra_plugins=(pruners_plugin(Median),)))
    text = one_line(err)
    assert text.startswith("two plugins register the pruner 'median': plugin '")
    assert "plugin 'pruners' (nasfw 0.1.0)" in text and "plugin 'my_pruners'" in text


# -- the plugin author's surface: nasfw.registry, names claimed twice, unmarked hooks --------


def test_nasfw_registry_is_the_module_and_calling_it_gives_the_registry() -> None:
    import nasfw
    from nasfw import Registry
    from nasfw import registry as imported
    from nasfw.registry import registry as function

    assert nasfw.registry is imported
    assert nasfw.registry.preset("tuner", "tpe").name == "tpe"  # the module's functions
    assert nasfw.registry.preset("tuner", "no_such_tuner") is None
    assert isinstance(nasfw.registry(), Registry)  # as plugins of nasfw 0.1 call it
    assert nasfw.registry() is function() is imported()
    assert "conv2d" in nasfw.registry().ops


MOONS = """
from nasfw import hookimpl


def load(config):
    raise NotImplementedError


@hookimpl
def register_problems(register):
    register("moons", load, None)
"""


def test_two_plugins_with_one_name_are_both_named_and_help_says_it(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_plugin(site, "nasfw-moons-a", "1.0", {"moons_a": MOONS}, "moons_a = moons_a")
    env = install_plugin(site, "nasfw-moons-b", "2.1", {"moons_b": MOONS}, "moons_b = moons_b")
    for args in (["--help"], [*TINY, "problem=iris"]):
        out = nasfw(tmp_path, *args, env=env)
        assert out.returncode == 2, out.stderr
        (line,) = [line for line in out.stderr.splitlines() if line.strip()]
        assert line.startswith("nasfw: error: two plugins register the problem 'moons': ")
        assert "plugin 'moons_a' (nasfw-moons-a 1.0)" in line
        assert "plugin 'moons_b' (nasfw-moons-b 2.1)" in line
        assert "NASFW_DISABLE_PLUGINS=" in line
    # Blocking one, as the line says, makes every command work again.
    out = nasfw(tmp_path, "--help", env={**env, DISABLE_ENV: "moons_b"})
    assert out.returncode == 0, out.stderr
    assert "moons" in help_groups(out.stdout)["problem"]


def test_one_plugin_registering_a_name_twice_is_named_once() -> None:
    def register_problems(register: Callable[..., None]) -> None:
        register("twice", lambda config: None, None)
        register("twice", lambda config: None, None)

    pm = make_plugin_manager(extra_plugins=(plugin("twice", register_problems=register_problems),))
    with pytest.raises(PluginError) as err:
        collect(pm)
    assert one_line(err) == (
        "plugin 'twice' registers the problem 'twice' twice, as different things"
    )


def test_what_a_plugin_registers_is_noted_with_its_distribution() -> None:
    from nasfw import registry

    providers = registry().providers
    assert providers["tuners", "tpe"] == "plugin 'tpe' (nasfw 0.1.0)"
    assert providers["problems", "iris"] == "plugin 'problems' (nasfw 0.1.0)"
    assert providers["configs", ("tuner", "tpe")] == "plugin 'tpe' (nasfw 0.1.0)"


def test_a_hook_without_hookimpl_is_a_warning_naming_it() -> None:
    module = ModuleType("forgetful")

    def nasfw_trial_complete(context: Any, trial: Any) -> None: ...

    def nasfw_trial_finished(context: Any) -> None: ...

    def helper() -> None: ...

    for function in (nasfw_trial_complete, nasfw_trial_finished, helper):
        function.__module__ = module.__name__
        setattr(module, function.__name__, function)
    module.nasfw_search_end = hookimpl(lambda best: None)  # decorated: fine
    module.nasfw_search_end.__module__ = module.__name__
    with pytest.warns(PluginWarning) as caught:
        pm = make_plugin_manager(extra_plugins=(module,))
    texts = sorted(str(w.message) for w in caught)
    assert texts == [
        "plugin 'forgetful': nasfw_trial_complete has no @nasfw.hookimpl, so nasfw never "
        "calls it; decorate it with @nasfw.hookimpl, or rename it",
        "plugin 'forgetful': nasfw_trial_finished has no @nasfw.hookimpl, so nasfw never "
        "calls it; decorate it with @nasfw.hookimpl (and check its name: it is no nasfw "
        "hook), or rename it",
    ]
    assert len(pm.hook.nasfw_search_end.get_hookimpls()) >= 1


FORGETFUL = """
from nasfw import hookimpl
from nasfw.hookspecs import nasfw_search_start  # imported, not this plugin's own: no warning


def nasfw_trial_complete(context, candidate, result, trial):
    raise AssertionError("never called")
"""


def test_the_cli_warns_about_a_hook_without_hookimpl_in_one_line(tmp_path: Path) -> None:
    env = install_plugin(
        tmp_path / "site", "nasfw-forgetful", "0.3", {"forgetful": FORGETFUL}, "mine = forgetful"
    )
    out = nasfw(tmp_path, *TINY, env=env)
    assert out.returncode == 0, out.stderr
    warned = [line for line in out.stderr.splitlines() if line.startswith("nasfw: warning:")]
    assert warned == [
        "nasfw: warning: plugin 'mine': nasfw_trial_complete has no @nasfw.hookimpl, so nasfw "
        "never calls it; decorate it with @nasfw.hookimpl, or rename it"
    ]


BROKEN_LOADER = """
from nasfw import hookimpl


def load(config):
    raise ValueError("n_samples must be even,\\n got 7")


@hookimpl
def register_problems(register):
    register("odd", load, None)
"""


def test_a_value_error_in_a_problem_loader_names_the_option_and_the_plugin(
    tmp_path: Path,
) -> None:
    env = install_plugin(
        tmp_path / "site", "nasfw-odd", "1.2", {"odd_problem": BROKEN_LOADER}, "odd = odd_problem"
    )
    out = nasfw(tmp_path, *TINY, "problem=odd", env=env)
    assert out.returncode == 2, out.stderr
    (line,) = [line for line in out.stderr.splitlines() if line.strip()]
    assert line == (
        "nasfw: error: problem=odd: the loader of plugin 'odd' (nasfw-odd 1.2) refused the "
        "problem.* settings or its data: ValueError: n_samples must be even, got 7"
    )
