"""The hooks a nasfw plugin can implement.

A plugin is any module or object with functions named like the specs below, decorated with
``nasfw.hookimpl``. Built-in and third-party plugins are found the same way: through the
``nasfw`` entry-point group.

The ``register_*`` hooks are called once, when the plugin manager is built; each receives a
``register`` callable to call once per thing the plugin provides. The ``nasfw_*`` lifecycle hooks
are called by the search loop on every plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import optuna

    from nasfw.config import NasfwConfig, PrunerConfig
    from nasfw.context import SearchContext
    from nasfw.ops import OpSpec
    from nasfw.problem import Problem, ProblemConfig
    from nasfw.records import Candidate, Result, TrialRecord
    from nasfw.search_space import BaseSearchSpace

hookspec = pluggy.HookspecMarker("nasfw")


@hookspec
def register_ops(register: Callable[[OpSpec], None]) -> None:
    """Register layer kinds (ops) that ArchGraph nodes may use: ``register(OpSpec(...))``."""


@hookspec
def register_tuners(register: Callable[..., None]) -> None:
    """Register tuner classes: ``register(TPETuner)``.

    The class carries its name and its config schema: ``config_class`` is its
    :class:`nasfw.TunerConfig` subclass, whose ``name`` field defaults to the option's name
    (``tuner=tpe``); the schema becomes the option, nothing else to register.
    ``register("tpe", TPETuner)`` (the name given, the schema registered with
    :func:`register_configs`) still works.
    """


@hookspec
def register_search_spaces(register: Callable[[str, Any], None]) -> None:
    """Register search-space constraint sets: ``register(name, node)``.

    ``node`` is a :class:`nasfw.SearchSpaceConfig`, a mapping, or a path to a YAML file (the
    core's kind of space, stages), or an instance of a registered kind's schema
    (:func:`register_search_space_kinds`); it becomes the option ``search_space=<name>``.
    """


@hookspec
def register_search_space_kinds(register: Callable[[type[BaseSearchSpace]], None]) -> None:
    """Register kinds of search space: ``register(CellSpace)``, once per kind.

    A kind is a :class:`nasfw.BaseSearchSpace` subclass constructed as ``cls(config, ops)``;
    its ``config_class`` (a dataclass subclass of :class:`nasfw.SpaceConfig`) is its schema:
    an option registered with :func:`register_search_spaces` as an instance of that schema is
    a space of this kind. Subclasses of a registered schema are of its kind unless registered
    themselves.
    """


@hookspec
def register_problems(
    register: Callable[[str, Callable[[ProblemConfig], Problem], Any], None],
) -> None:
    """Register problems: ``register(name, loader, node)``.

    ``loader(problem_config) -> Problem`` loads the data; ``node`` (a
    :class:`nasfw.ProblemConfig`, mapping or YAML path, or ``None`` for the defaults) becomes the
    option ``problem=<name>``.
    """


@hookspec
def register_postprocessors(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register post-processors by name (the value of ``postproc.name``).

    A post-processor is called as ``postproc(context, config)`` after the search, with the
    :class:`nasfw.SearchContext` (history, best model) and its ``postproc`` config node.
    """


@hookspec
def register_scorers(
    register: Callable[[str, Callable[[Candidate, Problem, Any, int, Any], Result]], None],
) -> None:
    """Register ways to score a candidate by name (the value of ``evaluation.name``).

    A scorer is called in the worker as ``scorer(candidate, problem, train_config, seed,
    evaluation_config) -> Result`` after the size check; it must train through
    ``nasfw.train_model``. The core's own way is ``plain`` (build, train, score on val).
    """


@hookspec
def register_launchers(register: Callable[..., None]) -> None:
    """Register launcher classes: ``register(LocalLauncher)``, named by their ``config_class``
    (a :class:`nasfw.LauncherConfig` subclass whose ``name`` defaults to the option's name),
    as tuners are (:func:`register_tuners`); ``register(name, cls)`` still works."""


@hookspec
def register_pruners(
    register: Callable[[type[PrunerConfig], Callable[[Any], optuna.pruners.BasePruner]], None],
) -> None:
    """Register pruners: ``register(MinePrunerConfig, make_mine)``, once per pruner.

    ``MinePrunerConfig`` is a dataclass subclass of :class:`nasfw.PrunerConfig` whose ``name``
    default is the option's name: it becomes ``pruner=<name>``, typed, its fields set as
    ``pruner.<field>=value``. ``make_mine(settings) -> optuna.pruners.BasePruner`` makes the
    pruner from an instance of it, wherever a network trains (a worker process, a cluster
    job), so import Optuna inside it. Settings that default to the run's are filled in first
    by the schema's :meth:`~nasfw.PrunerConfig.for_run` (e.g. a budget of ``train.epochs``).
    """


@hookspec
def register_configs(register: Callable[[str, str, Any], None]) -> None:
    """Register Hydra config options: ``register(group, name, node)``.

    ``node`` is a dataclass (class or instance: its fields are the schema, so bad types fail at
    compose time), a mapping, or a path to a YAML file. ``register("tuner", "mine", MineConfig)``
    makes ``python -m nasfw tuner=mine`` work with nothing else than the plugin's entry point.

    The group ``plugins`` is for plugins that join every search through the lifecycle hooks:
    ``register("plugins", "mine", MineConfig)`` adds the node ``plugins.mine`` to every run's
    config (set as ``plugins.mine.<field>=value``; hooks read ``context.cfg.plugins.mine``).
    """


@hookspec
def nasfw_check_config(cfg: NasfwConfig) -> None:
    """Check what the run will need from this plugin before the study is created.

    Called once per search with the run's typed config (``cfg.tracking`` is the schema
    instance of the option chosen, ``cfg.plugins.mine`` a lifecycle plugin's settings), after
    the core's own checks and before the Optuna study exists (so a rejected run leaves nothing
    behind and its corrected rerun is not refused as another search). Check the files,
    directories and URIs the plugin will write or read, quickly, and raise
    :class:`nasfw.ConfigError` (or a :class:`nasfw.PluginError`) naming the offending key; do
    not connect for long or write.
    """


@hookspec
def nasfw_search_start(context: SearchContext) -> None:
    """A search starts (or resumes); ``context`` holds the config, problem, study and tuner."""


@hookspec
def nasfw_search_space_chosen(context: SearchContext, choice: dict[str, Any]) -> None:
    """``search_space=auto`` chose the constraint set the search runs in (before its first
    generation; again, with the stored choice, when the search resumes).

    ``choice`` holds ``class`` (e.g. ``mb_image_0``), ``confidence`` (the classifier's
    probability of it), ``probabilities`` (every class of the modality), ``problems`` (the DB
    problems of the class), ``space`` (the ``SearchSpaceConfig`` as a dict, also
    ``context.space.config``), ``probe_trials`` (the probe's trial numbers) and ``db``.
    """


@hookspec
def nasfw_warm_start(context: SearchContext, choice: dict[str, Any]) -> None:
    """``minibench.warm_start`` chose the networks the search starts from (before its first
    generation; again, with the stored choice, when the search resumes).

    ``choice`` holds ``family`` (the space family), ``probe_trials`` (the reference networks'
    trial numbers), ``donors`` (``[problem id, Kendall tau]``, nearest first), ``seeds``
    (ArchGraph JSON, the tuner's first proposals), ``cold`` (why there are none, or None) and
    ``db`` (:mod:`nasfw.minibench.transfer`).
    """


@hookspec
def nasfw_generation_start(
    context: SearchContext, generation: int, candidates: list[Candidate]
) -> None:
    """The tuner proposed ``candidates`` (one generation); their evaluation starts now."""


@hookspec
def nasfw_trial_complete(
    context: SearchContext, candidate: Candidate, result: Result, trial: TrialRecord
) -> None:
    """One candidate was evaluated and stored in the study (failed ones too).

    Called in the process that runs the search loop, as results arrive (several workers
    finish in any order), also for a result reused from an identical earlier evaluation.
    """


@hookspec
def nasfw_generation_end(
    context: SearchContext, generation: int, trials: list[TrialRecord]
) -> None:
    """All candidates of one generation (one batch of ``tuner.ask()``) are evaluated."""


@hookspec
def nasfw_search_end(context: SearchContext, best: TrialRecord | None) -> None:
    """The search finished; ``best`` is the best completed trial, if any."""
