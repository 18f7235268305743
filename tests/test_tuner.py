"""Tuners are constructed complete (nasfw/tuner.py: make_tuner), and the old form still works."""

from __future__ import annotations

from typing import Any

import pytest

from nasfw import Candidate, Result, Tuner, TunerConfig
from nasfw.tuner import make_tuner


class UsesTheProblemAtOnce(Tuner):
    def __init__(self, config: Any, space: Any, seed: int, **run: Any) -> None:
        super().__init__(config, space, seed, **run)
        assert self.problem is not None and self.train is not None
        self.outputs = self.problem.n_outputs  # e.g. to size grown layers

    def ask(self) -> list[Candidate]:
        return []

    def tell(self, candidates: list[Candidate], results: list[Result]) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        pass


class OldForm(UsesTheProblemAtOnce):
    """A tuner written for nasfw 0.1: problem and train were set after construction."""

    def __init__(self, config: Any, space: Any, seed: int) -> None:
        Tuner.__init__(self, config, space, seed)
        self.rng_seed = seed


@pytest.fixture
def run(ops) -> dict[str, Any]:
    from conftest import load_space

    from nasfw import ProblemConfig, TrainConfig
    from nasfw.evaluate import load_problem

    return {
        "space": load_space("tabular_mlp", ops),
        "problem": load_problem(ProblemConfig(name="iris")),
        "train": TrainConfig(epochs=3),
    }


def test_a_tuner_gets_the_problem_and_training_in_its_constructor(run) -> None:
    tuner = make_tuner(
        UsesTheProblemAtOnce,
        TunerConfig(name="mine"),
        run["space"],
        0,
        problem=run["problem"],
        train=run["train"],
    )
    assert tuner.outputs == 3 and tuner.train is run["train"] and tuner.screen is None


def test_a_tuner_of_the_old_form_still_works_and_is_told_what_to_change(run) -> None:
    wanted = r"OldForm.__init__\(config, space, seed\) is deprecated: take the keywords problem="
    with pytest.warns(DeprecationWarning, match=wanted):
        old = make_tuner(
            OldForm,
            TunerConfig(name="old"),
            run["space"],
            1,
            problem=run["problem"],
            train=run["train"],
        )
    assert old.problem is run["problem"] and old.train is run["train"] and old.rng_seed == 1
