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


class _Tally:
    """Running figures of a search's history, brought up to date with the records appended
    since the last call: a search of n one-network generations reads them every generation,
    and recomputing them over the whole history made its bookkeeping O(n^2). The history is
    append-only; another list, or a shorter one, starts the tally again."""

    def __init__(self) -> None:
        self.history: list[TrialRecord] | None = None
        self.seen = 0
        self.last_number = -1
        self.simulated: dict[int, float] = {}  # generation -> simulated seconds of its trials
        self.simulated_sum = 0.0
        self.simulated_latest = -1  # the largest generation in simulated
        self.by_generation: dict[int, list[TrialRecord]] = {}
        self.best_by_budget: dict[int, TrialRecord] = {}  # ok, exportable trials
        self.by_key: dict[str, TrialRecord] = {}  # the last record of each key
        self.with_weights: set[str] = set()

    def update(self, history: list[TrialRecord]) -> _Tally:
        if history is not self.history or len(history) < self.seen:
            self.__init__()  # type: ignore[misc]
            self.history = history
        for t in history[self.seen :]:
            result = t.result
            self.last_number = max(self.last_number, t.number)
            self.by_key[t.key] = t
            if "weights" in result.extra:
                self.with_weights.add(t.key)
            if result.extra.get("clock") == "simulated" and "reused_from" not in result.extra:
                self.simulated[t.generation] = (
                    self.simulated.get(t.generation, 0.0) + result.train_seconds
                )
                self.simulated_sum += result.train_seconds
                self.simulated_latest = max(self.simulated_latest, t.generation)
            self.by_generation.setdefault(t.generation, []).append(t)
            if result.ok and t.exportable:
                budget = result.trained_budget
                held = self.best_by_budget.get(budget)
                if held is None or t.rank > held.rank:
                    self.best_by_budget[budget] = t
        self.seen = len(history)
        return self


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
    _tally: _Tally = field(default_factory=_Tally, init=False, repr=False, compare=False)

    def best(self) -> TrialRecord | None:
        """The best network trained to the full budget: the highest-ranked ``ok``, exportable
        trial among those whose :attr:`nasfw.Result.budget` reaches ``train.epochs`` (or,
        before any does, the largest budget reached), so a network scored after 1 epoch is
        never compared with 5-epoch ones. Pruned and failed trials are never the best."""
        # The best ok, exportable trial of each budget, kept up to date as the history grows:
        # the results among them are those at the full budget (TrialRecord.is_result).
        best = self._tally.update(self.history).best_by_budget
        full = self._full_budget(max(best, default=0))
        ok = [t for t in best.values() if t.is_result(full)]
        return max(ok, key=lambda t: t.rank) if ok else None

    def records_of(self, generation: int) -> list[TrialRecord]:
        """The history's evaluations of ``generation``, in the order they were stored.
        Read-only: kept up to date from the history."""
        return self._tally.update(self.history).by_generation.get(generation, [])

    def last_number(self) -> int:
        """The highest trial number in the history (-1 when empty)."""
        return self._tally.update(self.history).last_number

    def by_key(self) -> dict[str, TrialRecord]:
        """The history's evaluations by :attr:`nasfw.Candidate.key` (the last of each key).
        Read-only: kept up to date from the history."""
        return self._tally.update(self.history).by_key

    def keys_with_weights(self) -> set[str]:
        """The keys of the history's evaluations that stored their weights (``weights`` in
        their result's ``extra``). Read-only: kept up to date from the history."""
        return self._tally.update(self.history).with_weights

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
        tally = self._tally.update(self.history)
        # The latest generation kept up to date (a max over every generation each time made a
        # search of n generations O(n^2)).
        if through is None or through >= tally.simulated_latest:
            return tally.simulated_sum
        return sum(s for g, s in tally.simulated.items() if g <= through)

    def full_budget(self) -> int:
        """The budget (epochs) networks are compared at: ``train.epochs``, or the largest
        budget an ``ok`` exportable trial has reached while none has reached it yet."""
        return self._full_budget(max(self._tally.update(self.history).best_by_budget, default=0))

    def _full_budget(self, reached: int) -> int:
        if self.cfg is None:
            return reached
        return min(int(self.cfg.train.epochs), reached)
