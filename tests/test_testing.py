"""nasfw.testing: the contract suites for problems, search spaces and lifecycle plugins, run
against built-in ones, and shown to fail for broken ones; the hook-argument factories."""

from __future__ import annotations

import csv
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from nasfw import ProblemConfig, hookimpl, registry, setting
from nasfw.testing import (
    LifecycleContract,
    ProblemContract,
    SearchSpaceContract,
    load_search_space,
    make_context,
    make_trial,
)

pytest_plugins = ["pytester"]


class TestIris(ProblemContract):
    @pytest.fixture
    def problem(self) -> Any:
        return registry().problems["iris"], ProblemConfig(name="iris")


class TestFriedman1(ProblemContract):
    """A regression problem."""

    @pytest.fixture
    def problem(self) -> Any:
        return registry().problems["friedman1"], ProblemConfig(name="friedman1", n_samples=200)


class TestTabularMlp(SearchSpaceContract):
    @pytest.fixture
    def space(self) -> Any:
        return load_search_space("tabular_mlp")


class TestTextSmall(SearchSpaceContract):
    """Token ids in, built for the text modality."""

    @pytest.fixture
    def space(self) -> Any:
        return load_search_space("text_small")


# -- a lifecycle plugin: one CSV row per trial ----------------------------------------------


@dataclass
class RowsConfig:
    # The CSV file; None writes nothing.
    path: str | None = None
    digits: int = setting(3, ge=0)


def rows_plugin() -> ModuleType:
    module = ModuleType("rows")

    def register_configs(register: Callable[[str, str, Any], None]) -> None:
        register("plugins", "rows", RowsConfig)

    def nasfw_trial_complete(context: Any, result: Any, trial: Any) -> None:
        settings = context.cfg.plugins.rows
        if settings.path is None:
            return
        metric = "" if result.metric is None else f"{result.metric:.{settings.digits}f}"
        with Path(settings.path).open("a", newline="") as f:
            csv.writer(f).writerow([trial.number, trial.generation, result.status, metric])

    for function in (register_configs, nasfw_trial_complete):
        function.__module__ = module.__name__
        setattr(module, function.__name__, hookimpl(function))
    return module


ROWS = rows_plugin()


class TestRows(LifecycleContract):
    @pytest.fixture
    def plugin(self) -> Any:
        return ROWS

    @pytest.fixture
    def overrides(self) -> list[str]:
        return ["plugins.rows.path=rows.csv"]

    def test_it_wrote_what_the_search_gave_it(self, hooks: Any, context: Any) -> None:
        self.test_a_whole_search(hooks, context)
        rows = list(csv.reader(Path("rows.csv").read_text().splitlines()))
        assert rows[:3] == [
            ["0", "0", "ok", "0.500"],
            ["1", "0", "failed", ""],
            ["2", "0", "pruned", "0.520"],
        ]
        assert len(rows) == 6 and rows[5][:3] == ["5", "1", "pruned"]


def test_make_context_is_the_run_as_the_cli_composes_it(tmp_path: Path) -> None:
    context = make_context(tmp_path, "seed=3", "tuner=tpe", plugins=(ROWS,))
    assert context.cfg.seed == 3 and context.cfg.tuner.name == "tpe"
    assert context.cfg.plugins.rows == RowsConfig()  # the plugin's node, typed
    assert context.problem.name == "iris" and context.problem.modality == "tabular"
    assert context.study.study_name == "tpe-iris-tabular_mlp-seed3"
    assert context.tuner.ask(), "the tuner is constructed complete"
    assert context.history == [] and context.output_dir == tmp_path


def test_make_trial_numbers_trials_and_fills_the_history(tmp_path: Path) -> None:
    context = make_context(tmp_path)
    first = make_trial(context)
    failed = make_trial(context, "failed", error="too large")
    late = make_trial(context, generation=1, metric=0.9)
    assert [t.number for t in context.history] == [0, 1, 2]
    assert [(t.generation, t.index) for t in context.history] == [(0, 0), (0, 1), (1, 0)]
    context.space.check(first.graph)
    assert first.result.ok and first.result.epochs == context.cfg.train.epochs
    assert failed.result.status == "failed" and failed.result.error == "too large"
    assert failed.result.metric is None
    assert context.best() is late


# -- the suites fail for broken plugins -----------------------------------------------------


def test_the_contracts_fail_for_broken_plugins(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_broken=textwrap.dedent(
            """
            import dataclasses
            from types import ModuleType

            import numpy as np
            import pytest

            from nasfw import ProblemConfig, hookimpl, registry
            from nasfw.testing import LifecycleContract, ProblemContract, SearchSpaceContract
            from nasfw.testing import load_search_space


            def float64_iris(config):
                problem = registry().problems["iris"](config)
                problem.train.x = problem.train.x.astype(np.float64)
                return problem


            class TestFloat64(ProblemContract):
                @pytest.fixture
                def problem(self):
                    return float64_iris, ProblemConfig(name="iris")


            class TestTokensForImages(SearchSpaceContract):
                @pytest.fixture
                def space(self):
                    space = load_search_space("text_small")
                    space.modalities = ("image",)
                    return space


            crashing, unmarked = ModuleType("crashing"), ModuleType("unmarked")


            @hookimpl
            def nasfw_trial_complete(result):
                print(f"{result.metric:.3f}")  # a failed trial has no metric


            def nasfw_search_end(best):  # no @hookimpl
                pass


            nasfw_trial_complete.__module__ = "crashing"
            crashing.nasfw_trial_complete = nasfw_trial_complete
            nasfw_search_end.__module__ = "unmarked"
            unmarked.nasfw_search_end = nasfw_search_end


            class TestCrashing(LifecycleContract):
                @pytest.fixture
                def plugin(self):
                    return crashing


            class TestUnmarked(LifecycleContract):
                @pytest.fixture
                def plugin(self):
                    return unmarked
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    outcomes = result.parseoutcomes()
    text = result.stdout.str()
    assert "test_splits_are_shaped_and_typed_for_training" in text and "float32" in text
    assert "FAILED test_broken.py::TestTokensForImages::test_samples_build_for_its_" in text
    # The metric of a failed trial is None: the searches with one fail.
    for name in ("a_whole_search", "a_search_stopped_by_an_error"):
        assert f"FAILED test_broken.py::TestCrashing::test_{name} - " in text
    assert "TypeError: unsupported format string passed to NoneType" in text
    assert outcomes["passed"] == 4 + 3 + 2, text
    # The unmarked hook fails every lifecycle test at set-up, naming it.
    assert "nasfw_search_end has no @nasfw.hookimpl" in text
    assert outcomes["errors"] == 4 and outcomes["failed"] == 1 + 1 + 2, text
