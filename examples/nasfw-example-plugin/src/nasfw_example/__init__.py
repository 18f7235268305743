"""A third-party nasfw plugin: copy this package to write your own.

It adds ``tuner=hillclimb`` (config from a dataclass), ``problem=moons`` (generated data) and
``search_space=moons_mlp`` (config from a YAML file), using nothing but nasfw's public API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nasfw import (
    Candidate,
    Problem,
    ProblemConfig,
    RandomChooser,
    Result,
    SearchSpace,
    Tuner,
    TunerConfig,
    hookimpl,
    split_arrays,
)


@dataclass
class HillClimbConfig(TunerConfig):
    name: str = "hillclimb"
    # Generations; each proposes `batch_size` mutants of the best network so far.
    generations: int = 3
    batch_size: int = 2


class HillClimb(Tuner):
    """Start from a random network; each generation, mutate the best one found so far."""

    config_class = HillClimbConfig

    config: HillClimbConfig

    def __init__(self, config: Any, space: SearchSpace, seed: int, **run: Any) -> None:
        super().__init__(config, space, seed, **run)
        self.rng = np.random.default_rng(seed)
        self.generation = 0
        self.best: tuple[float, str] | None = None  # (fitness, graph JSON)

    def ask(self) -> list[Candidate]:
        if self.generation >= self.config.generations:
            return []
        if self.best is None:
            chooser = RandomChooser(self.rng)
            graphs = [self.space.sample(chooser) for _ in range(self.config.batch_size)]
        else:
            from nasfw import ArchGraph

            parent = ArchGraph.from_json(self.best[1])
            graphs = [self.space.mutate(parent, self.rng) for _ in range(self.config.batch_size)]
        return [Candidate(g, attrs={"generation": self.generation}) for g in graphs]

    def tell(self, candidates: list[Candidate], results: list[Result]) -> None:
        for candidate, result in zip(candidates, results, strict=True):
            if result.ok and (self.best is None or result.fitness > self.best[0]):
                self.best = (result.fitness, candidate.graph.to_json())
        self.generation += 1

    def state(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "best": self.best,
            "rng": self.rng.bit_generator.state,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.generation = state["generation"]
        self.best = tuple(state["best"]) if state["best"] else None  # type: ignore[assignment]
        self.rng.bit_generator.state = state["rng"]


def load_moons(config: ProblemConfig) -> Problem:
    """Two interleaved half-moons with noise: a generated, offline, 2-feature problem."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=600, noise=0.25, random_state=config.split_seed)
    train, val, test = split_arrays(x.astype(np.float32), y.astype(np.int64), config, stratify=True)
    return Problem("moons", "classification", "tabular", (2,), 2, train, val, test)


@hookimpl
def register_tuners(register: Callable[[type[Tuner]], None]) -> None:
    register(HillClimb)


@hookimpl
def register_problems(register: Callable[..., None]) -> None:
    register("moons", load_moons, ProblemConfig(name="moons", val_fraction=0.25))


@hookimpl
def register_search_spaces(register: Callable[[str, Any], None]) -> None:
    register("moons_mlp", Path(__file__).with_name("moons_mlp.yaml"))


__all__ = ["HillClimb", "HillClimbConfig", "load_moons"]
