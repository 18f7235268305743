"""The search loop: tuner.ask() -> launcher.map(evaluate) -> study -> tuner.tell() -> hooks."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasfw.graph import ArchGraph
from nasfw.tuner import Candidate, Result

if TYPE_CHECKING:
    import optuna
    from omegaconf import DictConfig
    from torch import nn

    from nasfw.problem import Problem
    from nasfw.search_space import SearchSpace
    from nasfw.tuner import Tuner


@dataclass
class TrialRecord:
    """One evaluated candidate as stored in the study."""

    number: int
    generation: int
    index: int
    graph: ArchGraph
    result: Result
    params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    # The key of the evaluation whose weights this network started from (Candidate.init_from).
    init_from: str | None = None
    # False for networks that only serve the tuner (Candidate.exportable).
    exportable: bool = True
    # The key of the evaluation of this network whose training it continued (Candidate.resume_from).
    resume_from: str | None = None
    # The Optuna distributions of ``params`` (what a sampler needs to learn from the trial).
    distributions: dict[str, Any] = field(default_factory=dict)

    def candidate(self) -> Candidate:
        """The :class:`nasfw.Candidate` this trial evaluated, as far as the study keeps it
        (not ``keep_weights``, a request that was already served)."""
        return Candidate(
            self.graph,
            params=dict(self.params),
            distributions=dict(self.distributions),
            train=dict(self.train),
            attrs=dict(self.attrs),
            init_from=self.init_from,
            exportable=self.exportable,
            resume_from=self.resume_from,
        )

    @property
    def key(self) -> str:
        """The evaluation's :attr:`nasfw.Candidate.key`."""
        from nasfw.tuner import evaluation_key

        return evaluation_key(self.graph, self.train, self.init_from, self.resume_from)

    @property
    def rank(self) -> tuple[float, int, int]:
        """Sort key, higher is better: fitness, ties to the earlier (generation, index).

        Trial numbers follow completion order with several workers, so they cannot break ties
        reproducibly; a candidate's place in its generation can.
        """
        return (self.result.fitness, -self.generation, -self.index)


@dataclass
class SearchContext:
    """What lifecycle hooks see. ``plugin_state`` is scratch space, one key per plugin."""

    cfg: DictConfig
    problem: Problem
    space: SearchSpace
    tuner: Tuner
    study: optuna.Study
    output_dir: Path
    history: list[TrialRecord] = field(default_factory=list)
    # First generation run by this process (> 0 when the search resumed).
    start_generation: int = 0
    # Set at the end: the best candidate retrained on train data, and where it was exported.
    best_model: nn.Module | None = None
    export_dir: Path | None = None
    # What the post-processor reported (one row per network it processed).
    postproc_report: list[dict[str, Any]] = field(default_factory=list)
    # Wall seconds of each generation (asking, evaluating, telling), kept across resumes: the
    # seeds' "time required for evolving a series of generations".
    generation_seconds: dict[int, float] = field(default_factory=dict)
    # Evaluations the launcher runs at once (Launcher.workers; 1 for launcher.workers=0).
    workers: int = 1
    # Set when the search stopped on an exception (KeyboardInterrupt included).
    error: BaseException | None = None
    plugin_state: dict[str, Any] = field(default_factory=dict)

    def best(self) -> TrialRecord | None:
        """The best network trained to the full budget: the highest-ranked ``ok``, exportable
        trial among those whose :attr:`nasfw.Result.budget` reaches ``train.epochs`` (or,
        before any does, the largest budget reached), so a network scored after 1 epoch is
        never compared with 5-epoch ones. Pruned and failed trials are never the best."""
        full = self.full_budget()
        ok = [t for t in self.history if t.result.ok and t.exportable]
        ok = [t for t in ok if t.result.trained_budget >= full]
        return max(ok, key=lambda t: t.rank) if ok else None

    def worker_utilisation(self, generation: int) -> float | None:
        """Busy time / (workers x wall time) of ``generation``: the seconds its evaluations ran
        (reused results take none) over what :attr:`workers` could give in the generation's
        wall seconds (:attr:`generation_seconds`; None before it is known)."""
        wall = self.generation_seconds.get(generation)
        if not wall:
            return None
        busy = sum(
            t.result.finished - t.result.started
            for t in self.history
            if t.generation == generation
            and t.result.started is not None
            and t.result.finished is not None
            and "reused_from" not in t.result.extra
        )
        return busy / (max(1, self.workers) * wall)

    def full_budget(self) -> int:
        """The budget (epochs) networks are compared at: ``train.epochs``, or the largest
        budget an ``ok`` exportable trial has reached while none has reached it yet."""
        budgets = [t.result.trained_budget for t in self.history if t.result.ok and t.exportable]
        reached = max(budgets, default=0)
        from omegaconf import OmegaConf

        epochs = OmegaConf.select(self.cfg, "train.epochs") if self.cfg is not None else None
        return reached if epochs is None else min(int(epochs), reached)


def fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """The settings that define a search's results (not where it runs or is tracked)."""
    from omegaconf import OmegaConf

    full = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(full, dict)
    keys = ("tuner", "search_space", "problem", "train", "evaluation", "seed")
    found = {k: full[k] for k in keys}
    # Where it trains is not what it searches: a search may resume on another machine (each
    # trial records its device). train.precision and train.deterministic stay.
    # curve_every only adds scores along the way: the training and its result are the same.
    found["train"] = {k: v for k, v in found["train"].items() if k not in ("device", "curve_every")}
    return found


def _spaces_for(modality: str, reg: Any) -> list[str]:
    """Names of the search spaces (built-in presets and plugins') that serve ``modality``."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    from nasfw.minibench.auto import AUTO
    from nasfw.registry import config_node

    nodes: dict[str, Any] = {}
    for path in files("nasfw.conf").joinpath("search_space").iterdir():
        if path.name.endswith(".yaml"):
            nodes[path.name.removesuffix(".yaml")] = OmegaConf.load(str(path))
    for (group, name), node in reg.configs.items():
        if group == "search_space":
            nodes[name] = OmegaConf.create(config_node(node))
    return sorted(
        n
        for n, node in nodes.items()
        if modality in node.get("modalities", ["image"]) and n != AUTO  # not a constraint set
    )


def _schema(node: Any, schema: type) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))


def _threads(cfg: DictConfig, workers: int) -> int:
    import os

    if cfg.train.threads:
        return int(cfg.train.threads)
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _scoring(cfg: DictConfig, problem_config: Any, reg: Any) -> dict[str, Any]:
    """The evaluation settings as a plain dict; ``auto`` becomes the problem's preset."""
    import dataclasses

    from omegaconf import OmegaConf

    from nasfw.config import ConfigError

    if cfg.evaluation.name != "auto":
        name, node = cfg.evaluation.name, cfg.evaluation
    else:
        name = problem_config.evaluation
        node = reg.configs.get(("evaluation", name), {"name": name})
        if dataclasses.is_dataclass(node):
            node = node() if isinstance(node, type) else node
    if name != "plain" and name not in reg.scorers:
        raise ConfigError(
            f"evaluation={name}"
            + (
                f" (from problem.evaluation of problem={problem_config.name})"
                if cfg.evaluation.name == "auto"
                else ""
            )
            + f" is not a registered scorer (available: {sorted(['plain', *reg.scorers])})"
        )
    settings = OmegaConf.to_container(OmegaConf.structured(node), resolve=True, enum_to_str=True)
    assert isinstance(settings, dict)
    return {**settings, "name": name}


def run_search(cfg: DictConfig, output_dir: Path, console: Any = None) -> SearchContext:
    """Run (or resume) the search ``cfg`` describes; return its context with the history.

    Bad configuration fails here, before any training, with an error naming the key.
    """
    import optuna
    from rich.console import Console

    from nasfw.config import (
        ProblemConfig,
        SearchSpaceConfig,
        TrainConfig,
        check_settings,
        check_writable,
    )
    from nasfw.evaluate import Evaluator, load_problem
    from nasfw.lease import DriverLease
    from nasfw.ledger import Ledger
    from nasfw.registry import registry
    from nasfw.search_space import SearchSpace, SearchSpaceError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    console = console or Console(stderr=True)
    check_settings(cfg)
    reg = registry()
    problem_config: ProblemConfig = _schema(cfg.problem, ProblemConfig)
    train_config: TrainConfig = _schema(cfg.train, TrainConfig)
    from nasfw.minibench.auto import AUTO

    auto_space = str(cfg.search_space.name) == AUTO
    space = None if auto_space else SearchSpace(cfg.search_space, reg.ops)
    tuner_cls = reg.get("tuners", cfg.tuner.name)
    launcher_cls = reg.get("launchers", cfg.launcher.name)
    if cfg.postproc.name != "none":
        reg.get("postprocessors", cfg.postproc.name)
    scoring = _scoring(cfg, problem_config, reg)
    from nasfw.pruning import pruner_settings

    pruning = pruner_settings(cfg, scoring["name"])
    problem = load_problem(problem_config)
    auto = None
    if auto_space:  # mini-benchmarking: the DB's classifier will pick the constraint set
        from nasfw.minibench.auto import AutoSpace

        auto = AutoSpace(cfg, problem, sorted(reg.ops))
        space = SearchSpace(_schema(auto.probe_space, SearchSpaceConfig), reg.ops)
    assert space is not None
    if not space.accepts(problem.modality):
        serving = _spaces_for(problem.modality, reg)
        hint = (
            f" (search_space={' or search_space='.join(serving)})"
            if serving
            else " (none is registered: write one, see the README)"
        )
        raise SearchSpaceError(
            f"search_space={space.name} serves {list(space.modalities)} problems but "
            f"problem={problem.name} is {problem.modality}; pick a search space for "
            f"{problem.modality} data{hint}"
        )
    # Tuner and launcher check their settings first: a bad config must not leave its
    # fingerprint in a new study, or the corrected rerun would be refused as another search.
    tuner = tuner_cls(cfg.tuner, space, int(cfg.seed))
    tuner.problem, tuner.train = problem, train_config
    screener = _screener(cfg, problem, tuner, sorted(reg.ops))
    tuner.screen = screener
    launcher = launcher_cls(cfg.launcher)
    lease: DriverLease | None = None
    try:
        launcher.check_device(str(cfg.train.device))
        from nasfw.asynchronous import check_asynchronous

        asynchronous = check_asynchronous(cfg, tuner, launcher, pruning)
        # Everything the run will write to is checked before the study exists.
        check_writable(_export_path(cfg, output_dir), "export_dir")
        _hooks().nasfw_check_config(cfg=cfg)
        ledger = Ledger(cfg.storage.url, cfg.study_name)
        # Before anything is written: a second driver on the study refuses here.
        lease = DriverLease(ledger.storage, cfg.study_name)
        lease.acquire()
        warm = (
            _warm_start_trials(ledger, str(cfg.tuner.warm_start))
            if cfg.tuner.get("warm_start")
            else None
        )
        if warm is not None:
            tuner.warm_start(warm)
        ledger.check_fingerprint(fingerprint(cfg))
        choice = None
        if auto is not None:
            from nasfw.minibench.auto import stored_choice

            choice = stored_choice(ledger)
            if choice is not None:  # a resumed search keeps its constraint set
                space, tuner = _tuner_in(
                    choice["space"], tuner_cls, cfg, reg, problem, train_config, warm, screener
                )
        ledger.set_metric_name(f"val_{problem.metric}")
        saved = ledger.load_state()
        ledger.fail_interrupted()  # evaluations a killed driver left RUNNING (pruner=...)
        start_generation = 0
        if saved is not None:
            last, state = saved
            tuner.restore(state)
            start_generation = last + 1
        context = SearchContext(
            cfg=cfg,
            problem=problem,
            space=space,
            tuner=tuner,
            study=ledger.study,
            output_dir=output_dir,
            history=ledger.records(),
            start_generation=start_generation,
            generation_seconds=ledger.generation_seconds(),
            workers=launcher.workers,
        )
    except BaseException:
        launcher.close()
        if lease is not None:
            lease.release()
        raise
    hook = _hooks()
    best: TrialRecord | None = None
    try:
        if saved is not None:
            console.print(
                f"Resuming study [bold]{cfg.study_name}[/] after generation {saved[0]} "
                f"({len(context.history)} evaluations on record)"
            )
        evaluator = Evaluator(
            problem=problem_config,
            train=train_config,
            seed=int(cfg.seed),
            max_params=space.max_params,
            threads=_threads(cfg, launcher.workers),
            scoring=scoring,
            weights=weight_store(cfg),
        )
        # Workers import torch and load the data while the trackers open their stores. Not
        # earlier: a config refused before this point must not wait for workers to start.
        launcher.warm_up(evaluator)
        hook.nasfw_search_start(context=context)
        if auto is not None:
            if choice is None:
                choice = _probe(context, ledger, launcher, evaluator, auto, console, pruning)
                space, tuner = _tuner_in(
                    choice["space"], tuner_cls, cfg, reg, problem, train_config, warm, screener
                )
                context.space, context.tuner = space, tuner
            evaluator = replace(evaluator, max_params=space.max_params)
            hook.nasfw_search_space_chosen(context=context, choice=choice)
        generation = start_generation
        started = time.perf_counter()
        first_step: float | None = None
        if asynchronous:
            from nasfw.asynchronous import run_asynchronous

            block = int(cfg.tuner.get("batch_size", launcher.workers))
            run_asynchronous(context, ledger, launcher, evaluator, console, block)
        while not asynchronous and (candidates := tuner.ask()):
            hook.nasfw_generation_start(
                context=context, generation=generation, candidates=candidates
            )
            records = _run_generation(
                context, ledger, launcher, evaluator, candidates, generation, console, pruning
            )
            if first_step is None:
                first_step = _report_first_step(console, ledger, records)
            tuner.tell(candidates, [r.result for r in records])
            context.generation_seconds[generation] = time.perf_counter() - started
            ledger.save_state(generation, tuner.state(), context.generation_seconds)
            _drop_unneeded_weights(context, evaluator.weights, generation)
            hook.nasfw_generation_end(context=context, generation=generation, trials=records)
            _report_generation(console, context, generation, records)
            generation += 1
            started = time.perf_counter()  # tracking and reporting are not the generation's
        best = context.best()
        if best is not None:
            _export_best(context, best, train_config)
        from nasfw.pareto import write_front

        write_front(context)  # beside the best model, before trackers copy its directory
        if cfg.postproc.name != "none":
            reg.get("postprocessors", cfg.postproc.name)(context, cfg.postproc)
    except BaseException as err:
        context.error = err
        raise
    finally:
        launcher.close()
        try:
            hook.nasfw_search_end(context=context, best=best)
        finally:
            lease.release()
    return context


def _tuner_in(
    space_config: dict[str, Any],
    tuner_cls: Any,
    cfg: DictConfig,
    reg: Any,
    problem: Problem,
    train_config: Any,
    warm: list[TrialRecord] | None,
    screener: Any,
) -> tuple[SearchSpace, Tuner]:
    """The search space ``search_space=auto`` chose, and the tuner made anew for it."""
    from nasfw.config import SearchSpaceConfig
    from nasfw.search_space import SearchSpace

    space = SearchSpace(_schema(space_config, SearchSpaceConfig), reg.ops)
    tuner = tuner_cls(cfg.tuner, space, int(cfg.seed))
    tuner.problem, tuner.train = problem, train_config
    tuner.screen = screener
    if warm is not None:
        tuner.warm_start(warm)
    return space, tuner


def _screener(cfg: DictConfig, problem: Problem, tuner: Tuner, ops: list[str]) -> Any:
    """``evaluation.screen=k``: the screen of the mini-benchmark DB's regressor for ``problem``
    (None for k = 1).

    Raises:
        ConfigError: the tuner cannot screen, or ``minibench.db`` cannot serve (no DB, no
            trained networks in it).
    """
    from nasfw.config import ConfigError

    k = int(cfg.evaluation.get("screen", 1))
    if k <= 1:
        return None
    if not type(tuner).screening:
        raise ConfigError(
            f"evaluation.screen={k}: tuner={cfg.tuner.name} cannot screen its proposals "
            "(random, evolution and codeepneat can); use evaluation.screen=1"
        )
    from nasfw.minibench.db import BestModelDB
    from nasfw.minibench.encoding import ProblemMeta
    from nasfw.minibench.screen import Screener, train_regressor

    db = BestModelDB(str(cfg.minibench.db), must_exist=True)
    try:
        regressor = train_regressor(db, int(cfg.minibench.folding), ops, int(cfg.seed))
    except ValueError as err:
        raise ConfigError(f"minibench.db={cfg.minibench.db}: {err} (evaluation.screen)") from None
    finally:
        db.close()
    return Screener(regressor, ProblemMeta.of(problem), int(cfg.minibench.folding), ops, k)


def _probe(
    context: SearchContext,
    ledger: Any,
    launcher: Any,
    evaluator: Any,
    auto: Any,
    console: Any,
    pruning: dict[str, Any] | None,
) -> dict[str, Any]:
    """``search_space=auto``'s probe: train its networks as generation -1 of the study
    (finished ones are reused on a resume), classify, keep the choice."""
    from nasfw.minibench.auto import PROBE_GENERATION, store_choice

    hook = _hooks()
    candidates = auto.probe_candidates(context.space)
    hook.nasfw_generation_start(context=context, generation=PROBE_GENERATION, candidates=candidates)
    records = _run_generation(
        context, ledger, launcher, evaluator, candidates, PROBE_GENERATION, console, pruning
    )
    hook.nasfw_generation_end(context=context, generation=PROBE_GENERATION, trials=records)
    _report_generation(console, context, PROBE_GENERATION, records)
    choice = auto.choose(records)
    store_choice(ledger, choice, context.output_dir, console)
    return choice


def weight_store(cfg: DictConfig) -> Any:
    """The :class:`nasfw.weights.WeightStore` of ``cfg``'s study (``storage.artifacts``, made
    absolute so jobs started elsewhere find it)."""
    from nasfw.weights import WeightStore

    path = Path(str(cfg.storage.get("artifacts", "nasfw-artifacts"))).expanduser()
    return WeightStore(str(path.absolute()), str(cfg.study_name))


def _warm_start_trials(ledger: Any, name: str) -> list[TrialRecord]:
    """The finished trials of study ``name`` in the search's storage (``tuner.warm_start``)."""
    from nasfw.config import ConfigError
    from nasfw.ledger import Ledger

    names = [s.study_name for s in ledger.storage.get_all_studies()]
    if name not in names or name == ledger.study.study_name:
        found = sorted(n for n in names if "::" not in n and n != ledger.study.study_name)
        raise ConfigError(
            f"tuner.warm_start={name}: "
            + ("a search cannot warm-start from itself" if name in names else "no such study")
            + f" in storage.url={ledger.url} (studies there: {found or 'none'})"
        )
    return Ledger(ledger.url, name).records()


def _drop_unneeded_weights(context: SearchContext, store: Any, generation: int) -> None:
    """Delete the stored weights no tuner needs any more (``Tuner.weights_needed``; the best
    network's stay, for the export); then stop if the rest exceed ``storage.weights_limit_mb``.

    Raises:
        ConfigError: over the limit (after the generation's state is saved: resumable).
    """
    from nasfw.config import ConfigError

    kept = {r.key for r in context.history if "weights" in r.result.extra}
    needed = context.tuner.weights_needed()
    if needed is not None:
        best = context.best()
        keep = set(needed) | ({best.key} if best is not None else set())
        for key in kept - keep:
            store.remove(key)
        kept &= keep
    limit = context.cfg.storage.get("weights_limit_mb")
    if limit is None:
        return
    size = sum(store.nbytes(key) for key in kept) / 1e6
    if size > float(limit):
        raise ConfigError(
            f"storage.weights_limit_mb={limit}: after generation {generation} the study keeps "
            f"{size:.1f} MB of weights its tuner still needs, in {store.path}. Nothing is "
            "lost: rerun with a larger limit to resume"
        )


def _hooks() -> Any:
    from nasfw.registry import plugin_manager

    return plugin_manager().hook


def _run_generation(
    context: SearchContext,
    ledger: Any,
    launcher: Any,
    evaluator: Any,
    candidates: list[Any],
    generation: int,
    console: Any,
    pruning: dict[str, Any] | None = None,
) -> list[TrialRecord]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    hook = _hooks()
    # Evaluations this generation already finished before an interruption are reused.
    records: dict[int, TrialRecord] = {}
    for record in context.history:
        if record.generation == generation and record.index < len(candidates):
            if record.graph.hash != candidates[record.index].graph.hash:
                raise RuntimeError(
                    f"resume mismatch in generation {generation}: trial {record.number} holds "
                    "another network than the tuner proposes now (was the code or config "
                    "changed?). Use a new study_name."
                )
            records[record.index] = record
    todo = [i for i in range(len(candidates)) if i not in records]
    # The same network with the same training settings gets the same seeded evaluation, so an
    # earlier result (this generation's twin, or an elite evaluated before) is reused.
    copies: dict[int, int | TrialRecord] = {}
    if context.cfg.reuse_evaluations:
        earlier = {r.key: r for r in context.history}
        first: dict[str, int] = {}
        for i in todo:
            key = candidates[i].key
            original = earlier.get(key)
            if _reusable(candidates[i], original):
                assert original is not None
                copies[i] = original
            elif key in first:
                copies[i] = first[key]
            else:
                first[key] = i
    todo = [i for i in todo if i not in copies]
    if launcher.workers > 1 and len(todo) > 1 and pruning is None:
        # Stragglers first: the generation ends with its slowest network, so the big ones
        # must not start last while the other workers sit idle. Not with a pruner: what it
        # prunes depends on the order trials report in, and one job at a time must prune
        # as the same search in the driver does.
        cost = _cost_estimates(context, [candidates[i] for i in todo])
        todo = [i for _, i in sorted(zip(cost, todo, strict=True), key=lambda p: -p[0])]
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"generation {generation}", total=len(candidates))
        progress.update(task, completed=len(records))

        def store(index: int, result: Any) -> None:
            record = ledger.record(candidates[index], result, generation, index)
            records[index] = record
            context.history.append(record)
            hook.nasfw_trial_complete(
                context=context, candidate=candidates[index], result=result, trial=record
            )
            progress.advance(task)

        def on_result(position: int, result: Any) -> None:
            store(todo[position], result)

        if getattr(launcher, "workers_write_trials", False) or pruning is not None:
            from nasfw.ledger import StoredEvaluation, absolute_url

            # Each job writes its own trial (a running one, with a pruner, that reports its
            # learning curve); on_result then only picks it up (Ledger.record).
            fn: Any = StoredEvaluation(
                evaluator, absolute_url(ledger.url), context.study.study_name, generation, pruning
            )
            launcher.map(fn, [(i, candidates[i]) for i in todo], on_result)
        else:
            launcher.map(evaluator, [candidates[i] for i in todo], on_result)
        for index, source in copies.items():
            original = source if isinstance(source, TrialRecord) else records[source]
            store(index, _reused(original))
    missing = [i for i in range(len(candidates)) if i not in records]
    if missing:
        raise RuntimeError(f"launcher returned no result for candidates {missing}")
    return [records[i] for i in range(len(candidates))]


def _reusable(candidate: Candidate, original: TrialRecord | None) -> bool:
    """Whether the earlier evaluation ``original`` (of the same :attr:`Candidate.key`, or None)
    stands for ``candidate``'s: a candidate that must keep its weights reuses only an
    evaluation that kept them."""
    return original is not None and (
        not candidate.keep_weights or "weights" in original.result.extra
    )


def _reused(original: TrialRecord) -> Result:
    """``original``'s result for another trial: marked ``reused_from``; not evaluated again,
    it takes no time (stored now, start = end)."""
    extra = {**original.result.extra, "reused_from": original.number}
    return replace(original.result, extra=extra, started=None, finished=None)


def process_started() -> float:
    """When this process started, in seconds since the epoch: from ``/proc`` where there is one
    (Linux; the interpreter's own start-up included), else when :mod:`nasfw.cli` was imported
    (``python -m nasfw``'s start, less Python's start-up and ``import nasfw``)."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            # Field 22, the start in clock ticks after boot, counted after the ")" that ends
            # field 2 (the command, which may hold spaces).
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            since_boot = float(uptime.read().split()[0])
        return time.time() - (since_boot - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        from nasfw.cli import STARTED

        return STARTED


def _report_first_step(console: Any, ledger: Any, records: list[TrialRecord]) -> float | None:
    """The seconds from this process's start to the search's first training step (the earliest
    of ``records``' :attr:`nasfw.Result.first_step`, on whichever machine it trained), printed
    in one line and stored in the study (``nasfw:first_step_seconds``). None when none of
    ``records`` trained here (all reused or resumed, or failed before training): the search
    then asks again after its next generation, until once a line is printed.

    Called after a generation, not at the first result: with several workers the first result
    back need not be the first to have started training, and every evaluation of a generation
    starts before any of the next one.
    """
    moments = [r.result.first_step for r in records if r.result.first_step is not None]
    if not moments:
        return None
    seconds = min(moments) - process_started()
    console.print(f"first training step {seconds:.1f} s after start")
    ledger.set_first_step_seconds(seconds)
    return seconds


def _cost_estimates(context: SearchContext, candidates: list[Any]) -> list[float]:
    """Each candidate's expected training cost: FLOPs of a forward pass (counted on the meta
    device) x its epochs; 0 for one that cannot be built (it fails at once)."""
    import torch

    from nasfw.builder import build_model, model_cost

    epochs = int(context.cfg.train.epochs)
    found = []
    for candidate in candidates:
        try:
            with torch.device("meta"):
                model = build_model(candidate.graph, context.problem)
                flops = model_cost(model, context.problem.input_shape).flops
        except Exception:  # the evaluation reports why; it takes no time
            flops = 0
        found.append(float(flops) * int(candidate.train.get("epochs", epochs)))
    return found


def _report_generation(
    console: Any, context: SearchContext, generation: int, records: list[TrialRecord]
) -> None:
    import statistics

    ok = [r.result.metric for r in records if r.result.ok and r.result.metric is not None]
    pruned = sum(r.result.pruned for r in records)
    best = context.best()
    metric = context.problem.metric
    console.print(
        f"generation {generation}: {len(ok)} ok, "
        + (f"{pruned} pruned, " if pruned else "")
        + f"{len(records) - len(ok) - pruned} failed"
        + (f"; best {metric} {max(ok):.4f}, mean {statistics.fmean(ok):.4f}" if ok else "")
        + (f"; best so far {best.result.metric:.4f} (trial {best.number})" if best else "")
    )


def _export_path(cfg: DictConfig, output_dir: Path) -> Path:
    """Where the best model goes: ``export_dir``, relative to the run's output directory."""
    path = Path(cfg.export_dir).expanduser()
    return path if path.is_absolute() else output_dir / path


def _export_best(context: SearchContext, best: TrialRecord, train_config: Any) -> None:
    """Export the best network scored on test: its stored weights when its trial kept them,
    else retrained (same seed and initial weights as its evaluation)."""
    import json

    import torch

    from nasfw.builder import build_model
    from nasfw.evaluate import candidate_seed
    from nasfw.train import evaluate_model, prepare_device, train_model
    from nasfw.weights import load_matching

    candidate = best.candidate()
    seed = candidate_seed(int(context.cfg.seed), candidate)
    torch.manual_seed(seed)
    model = build_model(best.graph, context.problem)
    if "weights" in best.result.extra:
        # The evaluated network itself (it may have inherited weights no retraining gives).
        state = weight_store(context.cfg).load(best.key).state
        if load_matching(model, state) != len(model.state_dict()):
            raise RuntimeError(f"the stored weights of trial {best.number} do not fit its graph")
        device = prepare_device(train_config)
        model.to(device)
        trained_on = {
            "device": str(device),
            "device_name": best.result.extra.get("device_name", ""),
            "precision": str(train_config.precision),
            "weights": "the trial's stored weights (not retrained)",
        }
    else:
        source = best.resume_from or best.init_from
        if source is not None:
            load_matching(model, weight_store(context.cfg).load(source).state)
        outcome = train_model(model, context.problem, train_config, seed, overrides=best.train)
        trained_on = {
            "device": outcome.device,
            "device_name": outcome.device_name,
            "precision": str(outcome.precision),
        }
    test_metric = evaluate_model(
        model, context.problem, context.problem.test, precision=train_config.precision
    )
    model.cpu()  # exported and handed to post-processors and trackers as a CPU model
    best.result.extra["test_metric"] = test_metric
    export_dir = _export_path(context.cfg, context.output_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    (export_dir / "graph.json").write_text(best.graph.to_json(indent=2))
    torch.save(model.state_dict(), export_dir / "state_dict.pt")
    summary = {
        "trial": best.number,
        "study": context.study.study_name,
        f"val_{context.problem.metric}": best.result.metric,
        f"test_{context.problem.metric}": test_metric,
        "train_overrides": best.train,
        "trained_on": trained_on,
    }
    (export_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    preprocessing = context.problem.preprocessing
    if preprocessing is not None:  # the model expects standardised inputs: say how
        text = json.dumps(preprocessing.to_dict(), indent=2)
        (export_dir / "preprocessing.json").write_text(text)
    if context.problem.vocabulary is not None:  # the word of each token id the model takes
        words = json.dumps(context.problem.vocabulary, indent=0)
        (export_dir / "vocabulary.json").write_text(words)
    context.best_model = model
    context.export_dir = export_dir
