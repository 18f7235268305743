"""The search loop: tuner.ask() -> launcher.map(evaluate) -> study -> tuner.tell() -> hooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasfw.graph import ArchGraph
from nasfw.tuner import Result

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
    plugin_state: dict[str, Any] = field(default_factory=dict)

    def best(self) -> TrialRecord | None:
        ok = [t for t in self.history if t.result.ok]
        return max(ok, key=lambda t: (t.result.fitness, -t.number)) if ok else None
