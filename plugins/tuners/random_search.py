"""Random search: independent uniform samples from the search space, in batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nasfw import (
    AsynchronousTunerConfig,
    Candidate,
    RandomChooser,
    Result,
    Tuner,
    hookimpl,
    setting,
)


@dataclass
class RandomSearchConfig(AsynchronousTunerConfig):
    name: str = "random"
    # Total evaluations.
    n_trials: int = setting(20, ge=1)
    # Evaluations per generation (one batch for the launcher).
    batch_size: int = setting(4, ge=1)
    # Evaluate asynchronously: a new network is asked for as soon as a worker frees up
    # (docs/tuners.md, "Asynchronous evaluation"); a generation: batch_size finished evaluations.
    asynchronous: bool = False


class RandomSearch(Tuner):
    """Samples ``n_trials`` graphs uniformly, ``batch_size`` per generation."""

    config_class = RandomSearchConfig

    screening = True
    asynchronous = True

    config: RandomSearchConfig

    def __init__(self, config: Any, space: Any, seed: int, **run: Any) -> None:
        super().__init__(config, space, seed, **run)
        self.rng = np.random.default_rng(seed)
        self.asked = 0
        self.told = 0  # asynchronous evaluation: results told one by one

    seedable = True

    def ask(self) -> list[Candidate]:
        count = min(self.config.batch_size, self.config.n_trials - self.asked)
        candidates = []
        for _ in range(max(count, 0)):
            candidates.append(self._next())
            self.asked += 1
        return candidates

    def _next(self) -> Candidate:
        """The seed of this proposal's index (minibench.warm_start), else a random network
        (screened); ``asked`` counts the proposals before it."""
        if self.asked < len(self.seeds):
            params, distributions = self.space.describe(self.seeds[self.asked])
            return Candidate(self.seeds[self.asked], params, distributions)
        return self.screened(self._sample, lambda c: c.graph)

    def _sample(self) -> Candidate:
        chooser = RandomChooser(self.rng)
        graph = self.space.sample(chooser)
        return Candidate(graph, chooser.params, chooser.distributions)

    def tell(self, candidates: list[Candidate], results: list[Result]) -> None:
        """Random search learns nothing from results."""

    def ask_one(self, pending: int) -> Candidate | None:
        if self.told + pending >= self.config.n_trials:
            return None
        candidate = self._next()
        self.asked += 1
        return candidate

    def tell_one(self, candidate: Candidate, result: Result) -> None:
        self.told += 1

    def state(self) -> dict[str, Any]:
        return {"asked": self.asked, "told": self.told, "rng": self.rng.bit_generator.state}

    def restore(self, state: dict[str, Any]) -> None:
        self.asked = state["asked"]
        self.told = state.get("told", 0)
        self.rng.bit_generator.state = state["rng"]


@hookimpl
def register_tuners(register: Callable[[type[Tuner]], None]) -> None:
    register(RandomSearch)
