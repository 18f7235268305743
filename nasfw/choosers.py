"""Choosers: how a search space's define-by-run sampling draws each value, from a seeded RNG
(:class:`RandomChooser`) or an Optuna trial's ``suggest_*`` (:class:`TrialChooser`), so the
same sampling code serves random search and Optuna's samplers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

_CATEGORICAL: dict[tuple[tuple[type, Any], ...], Any] = {}


def categorical_distribution(choices: Sequence[Any]) -> Any:
    """Optuna's ``CategoricalDistribution`` of ``choices``: one object for equal choices.

    Why: a trial's params of the same choices (a cell's edges) then share their distribution,
    which Optuna's in-memory storage copies once per trial instead of once per param (a fifth
    of nasfw's own cost per lookup). Distributions are never changed once made.
    """
    from optuna.distributions import CategoricalDistribution

    try:  # keyed by type too: 1 and True are equal, but are not the same choice
        key = tuple((type(c), c) for c in choices)
        found = _CATEGORICAL.get(key)
    except TypeError:  # an unhashable choice
        return CategoricalDistribution(list(choices))
    if found is None:
        found = _CATEGORICAL[key] = CategoricalDistribution(list(choices))
    return found


class Chooser(Protocol):
    """Makes one named decision at a time (a seeded RNG, or an Optuna trial)."""

    def int(self, name: str, low: int, high: int, log: bool = False) -> int: ...
    def float(self, name: str, low: float, high: float, log: bool = False) -> float: ...
    def categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


class RandomChooser:
    """Uniform choices from a numpy ``Generator``; records every decision with its distribution."""

    def __init__(self, rng: np.random.Generator) -> None:
        from optuna.distributions import BaseDistribution

        self.rng = rng
        self.params: dict[str, Any] = {}
        self.distributions: dict[str, BaseDistribution] = {}

    def int(self, name: str, low: int, high: int, log: bool = False) -> int:
        from optuna.distributions import IntDistribution

        if log:
            value = round(math.exp(self.rng.uniform(math.log(low), math.log(high))))
        else:
            value = int(self.rng.integers(low, high + 1))
        return self._record(name, min(max(value, low), high), IntDistribution(low, high, log=log))

    def float(self, name: str, low: float, high: float, log: bool = False) -> float:
        from optuna.distributions import FloatDistribution

        if log:
            value = math.exp(self.rng.uniform(math.log(low), math.log(high)))
        else:
            value = float(self.rng.uniform(low, high))
        return self._record(name, value, FloatDistribution(low, high, log=log))

    def categorical(self, name: str, choices: Sequence[Any]) -> Any:
        value = choices[int(self.rng.integers(len(choices)))]
        return self._record(name, value, categorical_distribution(choices))

    def _record(self, name: str, value: Any, distribution: Any) -> Any:
        self.params[name] = value
        self.distributions[name] = distribution
        return value


class TrialChooser:
    """The choices an Optuna trial's sampler makes (``trial.suggest_*``, define-by-run): how
    a tuner lets an Optuna sampler (TPE, ...) drive :meth:`SearchSpace.sample`."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def int(self, name: str, low: int, high: int, log: bool = False) -> int:
        return self.trial.suggest_int(name, low, high, log=log)

    def float(self, name: str, low: float, high: float, log: bool = False) -> float:
        return self.trial.suggest_float(name, low, high, log=log)

    def categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self.trial.suggest_categorical(name, list(choices))
