"""Contract suites that plugin authors reuse, as Optuna ships ``optuna.testing``.

Subclass a suite in your test module, provide the fixture it asks for, and pytest runs every
contract test against your plugin. This module, as written, tests the built-in random search
(put your tuner and its config in its place)::

    import pytest

    from nasfw.plugins.tuners.random_search import RandomSearch, RandomSearchConfig
    from nasfw.testing import TunerContract


    class TestRandomSearch(TunerContract):
        @pytest.fixture
        def make_tuner(self, space):
            config = RandomSearchConfig(n_trials=6, batch_size=2)
            return lambda seed: RandomSearch(config, space, seed)

``space`` comes from nasfw's pytest plugin (:mod:`nasfw.pytest_plugin`, installed with nasfw):
the ``tabular_mlp`` search space with every registered op. A test class that needs another
defines its own ``space`` fixture with :func:`load_search_space`.

The suites: :class:`TunerContract` (and :class:`AsynchronousTunerContract`),
:class:`LauncherContract`, :class:`PrunerContract`, :class:`ProblemContract`,
:class:`SearchSpaceContract` and :class:`LifecycleContract`. To call a lifecycle hook in a
test of your own, :func:`make_context` and :func:`make_trial` give the arguments a search
gives it, without running one.

Everything a launcher runs here is a module-level function, so it is importable in workers.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nasfw.config import NasfwConfig, ProblemConfig, PrunerConfig
from nasfw.context import SearchContext
from nasfw.launcher import Launcher
from nasfw.problem import Problem
from nasfw.records import Candidate, Result, TrialRecord
from nasfw.registry import PluginError, preset, registry, space_node
from nasfw.search_space import BaseSearchSpace, RandomChooser, SearchSpace
from nasfw.tuner import Tuner

# -- functions for launcher contracts (must be importable where the launcher runs them) -----


def square(x: int) -> Result:
    return Result(status="ok", metric=float(x * x))


def fail_on_odd(x: int) -> Result:
    if x % 2:
        raise ValueError(f"odd input {x}")
    return Result(status="ok", metric=float(x))


def die_on_three(x: int) -> Result:
    if x == 3:
        os._exit(13)  # the worker process disappears, as if killed
    return Result(status="ok", metric=float(x))


def napping_square(x: int) -> Result:
    """Square after ``(x % 3) / 2`` seconds: later items can finish first."""
    time.sleep((x % 3) / 2)
    return Result(status="ok", metric=float(x * x))


def problems_loaded(_: Any) -> Result:
    """How many problems this process has loaded (``metric``): a warmed-up worker has one."""
    from nasfw.evaluate import _PROBLEMS

    return Result(status="ok", metric=float(len(_PROBLEMS)))


_JOB_VARS = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "LSB_JOBID",
    "LSB_JOBINDEX",
)


def hold(task: tuple[str, int]) -> Result:
    """Note where it runs in ``<folder>/started-<i>`` (appending), then wait for ``release``.

    The launcher contract interrupts one of these mid-run, as a scheduler or an operator would.
    """
    folder, i = Path(task[0]), task[1]
    where = {"pid": os.getpid(), **{k: os.environ[k] for k in _JOB_VARS if k in os.environ}}
    with (folder / f"started-{i}").open("a") as f:
        f.write(json.dumps(where) + "\n")
    deadline = time.monotonic() + 120
    while not (folder / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return Result(status="ok", metric=float(i))


def load_search_space(name: str) -> BaseSearchSpace:
    """The search space ``search_space=<name>`` gives a run: a preset of nasfw's ``conf/`` or
    one a plugin registered, typed by its kind's schema (:class:`nasfw.SearchSpaceConfig` for
    YAML and mappings), with every registered op (so a tuner is tested on the space users
    will select)."""
    reg = registry()
    node = preset("search_space", name)
    if node is None:
        raise PluginError(f"no search space named {name!r} is a preset or registered")
    from omegaconf import OmegaConf

    if OmegaConf.get_type(node) in (None, dict):  # YAML or a mapping: the core's kind, stages
        node = space_node(node)
    return reg.space(node)


def fake_results(candidates: list[Candidate]) -> list[Result]:
    """Deterministic results from the graphs alone (no training), for tuner contracts."""
    results = []
    for c in candidates:
        size = sum(int(v) for n in c.graph for v in n.params.values() if isinstance(v, int))
        results.append(Result(status="ok", metric=math.sin(size) / 2 + 0.5))
    return results


class LauncherContract:
    """Contract tests for a :class:`nasfw.Launcher`; provide a ``launcher`` fixture.

    Two class attributes describe the launcher: ``interruptible`` (evaluations run outside the
    driver, so one can be killed: ``interrupt`` does it, by default by killing the process that
    runs it; a scheduler's suite overrides it with its cancel command) and ``retries_lost``
    (an evaluation whose job was killed is resubmitted rather than failed).
    """

    interruptible = True
    retries_lost = False

    @pytest.fixture
    def launcher(self) -> Launcher[Any]:
        raise NotImplementedError("provide a `launcher` fixture")

    def interrupt(self, where: dict[str, Any]) -> None:
        """Kill the evaluation that :func:`hold` reported running at ``where``."""
        import signal

        os.kill(int(where["pid"]), signal.SIGKILL)

    def test_results_in_order_when_later_items_finish_first(self, launcher: Launcher[Any]) -> None:
        arrived: list[int] = []
        results = launcher.map(napping_square, [2, 1, 0, 5], lambda i, r: arrived.append(i))
        assert [r.metric for r in results] == [4.0, 1.0, 0.0, 25.0]
        assert sorted(arrived) == [0, 1, 2, 3]

    def test_interrupted_evaluation_is_retried_or_failed(
        self, launcher: Launcher[Any], tmp_path: Path
    ) -> None:
        if not self.interruptible:
            pytest.skip("evaluations run in the driver: nothing to interrupt")
        tmp_path.chmod(0o777)
        outcome: list[list[Result]] = []
        items = [(str(tmp_path), i) for i in range(3)]
        worker = threading.Thread(target=lambda: outcome.append(launcher.map(hold, items)))
        worker.start()
        try:
            started = tmp_path / "started-0"
            deadline = time.monotonic() + 120
            while not started.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert started.exists(), "item 0 never started"
            time.sleep(0.2)
            where = json.loads(started.read_text().splitlines()[0])
            if where["pid"] == os.getpid():
                pytest.skip("evaluations run in the driver: nothing to interrupt")
            self.interrupt(where)
            time.sleep(0.5)
        finally:
            (tmp_path / "release").touch()
            worker.join(300)
        assert outcome, "map did not return"
        results = outcome[0]
        assert [r.ok for r in results[1:]] == [True, True]
        if self.retries_lost:
            assert results[0].ok and results[0].metric == 0.0, results[0].error
            assert len((tmp_path / "started-0").read_text().splitlines()) == 2
        else:
            assert not results[0].ok and results[0].error

    def test_results_in_order(self, launcher: Launcher[Any]) -> None:
        results = launcher.map(square, list(range(6)))
        assert [r.metric for r in results] == [float(x * x) for x in range(6)]

    def test_empty(self, launcher: Launcher[Any]) -> None:
        assert launcher.map(square, []) == []

    def test_exception_is_a_failed_result(self, launcher: Launcher[Any]) -> None:
        results = launcher.map(fail_on_odd, [0, 1, 2, 3])
        assert [r.ok for r in results] == [True, False, True, False]
        assert "odd input 1" in (results[1].error or "")

    def test_on_result_called_once_per_item(self, launcher: Launcher[Any]) -> None:
        seen: list[tuple[int, float | None]] = []
        launcher.map(square, [1, 2, 3], lambda i, r: seen.append((i, r.metric)))
        assert sorted(seen) == [(0, 1.0), (1, 4.0), (2, 9.0)]

    def test_streaming_evaluates_what_is_asked_as_it_is_asked(
        self, launcher: Launcher[Any]
    ) -> None:
        """``map_streaming``: every item asked is evaluated once; no more than ``workers``
        (+1 queued ahead) are pending at an ask; it ends when ``ask`` has nothing and nothing
        is pending."""
        if launcher.workers_write_trials:
            pytest.skip("its jobs write their own trials: the search never streams to it")
        todo, pending_seen, got = list(range(5)), [], {}

        def ask(pending: int) -> int | None:
            pending_seen.append(pending)
            return todo.pop(0) if todo else None

        launcher.map_streaming(napping_square, ask, lambda item, r: got.setdefault(item, r))
        assert {k: r.metric for k, r in got.items()} == {x: float(x * x) for x in range(5)}
        assert max(pending_seen) <= max(1, launcher.workers)

    def test_reusable_after_many_maps(self, launcher: Launcher[Any]) -> None:
        for k in range(3):
            assert [r.metric for r in launcher.map(square, [k])] == [float(k * k)]


class TunerContract:
    """Contract tests for a :class:`nasfw.Tuner`; provide ``make_tuner(seed) -> Tuner``."""

    max_generations = 50

    @pytest.fixture
    def make_tuner(self) -> Callable[[int], Tuner]:
        raise NotImplementedError("provide a `make_tuner` fixture")

    @staticmethod
    def run(tuner: Tuner, generations: int | None = None) -> list[list[str]]:
        """Ask/tell for ``generations`` (or until done); the graph hashes of each generation."""
        hashes = []
        while generations is None or len(hashes) < generations:
            candidates = tuner.ask()
            if not candidates:
                break
            tuner.tell(candidates, fake_results(candidates))
            hashes.append([c.graph.hash for c in candidates])
            assert len(hashes) <= TunerContract.max_generations, "the tuner never finishes"
        return hashes

    def test_candidates_are_valid(self, make_tuner: Callable[[int], Tuner]) -> None:
        tuner = make_tuner(0)
        candidates = tuner.ask()
        assert candidates, "the first ask() returned no candidate"
        for c in candidates:
            tuner.space.check(c.graph)

    def test_deterministic(self, make_tuner: Callable[[int], Tuner]) -> None:
        assert self.run(make_tuner(1)) == self.run(make_tuner(1))

    def test_seed_matters(self, make_tuner: Callable[[int], Tuner]) -> None:
        assert self.run(make_tuner(1)) != self.run(make_tuner(2))

    def test_finishes(self, make_tuner: Callable[[int], Tuner]) -> None:
        tuner = make_tuner(0)
        self.run(tuner)
        assert tuner.ask() == []

    def test_restore_continues_exactly(self, make_tuner: Callable[[int], Tuner]) -> None:
        import json

        uninterrupted = self.run(make_tuner(3))
        first = make_tuner(3)
        head = self.run(first, generations=1)
        # The state goes through JSON, as it does through the study.
        state = json.loads(json.dumps(first.state()))
        resumed = make_tuner(3)
        resumed.restore(state)
        assert head + self.run(resumed) == uninterrupted

    def test_failed_results_are_accepted(self, make_tuner: Callable[[int], Tuner]) -> None:
        tuner = make_tuner(0)
        candidates = tuner.ask()
        tuner.tell(candidates, [Result.failed("boom") for _ in candidates])
        assert isinstance(tuner.ask(), list)


class AsynchronousTunerContract(TunerContract):
    """:class:`TunerContract` plus the asynchronous protocol (``ask_one``/``tell_one``), for
    tuners with :attr:`nasfw.Tuner.asynchronous`; the tuner's config has ``n_trials``.

    :meth:`run_async` plays a search with ``workers`` evaluations at once whose results
    arrive oldest-first.
    """

    workers = 3

    @classmethod
    def run_async(cls, tuner: Tuner, stop_after: int | None = None) -> list[str]:
        """Graph hashes in the order asked, until the tuner has nothing more (or ``stop_after``
        results were told)."""
        asked: list[str] = []
        running: list[Candidate] = []
        told = 0
        while stop_after is None or told < stop_after:
            while len(running) < cls.workers and (c := tuner.ask_one(len(running))) is not None:
                running.append(c)
                asked.append(c.graph.hash)
            if not running:
                break
            candidate = running.pop(0)
            tuner.tell_one(candidate, fake_results([candidate])[0])
            told += 1
            assert told <= 10 * tuner.config.n_trials, "the tuner never finishes"
        return asked

    def test_asynchronous_asks_are_valid_and_deterministic(
        self, make_tuner: Callable[[int], Tuner]
    ) -> None:
        tuner = make_tuner(4)
        assert type(tuner).asynchronous
        asked = self.run_async(tuner)
        assert asked == self.run_async(make_tuner(4))

    def test_asynchronous_budget_counts_told_and_pending(
        self, make_tuner: Callable[[int], Tuner]
    ) -> None:
        tuner = make_tuner(0)
        assert len(self.run_async(tuner)) == tuner.config.n_trials
        assert tuner.ask_one(0) is None

    def test_results_of_lost_asks_are_told_after_a_restore(
        self, make_tuner: Callable[[int], Tuner]
    ) -> None:
        """A resume restores the last saved state, then tells it results whose asks died
        with the killed process; the search then goes on to its budget."""
        import json

        first = make_tuner(5)
        self.run_async(first, stop_after=2)
        state = json.loads(json.dumps(first.state()))
        lost = [first.ask_one(0), first.ask_one(1)]  # asked, finished, the state not saved
        resumed = make_tuner(5)
        resumed.restore(state)
        for candidate in lost:
            assert candidate is not None
            copy = Candidate(candidate.graph, dict(candidate.params), candidate.distributions)
            resumed.tell_one(copy, fake_results([copy])[0])
        assert 2 + 2 + len(self.run_async(resumed)) == resumed.config.n_trials


class PrunerContract:
    """Contract tests for a pruner; provide ``pruner``: the ``(Schema, factory)`` its plugin
    passes to ``register`` in ``register_pruners``."""

    @pytest.fixture
    def pruner(self) -> tuple[type[PrunerConfig], Callable[[Any], Any]]:
        raise NotImplementedError("provide a `pruner` fixture: (Schema, factory)")

    def test_the_schema_names_its_option(
        self, pruner: tuple[type[PrunerConfig], Callable[[Any], Any]]
    ) -> None:
        from nasfw.registry import pruner_name

        schema, _ = pruner
        assert schema().name == pruner_name(schema)

    def test_settings_travel_as_a_plain_dict(
        self, pruner: tuple[type[PrunerConfig], Callable[[Any], Any]]
    ) -> None:
        """What a worker gets (``nasfw.pruning.make_pruner``), from another process."""
        import dataclasses
        import pickle

        schema, _ = pruner
        settings = schema().for_run(5)
        assert isinstance(settings, schema)
        sent = pickle.loads(pickle.dumps(dataclasses.asdict(settings)))
        assert schema(**sent) == settings

    def test_the_pruner_follows_a_learning_curve(
        self, pruner: tuple[type[PrunerConfig], Callable[[Any], Any]]
    ) -> None:
        """Made from the defaults, it answers for a running trial after each epoch, with
        finished trials in the study (as the search asks it, through the storage)."""
        import optuna

        schema, factory = pruner
        made = factory(schema().for_run(3))
        assert isinstance(made, optuna.pruners.BasePruner)
        study = optuna.create_study(direction="maximize")
        for i in range(4):
            curve = {1: 0.5 + i / 10, 2: 0.6 + i / 10, 3: 0.7 + i / 10}
            study.add_trial(optuna.trial.create_trial(value=curve[3], intermediate_values=curve))
        trial = study.ask()
        for epoch in (1, 2, 3):
            trial.report(0.1, epoch)
            assert made.prune(study, study.trials[trial.number]) in (True, False)


# -- problems -------------------------------------------------------------------------------

# The values Problem.task and Problem.modality take (nasfw.problem.Task, Modality).
TASKS = ("classification", "regression")
MODALITIES = ("image", "tabular", "sequence", "text")
# A search space of each modality's, to train a network on a problem under test.
SPACE_OF_MODALITY = {
    "image": "image_small",
    "tabular": "tabular_mlp",
    "sequence": "sequence_small",
    "text": "text_small",
}


class ProblemContract:
    """Contract tests for a problem; provide ``problem``: the ``(loader, config)`` pair, i.e.
    what its plugin passes to ``register`` in ``register_problems`` and the
    :class:`nasfw.ProblemConfig` to load it with (small settings keep the tests quick).

    The splits must be what the training loop reads: ``x`` float32 shaped
    ``(n, *input_shape)`` (text: integer token ids in ``[0, vocab_size)``), ``y`` integer class
    indices in ``[0, n_outputs)`` for classification or floats shaped ``(n,)`` or
    ``(n, n_outputs)`` for regression, all finite, every split non-empty; loading twice gives
    the same data, and ``split_seed`` chooses the split (set ``fixed_splits = True`` for a
    problem whose splits are given by its data set). One network of the modality's search
    space then trains an epoch on it.
    """

    fixed_splits = False

    @pytest.fixture
    def problem(self) -> tuple[Callable[[ProblemConfig], Problem], ProblemConfig]:
        raise NotImplementedError("provide a `problem` fixture: (loader, ProblemConfig)")

    @pytest.fixture
    def loaded(self, problem: tuple[Callable[[ProblemConfig], Problem], ProblemConfig]) -> Problem:
        loader, config = problem
        made = loader(config)
        assert isinstance(made, Problem), f"the loader returned {made!r}, not a nasfw.Problem"
        return made

    def test_task_and_modality_are_known(self, loaded: Problem) -> None:
        assert loaded.task in TASKS, f"task {loaded.task!r} is not one of {TASKS}"
        assert loaded.modality in MODALITIES, f"modality {loaded.modality!r} not in {MODALITIES}"
        assert loaded.n_outputs >= 1
        assert all(int(d) >= 1 for d in loaded.input_shape) and loaded.input_shape

    def test_splits_are_shaped_and_typed_for_training(self, loaded: Problem) -> None:
        import numpy as np

        for name in ("train", "val", "test"):
            split = getattr(loaded, name)
            x, y = np.asarray(split.x), np.asarray(split.y)
            assert len(x) > 0, f"the {name} split is empty"
            assert len(x) == len(y), f"{name}: {len(x)} examples but {len(y)} targets"
            assert x.shape[1:] == tuple(loaded.input_shape), (
                f"{name}.x is shaped {x.shape}; input_shape is {loaded.input_shape}"
            )
            if loaded.vocab_size is not None:
                assert np.issubdtype(x.dtype, np.integer), f"{name}.x holds token ids: ints"
                assert x.min() >= 0 and x.max() < loaded.vocab_size, f"{name}.x: ids out of range"
            else:
                assert x.dtype == np.float32, f"{name}.x is {x.dtype}; nasfw trains on float32"
                assert np.isfinite(x).all(), f"{name}.x has NaN or infinite values"
            if loaded.task == "classification":
                assert np.issubdtype(y.dtype, np.integer), f"{name}.y is {y.dtype}: class indices"
                assert y.ndim == 1, f"{name}.y is shaped {y.shape}; one class index per example"
                assert y.min() >= 0 and y.max() < loaded.n_outputs, (
                    f"{name}.y has classes outside [0, n_outputs={loaded.n_outputs})"
                )
            else:
                assert np.issubdtype(y.dtype, np.floating), f"{name}.y is {y.dtype}: floats"
                assert y.shape[1:] in ((), (loaded.n_outputs,)), f"{name}.y is shaped {y.shape}"
                assert np.isfinite(y).all(), f"{name}.y has NaN or infinite values"

    def test_loading_is_deterministic(
        self, problem: tuple[Callable[[ProblemConfig], Problem], ProblemConfig], loaded: Problem
    ) -> None:
        import numpy as np

        loader, config = problem
        again = loader(config)
        for name in ("train", "val", "test"):
            first, second = getattr(loaded, name), getattr(again, name)
            assert np.array_equal(first.x, second.x) and np.array_equal(first.y, second.y), (
                f"two loads with the same settings gave different {name} splits"
            )

    def test_split_seed_chooses_the_split(
        self, problem: tuple[Callable[[ProblemConfig], Problem], ProblemConfig], loaded: Problem
    ) -> None:
        import dataclasses

        import numpy as np

        if self.fixed_splits:
            pytest.skip("fixed_splits: the data set gives the splits")
        loader, config = problem
        other = loader(dataclasses.replace(config, split_seed=config.split_seed + 1))
        assert not np.array_equal(loaded.val.x, other.val.x), (
            "problem.split_seed does not change the split (set fixed_splits = True if the "
            "data set gives them)"
        )

    def test_a_network_trains_on_it(self, loaded: Problem) -> None:
        import numpy as np

        from nasfw.builder import build_model
        from nasfw.config import TrainConfig
        from nasfw.train import train_model

        space = load_search_space(SPACE_OF_MODALITY[loaded.modality])
        graph = space.sample(RandomChooser(np.random.default_rng(0)))
        model = build_model(graph, loaded)
        outcome = train_model(model, loaded, TrainConfig(epochs=1, device="cpu"), seed=0)
        assert not outcome.diverged
        assert math.isfinite(outcome.metric)


# -- search spaces --------------------------------------------------------------------------

# Small stand-ins of each modality's data, to build networks of a search space for.
_SHAPES: dict[str, tuple[tuple[int, ...], int | None]] = {
    "image": ((1, 12, 12), None),
    "tabular": ((6,), None),
    "sequence": ((2, 32), None),
    "text": ((16,), 40),
}


class SearchSpaceContract:
    """Contract tests for a search space; provide ``space``: the :class:`nasfw.SearchSpace`
    (for a registered or preset one, :func:`load_search_space`, which also validates its
    config against :class:`nasfw.SearchSpaceConfig`).

    Every sample and every mutation must pass the space's own :meth:`~nasfw.SearchSpace.check`,
    sampling must be deterministic per seed and vary across seeds, and sampled networks must
    build for each modality the space declares.
    """

    samples = 12

    @pytest.fixture
    def space(self) -> SearchSpace:
        raise NotImplementedError("provide a `space` fixture (nasfw.testing.load_search_space)")

    def sampled(self, space: SearchSpace, seed: int) -> list[Any]:
        import numpy as np

        rng = np.random.default_rng(seed)
        return [space.sample(RandomChooser(rng)) for _ in range(self.samples)]

    def test_samples_are_in_the_space(self, space: SearchSpace) -> None:
        for graph in self.sampled(space, 0):
            space.check(graph)

    def test_sampling_is_deterministic_and_seeded(self, space: SearchSpace) -> None:
        first = [g.hash for g in self.sampled(space, 1)]
        assert first == [g.hash for g in self.sampled(space, 1)]
        assert first != [g.hash for g in self.sampled(space, 2)], "the seed changes nothing"

    def test_mutations_stay_in_the_space(self, space: SearchSpace) -> None:
        import numpy as np

        rng = np.random.default_rng(3)
        for graph in self.sampled(space, 3):
            space.check(space.mutate(graph, rng))

    def test_samples_build_for_its_modalities(self, space: SearchSpace) -> None:
        from types import SimpleNamespace

        from nasfw.builder import build_model

        modalities = list(space.modalities or MODALITIES)
        assert set(modalities) <= set(MODALITIES), f"unknown modalities {modalities}"
        for modality in modalities:
            shape, vocab = _SHAPES[modality]
            problem = SimpleNamespace(input_shape=shape, n_outputs=3, vocab_size=vocab)
            for graph in self.sampled(space, 4)[:4]:
                model = build_model(graph, problem)  # type: ignore[arg-type]
                assert sum(p.numel() for p in model.parameters()) > 0


# -- lifecycle hooks: their arguments, and a plugin's contract ------------------------------

# The small run make_context composes before its overrides: iris, MLPs, random search.
CONTEXT_DEFAULTS = (
    "problem=iris",
    "search_space=tabular_mlp",
    "tuner=random",
    "tracking=none",
    "launcher.workers=0",
    "train.epochs=1",
)


def make_context(
    output_dir: Path, *overrides: str, plugins: tuple[object, ...] = ()
) -> SearchContext:
    """A :class:`nasfw.SearchContext` as a search hands it to lifecycle hooks, without
    running one: the run's typed config as ``python -m nasfw`` composes it from
    :data:`CONTEXT_DEFAULTS` and ``overrides`` (``plugins.<name>.<key>=value`` included), its
    problem loaded, its search space, its tuner constructed, an in-memory Optuna study named
    ``study_name``, and ``output_dir`` as the run's directory (relative paths stay relative
    to the current directory, as in a search). ``plugins`` are plugin objects not installed
    through an entry point whose config nodes the config must have (installed ones always
    are); the history is empty: add trials with :func:`make_trial`.
    """
    import optuna

    from nasfw.compose import compose
    from nasfw.config import typed_config
    from nasfw.evaluate import load_problem
    from nasfw.registry import collect, make_plugin_manager, plugin_manager
    from nasfw.tuner import make_tuner

    # Installed plugins are in the process-wide registry already.
    extra = tuple(p for p in plugins if not plugin_manager().is_registered(p))
    reg = collect(make_plugin_manager(extra_plugins=extra)) if extra else registry()
    cfg: NasfwConfig = typed_config(compose(*CONTEXT_DEFAULTS, *overrides, reg=reg))
    problem = load_problem(cfg.problem)
    space = reg.space(cfg.search_space)
    tuner = make_tuner(
        reg.get("tuners", cfg.tuner.name),
        cfg.tuner,
        space,
        cfg.seed,
        problem=problem,
        train=cfg.train,
        screen=None,
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=cfg.study_name, direction="maximize")
    return SearchContext(
        cfg=cfg, problem=problem, space=space, tuner=tuner, study=study, output_dir=output_dir
    )


def make_trial(
    context: SearchContext,
    status: str = "ok",
    *,
    generation: int = 0,
    metric: float | None = None,
    **result: Any,
) -> TrialRecord:
    """The next trial of ``context``'s search, as ``nasfw_trial_complete`` gets it (and
    ``nasfw_generation_end``/``nasfw_search_end`` through ``context.history``, to which it is
    appended): a network sampled from ``context.space`` (seeded by the trial's number), and
    its :class:`nasfw.Result` with ``status`` (``"ok"``, ``"failed"`` or ``"pruned"``),
    ``metric`` (by default one that grows with the trial's number; ``None`` when failed) and
    any other ``Result`` field in ``result``. The candidate is ``record.candidate``."""
    import numpy as np

    number = len(context.history)
    graph = context.space.sample(RandomChooser(np.random.default_rng(number)))
    epochs = int(context.cfg.train.epochs)
    if status == "failed":
        outcome = Result.failed(result.pop("error", "boom"), **result)
    else:
        if metric is None:
            metric = 0.5 + number / 100
        facts: dict[str, Any] = {
            "epochs": epochs if status == "ok" else 1,
            "n_params": 100 + number,
            "flops": 1000 + number,
            "train_seconds": 0.1,
            **result,
        }
        outcome = Result(status, metric=metric, **facts)  # type: ignore[arg-type]
    same_generation = [t for t in context.history if t.generation == generation]
    record = TrialRecord(number, generation, len(same_generation), Candidate(graph), outcome)
    context.history.append(record)
    return record


class LifecycleContract:
    """Contract tests for a lifecycle plugin (one that implements ``nasfw_*`` hooks); provide
    ``plugin``, the module or object its entry point names, and, when it needs settings to
    do anything, ``overrides``: the command-line settings that switch it on (e.g.
    ``["plugins.trial_csv.path=trials.csv"]``; relative paths are relative to the test's
    ``tmp_path``, the current directory while the hooks run).

    Its hooks are called with :func:`make_context`/:func:`make_trial` arguments in the order
    a search calls them: a whole search (ok, failed and pruned trials), a resumed one, one
    whose tuner proposed nothing, and one stopped by an error (``context.error`` set, no best).
    None may raise, and the plugin must load without warnings (a ``nasfw_*`` function without
    ``@nasfw.hookimpl`` is one). Check what the plugin wrote in tests of your own, with the
    same factories.
    """

    @pytest.fixture
    def plugin(self) -> object:
        raise NotImplementedError("provide a `plugin` fixture (the module its entry point names)")

    @pytest.fixture
    def overrides(self) -> list[str]:
        return []

    @pytest.fixture
    def hooks(self, plugin: object) -> Any:
        """The hooks of a plugin manager holding ``plugin`` alone."""
        import warnings

        import pluggy

        from nasfw import hookspecs
        from nasfw.registry import PluginWarning, _register

        pm = pluggy.PluginManager("nasfw")
        pm.add_hookspecs(hookspecs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PluginWarning)
            _register(pm, plugin, None)
        assert not [w for w in caught if issubclass(w.category, PluginWarning)], [
            str(w.message) for w in caught
        ]
        pm.check_pending()
        return pm.hook

    @pytest.fixture
    def context(
        self, plugin: object, overrides: list[str], tmp_path: Path, monkeypatch: Any
    ) -> SearchContext:
        monkeypatch.chdir(tmp_path)
        return make_context(tmp_path / "run", *overrides, plugins=(plugin,))

    def test_a_whole_search(self, hooks: Any, context: SearchContext) -> None:
        hooks.nasfw_check_config(cfg=context.cfg)
        hooks.nasfw_search_start(context=context)
        for generation in (0, 1):
            trials = [
                make_trial(context, status, generation=generation)
                for status in ("ok", "failed", "pruned")
            ]
            hooks.nasfw_generation_start(
                context=context, generation=generation, candidates=[t.candidate for t in trials]
            )
            for trial in trials:
                hooks.nasfw_trial_complete(
                    context=context, candidate=trial.candidate, result=trial.result, trial=trial
                )
            hooks.nasfw_generation_end(context=context, generation=generation, trials=trials)
        best = context.best()
        assert best is not None and best.number == 3
        hooks.nasfw_search_end(context=context, best=best)

    def test_a_resumed_search(self, hooks: Any, context: SearchContext) -> None:
        earlier = [make_trial(context, generation=0) for _ in range(2)]
        context.start_generation = 1
        hooks.nasfw_check_config(cfg=context.cfg)
        hooks.nasfw_search_start(context=context)
        trial = make_trial(context, generation=1)
        hooks.nasfw_generation_start(context=context, generation=1, candidates=[trial.candidate])
        hooks.nasfw_trial_complete(
            context=context, candidate=trial.candidate, result=trial.result, trial=trial
        )
        hooks.nasfw_generation_end(context=context, generation=1, trials=[trial])
        hooks.nasfw_search_end(context=context, best=context.best())
        assert context.history[:2] == earlier

    def test_a_search_without_trials(self, hooks: Any, context: SearchContext) -> None:
        hooks.nasfw_check_config(cfg=context.cfg)
        hooks.nasfw_search_start(context=context)
        hooks.nasfw_search_end(context=context, best=None)

    def test_a_search_stopped_by_an_error(self, hooks: Any, context: SearchContext) -> None:
        hooks.nasfw_check_config(cfg=context.cfg)
        hooks.nasfw_search_start(context=context)
        trial = make_trial(context, "failed", error="interrupted")
        hooks.nasfw_generation_start(context=context, generation=0, candidates=[trial.candidate])
        hooks.nasfw_trial_complete(
            context=context, candidate=trial.candidate, result=trial.result, trial=trial
        )
        context.error = KeyboardInterrupt()
        hooks.nasfw_search_end(context=context, best=None)
