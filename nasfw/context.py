"""What lifecycle hooks see of a search (:class:`SearchContext`): its config, problem, space,
tuner and study, the history of its trials, and what it exported."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from torch import nn

    from nasfw.config import NasfwConfig
    from nasfw.problem import Problem
    from nasfw.records import TrialRecord
    from nasfw.search_space import BaseSearchSpace
    from nasfw.tuner import Tuner


@dataclass
class SearchContext:
    """What lifecycle hooks see. ``plugin_state`` is scratch space, one key per plugin."""

    #: The run's config, typed (:class:`nasfw.NasfwConfig`; each group's node is the schema
    #: of the option chosen, e.g. ``cfg.tuner`` a ``TPEConfig``).
    cfg: NasfwConfig
    problem: Problem
    space: BaseSearchSpace
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
    # The simulated clock of a problem evaluated by lookup: the training seconds its table
    # recorded, summed over the evaluations up to the end of each generation (reused results
    # take none), beside generation_seconds' wall time; empty when nothing was simulated.
    simulated_seconds: dict[int, float] = field(default_factory=dict)
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
        ok = [t for t in self.history if t.is_result(full)]
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

    def simulated_total(self, through: int | None = None) -> float:
        """The simulated training seconds of the evaluations of generations up to ``through``
        (None: all): what the table recorded for each (``extra["clock"] == "simulated"``),
        reused results excepted."""
        return sum(
            t.result.train_seconds
            for t in self.history
            if t.result.extra.get("clock") == "simulated"
            and "reused_from" not in t.result.extra
            and (through is None or t.generation <= through)
        )

    def full_budget(self) -> int:
        """The budget (epochs) networks are compared at: ``train.epochs``, or the largest
        budget an ``ok`` exportable trial has reached while none has reached it yet."""
        budgets = [t.result.trained_budget for t in self.history if t.result.ok and t.exportable]
        reached = max(budgets, default=0)
        if self.cfg is None:
            return reached
        return min(int(self.cfg.train.epochs), reached)
