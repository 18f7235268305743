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

from nasfw.config import PrunerConfig
from nasfw.launcher import Launcher
from nasfw.records import Candidate, Result
from nasfw.registry import PluginError, preset, registry, space_node
from nasfw.search_space import BaseSearchSpace
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
