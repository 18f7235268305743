"""A search's setup: everything it needs, built and checked before the first generation.

:func:`prepare` turns the typed run (:func:`nasfw.config.typed_config`) into a
:class:`Search`: the problem, the search space and how it is chosen (a
:class:`~nasfw.run.SpaceChoice`), the tuner (constructed complete), the launcher, the
evaluator, the ledger (the Optuna study) with its driver lease, and the context lifecycle hooks
see. Bad configuration fails here, before any training and before the study exists, with an
error naming the key; a resumed search gets its tuner restored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasfw.config import (
    AsynchronousTunerConfig,
    ConfigError,
    NasfwConfig,
    SpaceConfig,
    as_dict,
    check_writable,
)
from nasfw.context import SearchContext
from nasfw.evaluate import Evaluator, load_problem
from nasfw.lease import DriverLease
from nasfw.ledger import Ledger
from nasfw.pruning import pruner_settings
from nasfw.records import TrialRecord
from nasfw.registry import Registry, config_node, plugin_manager, preset, registry
from nasfw.run import Search, SpaceChoice
from nasfw.search_space import BaseSearchSpace, SearchSpaceError
from nasfw.tuner import Tuner, make_tuner
from nasfw.weights import WeightStore

if TYPE_CHECKING:
    from rich.console import Console

    from nasfw.launcher import Launcher
    from nasfw.minibench.screen import Screener
    from nasfw.ops import OpSpec
    from nasfw.problem import Problem


def prepare(
    config: NasfwConfig, fingerprint: dict[str, Any], output_dir: Path, console: Console
) -> Search:
    """Set up the search ``config`` describes (``fingerprint``: its result-defining settings,
    :func:`nasfw.search.fingerprint`), in ``output_dir``.

    Raises:
        ConfigError, SearchSpaceError, PluginError, DataError: bad input, naming the key,
            before the study is created.
        LedgerError, LeaseError: the storage cannot serve, or another driver runs the study.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    reg = registry()
    tuner_cls: type[Tuner] = reg.get("tuners", config.tuner.name)
    launcher_cls = reg.get("launchers", config.launcher.name)
    if config.postproc.name != "none":
        reg.get("postprocessors", config.postproc.name)
    scoring = _scoring(config, reg)
    pruning = pruner_settings(config, scoring["name"])
    problem = load_problem(config.problem)
    space_choice = _space_choice(config, problem, reg)
    space = space_choice.initial_space(reg.ops)
    if problem.table is not None:
        _check_table(config, problem, space, scoring, pruning)
    if not space.accepts(problem.modality):
        raise _modality_error(space, problem, reg)
    launcher = launcher_cls(config.launcher)
    lease: DriverLease | None = None
    try:
        if problem.table is None:  # looked up, nothing trains (and torch is not imported)
            launcher.check_device(str(config.train.device))
        evaluator = Evaluator(
            problem=config.problem,
            train=config.train,
            seed=config.seed,
            max_params=space.max_params,
            threads=_threads(config, launcher),
            scoring=scoring,
            weights=study_weights(config),
        )
        # The workers start (import torch, load the data: seconds) while the driver builds the
        # tuner and opens the study, instead of after. A config refused below aborts them (it
        # does not wait for their start).
        launcher.warm_up(evaluator)
        screener = _screener(config, problem, tuner_cls, sorted(reg.ops))

        def new_tuner(space: BaseSearchSpace) -> Tuner:
            return make_tuner(
                tuner_cls,
                config.tuner,
                space,
                config.seed,
                problem=problem,
                train=config.train,
                screen=screener,
            )

        # Tuner and launcher check their settings first: a bad config must not leave its
        # fingerprint in a new study, or the corrected rerun would be refused as another search.
        tuner = new_tuner(space)
        _check_memory_storage(config, launcher, pruning)
        asynchronous = _check_asynchronous(config, tuner, launcher, pruning)
        # Everything the run will write to is checked before the study exists.
        check_writable(export_path(config, output_dir), "export_dir")
        check_writable(study_weights(config).path, "storage.artifacts")
        hook = plugin_manager().hook
        hook.nasfw_check_config(cfg=config)
        _check_warm_start(config)
        ledger = Ledger(
            config.storage.url,
            config.study_name,
            config.storage.retry_seconds,
            full_budget=int(config.train.epochs),
        )
        # Before anything is written: a second driver on the study refuses here.
        lease = DriverLease(ledger.storage, config.study_name)
        lease.acquire()
        ledger.fence = lease.check  # from now on, each write checks the lease is still ours
        warm = _warm_start_trials(ledger, config.tuner.warm_start)
        if warm is not None:
            tuner.warm_start(warm)
        ledger.check_fingerprint(fingerprint)

        def tuner_in(space: BaseSearchSpace) -> Tuner:
            tuner = new_tuner(space)
            if warm is not None:
                tuner.warm_start(warm)
            return tuner

        resumed = space_choice.on_resume(ledger, tuner_in)  # a resumed search keeps its space
        if resumed is not None:
            space, tuner = resumed
            if space.max_params != evaluator.max_params:
                evaluator = replace(evaluator, max_params=space.max_params)
        ledger.set_metric_name(f"val_{problem.metric}")
        saved = ledger.load_state()
        ledger.fail_interrupted()  # evaluations a killed driver left RUNNING (pruner=...)
        if saved is not None:
            tuner.restore(saved[1])
        context = SearchContext(
            cfg=config,
            problem=problem,
            space=space,
            tuner=tuner,
            study=ledger.study,
            output_dir=output_dir,
            history=ledger.records(),
            start_generation=saved[0] + 1 if saved is not None else 0,
            generation_seconds=ledger.generation_seconds(),
            simulated_seconds=ledger.simulated_seconds(),
            workers=launcher.workers,
        )
    except BaseException:
        launcher.abort()  # workers still starting are stopped, not waited for
        if lease is not None:
            lease.release()
        raise
    return Search(
        config=config,
        context=context,
        launcher=launcher,
        evaluator=evaluator,
        ledger=ledger,
        lease=lease,
        space_choice=space_choice,
        console=console,
        hook=hook,
        pruning=pruning,
        asynchronous=asynchronous,
        resumed_after=saved[0] if saved is not None else None,
        told_through=ledger.told_through(),
    )


class FixedSpace:
    """The constraint set ``search_space`` names: nothing to choose (a
    :class:`nasfw.run.SpaceChoice`)."""

    def __init__(self, config: SpaceConfig, reg: Registry) -> None:
        self.config = config
        self.registry = reg

    def initial_space(self, ops: Mapping[str, OpSpec]) -> BaseSearchSpace:
        return self.registry.space(self.config, ops)

    def on_resume(
        self, ledger: Ledger, rebuild: Callable[[BaseSearchSpace], Tuner]
    ) -> tuple[BaseSearchSpace, Tuner] | None:
        return None

    def before_first_generation(self, search: Search) -> None:
        return None


def study_weights(config: NasfwConfig) -> WeightStore:
    """The :class:`nasfw.weights.WeightStore` of the study (``storage.artifacts``, made
    absolute so jobs started elsewhere find it)."""
    path = Path(config.storage.artifacts).expanduser()
    return WeightStore(str(path.absolute()), config.study_name)


def export_path(config: NasfwConfig, output_dir: Path) -> Path:
    """Where the best model goes: ``export_dir``, relative to the run's output directory."""
    path = Path(config.export_dir).expanduser()
    return path if path.is_absolute() else output_dir / path


def _space_choice(config: NasfwConfig, problem: Problem, reg: Registry) -> SpaceChoice:
    """How the search space is chosen: the one ``search_space`` names, or
    ``search_space=auto``'s mini-benchmark choice (built here, so a missing DB fails first)."""
    from nasfw.minibench.auto import AUTO, AutoSpace

    if config.search_space.name == AUTO:
        choice: SpaceChoice = AutoSpace(config, problem, sorted(reg.ops))
    else:
        choice = FixedSpace(config.search_space, reg)
    if config.minibench.warm_start:
        from nasfw.minibench.transfer import WarmStart, check

        check(config)
        choice = WarmStart(config, problem, choice)
    return choice


def _modality_error(space: BaseSearchSpace, problem: Problem, reg: Registry) -> SearchSpaceError:
    serving = spaces_for(problem.modality, reg)
    hint = (
        f" (search_space={' or search_space='.join(serving)})"
        if serving
        else " (none is registered: write one, see docs/plugins.md)"
    )
    return SearchSpaceError(
        f"search_space={space.name} serves {list(space.modalities)} problems but "
        f"problem={problem.name} is {problem.modality}; pick a search space for "
        f"{problem.modality} data{hint}"
    )


def spaces_for(modality: str, reg: Registry) -> list[str]:
    """Names of the search spaces (built-in presets and plugins') that serve ``modality``."""
    from importlib.resources import files

    from nasfw.minibench.auto import AUTO

    names = {
        p.name.removesuffix(".yaml")
        for p in files("nasfw.conf").joinpath("search_space").iterdir()
        if p.name.endswith(".yaml")
    }
    names |= {name for group, name in reg.configs if group == "search_space"}
    found = []
    for name in sorted(names - {AUTO}):  # auto is no constraint set
        node = preset("search_space", name)
        if node is not None and modality in node.get("modalities", ["image"]):
            found.append(name)
    return found


def _check_memory_storage(
    config: NasfwConfig, launcher: Launcher[Any], pruning: dict[str, Any] | None
) -> None:
    """``storage.url=memory://`` lives in the driver's memory: nothing else can write to it.

    Raises:
        ConfigError: naming ``storage.url``, for a launcher whose jobs write their own trials
            or a pruner (whose workers write theirs as they train).
    """
    from nasfw.storage import MEMORY_URL

    if config.storage.url != MEMORY_URL:
        return
    if launcher.workers_write_trials:
        raise ConfigError(
            f"storage.url={MEMORY_URL} (storage=memory) lives in this process's memory, but "
            f"launcher={config.launcher.name}'s jobs write their own trials: use storage=sqlite "
            "or a storage.url every job can reach"
        )
    if pruning is not None:
        raise ConfigError(
            f"storage.url={MEMORY_URL} (storage=memory) lives in this process's memory, but "
            f"pruner={config.pruner.name} has each worker write its trial as it trains: use "
            "storage=sqlite"
        )


def _check_table(
    config: NasfwConfig,
    problem: Problem,
    space: BaseSearchSpace,
    scoring: dict[str, Any],
    pruning: dict[str, Any] | None,
) -> None:
    """A problem evaluated by lookup (:attr:`nasfw.Problem.table`) takes the graphs of its
    table's space, and nothing that needs training.

    Raises:
        ConfigError: naming ``search_space``, ``evaluation`` or ``pruner``.
    """
    table = problem.table
    assert table is not None
    misfit = table.fits(space)
    if misfit is not None:
        raise ConfigError(
            f"search_space={space.name} does not fit problem={problem.name}, which is looked up "
            f"in a table of search_space={table.space} graphs: {misfit}. Use "
            f"search_space={table.space}"
        )
    if scoring["name"] != "plain":
        raise ConfigError(
            f"evaluation={scoring['name']}: problem={problem.name} is looked up in a table, "
            "never trained; use evaluation=plain (or auto)"
        )
    if pruning is not None:
        raise ConfigError(
            f"pruner={config.pruner.name}: problem={problem.name}'s table records no learning "
            "curves to prune by; use pruner=none"
        )


def _scoring(config: NasfwConfig, reg: Registry) -> dict[str, Any]:
    """The evaluation settings as plain values; ``auto`` becomes the problem's preset."""
    if config.evaluation.name != "auto":
        name, settings = config.evaluation.name, as_dict(config.evaluation)
    else:
        name = config.problem.evaluation
        node = reg.configs.get(("evaluation", name))
        settings = as_dict(config_node(node)) if node is not None else {"name": name}
    if name != "plain" and name not in reg.scorers:
        raise ConfigError(
            f"evaluation={name}"
            + (
                f" (from problem.evaluation of problem={config.problem.name})"
                if config.evaluation.name == "auto"
                else ""
            )
            + f" is not a registered scorer (available: {sorted(['plain', *reg.scorers])})"
        )
    return {**settings, "name": name}


def _threads(config: NasfwConfig, launcher: Launcher[Any]) -> int:
    if config.train.threads:
        return config.train.threads
    return launcher.threads


def _screener(
    config: NasfwConfig, problem: Problem, tuner_cls: type[Tuner], ops: list[str]
) -> Screener | None:
    """``evaluation.screen=k``: the screen of the mini-benchmark DB's regressor for ``problem``
    (None for k = 1).

    Raises:
        ConfigError: the tuner cannot screen, or ``minibench.db`` cannot serve (no DB, no
            trained networks in it).
    """
    k = config.evaluation.screen
    if k <= 1:
        return None
    if not tuner_cls.screening:
        raise ConfigError(
            f"evaluation.screen={k}: tuner={config.tuner.name} cannot screen its proposals "
            "(random, evolution and codeepneat can); use evaluation.screen=1"
        )
    from nasfw.minibench.db import BestModelDB
    from nasfw.minibench.encoding import ProblemMeta
    from nasfw.minibench.screen import Screener, train_regressor

    mb = config.minibench
    db = BestModelDB(mb.db, must_exist=True)
    try:
        db.check_networks()
        regressor = train_regressor(db, mb.folding, ops, config.seed)
    except ValueError as err:
        raise ConfigError(f"minibench.db={mb.db}: {err} (evaluation.screen)") from None
    finally:
        db.close()
    return Screener(regressor, ProblemMeta.of(problem), mb.folding, ops, k)


def _check_asynchronous(
    config: NasfwConfig, tuner: Tuner, launcher: Launcher[Any], pruning: dict[str, Any] | None
) -> bool:
    """Whether the search runs asynchronously (``tuner.asynchronous``).

    Raises:
        ConfigError: naming ``tuner.asynchronous`` when the tuner cannot, a pruner is set (its
            decisions need trials written as they start), or the launcher's jobs write their
            own trials (cluster job arrays).
    """
    settings = config.tuner
    if not (isinstance(settings, AsynchronousTunerConfig) and settings.asynchronous):
        return False
    if not type(tuner).asynchronous:
        raise ConfigError(
            f"tuner.asynchronous=true: tuner={settings.name} proposes whole generations "
            "(random, evolution and tpe can run asynchronously)"
        )
    if pruning is not None:
        raise ConfigError(
            f"tuner.asynchronous=true cannot be combined with pruner={config.pruner.name}: a "
            "pruner needs each trial written as it starts; use pruner=none, or a synchronous tuner"
        )
    if launcher.workers_write_trials:
        raise ConfigError(
            f"tuner.asynchronous=true: launcher={config.launcher.name} runs each generation as a "
            "batch of jobs that write their own trials; use launcher=local"
        )
    return True


def _check_warm_start(config: NasfwConfig) -> None:
    """``tuner.warm_start`` names another study that exists in ``storage.url``: checked
    before this search's study is created (a refusal leaves no study behind), without
    creating a storage where there is none."""
    name = config.tuner.warm_start
    if not name:
        return
    from nasfw.dbfiles import sqlite_file
    from nasfw.storage import open_storage

    url = config.storage.url
    journal = url.startswith("journal://")
    path = Path(url.removeprefix("journal://")) if journal else sqlite_file(url)
    found: list[str] = []
    if path is None or path.is_file():
        found = [s.study_name for s in open_storage(url).get_all_studies()]
    if name == config.study_name or name not in found:
        studies = sorted(n for n in found if "::" not in n and n != config.study_name)
        raise ConfigError(
            f"tuner.warm_start={name}: "
            + (
                "a search cannot warm-start from itself"
                if name == config.study_name
                else "no such study"
            )
            + f" in storage.url={url} (studies there: {studies or 'none'})"
        )


def _warm_start_trials(ledger: Ledger, name: str | None) -> list[TrialRecord] | None:
    """The finished trials of study ``name`` in the search's storage (``tuner.warm_start``;
    None when unset)."""
    if not name:
        return None
    names = [s.study_name for s in ledger.storage.get_all_studies()]
    if name not in names or name == ledger.study.study_name:
        found = sorted(n for n in names if "::" not in n and n != ledger.study.study_name)
        raise ConfigError(
            f"tuner.warm_start={name}: "
            + ("a search cannot warm-start from itself" if name in names else "no such study")
            + f" in storage.url={ledger.url} (studies there: {found or 'none'})"
        )
    return Ledger(ledger.url, name).records()
