"""Regularized ("aging") evolution: tournament selection, one mutation per child, oldest dies.

Real, Aggarwal, Huang and Le, "Regularized Evolution for Image Classifier Architecture Search"
(AAAI 2019, arXiv:1802.01548). A population of ``population_size`` networks starts as random
samples of the search space. Each child is made by drawing ``sample_size`` members uniformly
(a tournament), taking the fittest and mutating it once (:meth:`nasfw.SearchSpace.mutate`). The
child joins the population and the *oldest* member leaves, whatever its fitness: a network must
keep being rediscovered to stay, which favours architectures that train well reliably over lucky
ones. Children are made ``batch_size`` at a time so the launcher evaluates them in parallel; all
children of a batch have parents from the population before the batch.

``python -m nasfw tuner=evolution tuner.population_size=20 tuner.sample_size=5``
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nasfw import (
    ArchGraph,
    AsynchronousTunerConfig,
    Candidate,
    ConfigError,
    RandomChooser,
    Result,
    Tuner,
    hookimpl,
    setting,
)


@dataclass
class EvolutionConfig(AsynchronousTunerConfig):
    name: str = "evolution"
    # P: networks kept alive; each new child retires the oldest one.
    population_size: int = setting(12, ge=1)
    # S: tournament size, 1..population_size. Larger means greedier parent selection.
    sample_size: int = 4
    # Total evaluations, the random initial population included (at least population_size).
    n_trials: int = 40
    # Children per generation after the initial one (one batch for the launcher).
    batch_size: int = setting(4, ge=1)
    # Evaluate asynchronously: a new network is asked for as soon as a worker frees up
    # (docs/tuners.md, "Asynchronous evaluation"); a generation: batch_size finished evaluations.
    asynchronous: bool = False

    def check(self, key: str) -> None:
        """The tournament fits the population, the budget holds the initial population."""
        if not 1 <= self.sample_size <= self.population_size:
            raise ConfigError(
                f"{key}.sample_size must be between 1 and {key}.population_size="
                f"{self.population_size} (got {self.sample_size})"
            )
        if self.n_trials < self.population_size:
            raise ConfigError(
                f"{key}.n_trials must be at least {key}.population_size="
                f"{self.population_size}, the random initial population (got {self.n_trials})"
            )


@dataclass
class Member:
    """One network of the population; ``birth`` counts every network the tuner has created."""

    graph: ArchGraph
    fitness: float
    birth: int


class RegularizedEvolution(Tuner):
    """Aging evolution over the search space's graphs (see the module docstring)."""

    config_class = EvolutionConfig

    screening = True
    asynchronous = True

    config: EvolutionConfig

    def __init__(self, config: Any, space: Any, seed: int, **run: Any) -> None:
        super().__init__(config, space, seed, **run)  # EvolutionConfig.check: its rules
        self.rng = np.random.default_rng(seed)
        self.population: list[Member] = []
        self.evaluated = 0
        self.generation = 0

    seedable = True

    def ask(self) -> list[Candidate]:
        if self.generation == 0:
            # The seeds (minibench.warm_start) first, random networks for the rest.
            size = self.config.population_size
            graphs = list(self.seeds[:size]) + [
                self.space.sample(RandomChooser(self.rng))
                for _ in range(size - min(size, len(self.seeds)))
            ]
            return [self._candidate(graph, None) for graph in graphs]
        count = min(self.config.batch_size, self.config.n_trials - self.evaluated)
        candidates = []
        for _ in range(max(count, 0)):
            candidates.append(self.screened(self._child, lambda c: c.graph))
        return candidates

    def ask_one(self, pending: int) -> Candidate | None:
        """The paper's asynchronous form: random networks until the initial population is
        asked for, then a child of the population as it is now (a tournament among the
        members there are, if fewer than ``sample_size`` have been told yet)."""
        if self.evaluated + pending >= self.config.n_trials:
            return None
        at = self.evaluated + pending
        if at < self.config.population_size:
            seeded = at < len(self.seeds)
            graph = self.seeds[at] if seeded else self.space.sample(RandomChooser(self.rng))
            return self._candidate(graph, None)
        if not self.population:
            return None  # every initial network is still training: wait for one
        return self.screened(self._child, lambda c: c.graph)

    def tell_one(self, candidate: Candidate, result: Result) -> None:
        born = self.population[-1].birth + 1 if self.population else self.evaluated
        self.population.append(Member(candidate.graph, result.fitness, born))
        del self.population[: max(len(self.population) - self.config.population_size, 0)]
        self.evaluated += 1

    def _child(self) -> Candidate:
        parent = self._tournament()
        child = self.space.mutate(parent.graph, self.rng)
        return self._candidate(child, parent.graph.hash)

    def _tournament(self) -> Member:
        size = min(self.config.sample_size, len(self.population))
        picks = self.rng.choice(len(self.population), size=size, replace=False)
        # Ties go to the younger member, so a stagnant population still moves on.
        return max((self.population[int(i)] for i in picks), key=lambda m: (m.fitness, m.birth))

    def _candidate(self, graph: ArchGraph, parent: str | None) -> Candidate:
        # describe() rather than the chooser's params: children have no chooser, and one naming
        # scheme for every trial keeps the study's params comparable.
        params, distributions = self.space.describe(graph)
        return Candidate(graph, params, distributions, attrs={"parent": parent})

    def tell(self, candidates: list[Candidate], results: list[Result]) -> None:
        born = self.population[-1].birth + 1 if self.population else 0
        for offset, (candidate, result) in enumerate(zip(candidates, results, strict=True)):
            # Failed children join too (at -inf), as in the paper: they still push out the oldest.
            self.population.append(Member(candidate.graph, result.fitness, born + offset))
        del self.population[: max(len(self.population) - self.config.population_size, 0)]
        self.evaluated += len(candidates)
        self.generation += 1

    def state(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "evaluated": self.evaluated,
            "rng": self.rng.bit_generator.state,
            "population": [
                {
                    "graph": m.graph.to_dict(),
                    # -inf is not JSON; None stands for a failed member.
                    "fitness": m.fitness if math.isfinite(m.fitness) else None,
                    "birth": m.birth,
                }
                for m in self.population
            ],
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.generation = state["generation"]
        self.evaluated = state["evaluated"]
        self.rng.bit_generator.state = state["rng"]
        self.population = [
            Member(
                ArchGraph.from_dict(m["graph"]),
                -math.inf if m["fitness"] is None else m["fitness"],
                m["birth"],
            )
            for m in state["population"]
        ]


@hookimpl
def register_tuners(register: Callable[[type[Tuner]], None]) -> None:
    register(RegularizedEvolution)
