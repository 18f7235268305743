"""The data that flows through a search: what a tuner proposes (:class:`Candidate`), what
evaluating it gave (:class:`Result`), a stored evaluation (:class:`TrialRecord`, a candidate and
its result; :class:`StoredResult`, one a cluster job has written). What lifecycle hooks see of
a whole search is :class:`nasfw.run.SearchContext`.

The lowest floor of the core: every other module takes these types from here, and this module
imports no other part of nasfw but the graph encoding (type-only imports aside).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from nasfw.graph import ArchGraph

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution


@dataclass
class Candidate:
    """One network to evaluate.

    ``params``/``distributions`` are the hyper-parameters the tuner chose (recorded as the Optuna
    trial's params); ``train`` overrides training knobs for this candidate (e.g. ``lr``);
    ``attrs`` are extra JSON-able facts stored with the trial (e.g. a blueprint id).

    Weights (:mod:`nasfw.weights`): ``keep_weights`` stores the trained network's weights with
    the trial; ``init_from`` is the :attr:`key` of an earlier candidate that kept its weights,
    and this network starts from them wherever a layer has the same name and shape (the rest
    keeps its seeded initialisation), e.g. Petridish's children inheriting their parent's.
    ``resume_from`` is the :attr:`key` of an earlier evaluation *of the same network* that kept
    its weights: training continues from them (every tensor must fit, else the trial fails) for
    ``train["epochs"]`` more epochs, e.g. a Hyperband promotion that pays only its extra epochs.
    Either way the result's :attr:`Result.budget` counts the epochs the weights had already
    trained. ``exportable=False`` marks a network that only serves the tuner (Petridish's
    candidate training): its trial is recorded, but it is never the search's best nor on its
    Pareto front.
    """

    graph: ArchGraph
    params: dict[str, Any] = field(default_factory=dict)
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    keep_weights: bool = False
    exportable: bool = True
    resume_from: str | None = None

    @property
    def overrides(self) -> dict[str, Any]:
        """The training knobs this evaluation replaces: the graph's own training settings
        (:attr:`nasfw.ArchGraph.train`, genes of its space), then :attr:`train` over them."""
        return {**self.graph.train, **self.train}

    @property
    def key(self) -> str:
        """What makes two evaluations the same: the network, its training overrides and the
        weights it starts from (16 hex digits). Equal keys get the same seed and may reuse
        each other's result; :attr:`init_from` and :attr:`resume_from` refer to an evaluation
        by this key."""
        return evaluation_key(self.graph, self.train, self.init_from, self.resume_from)


@dataclass
class Result:
    """What evaluating one candidate gave. ``metric`` is higher-is-better (accuracy, r2).

    ``status`` is ``"ok"`` (trained its full ``epochs``), ``"failed"`` (``error`` says why) or
    ``"pruned"``: the search's pruner (``pruner=median``, ...) stopped it after ``epochs``
    epochs, and ``metric`` is its last validation score (its Optuna trial is ``PRUNED``).
    ``epochs`` counts what this evaluation trained; ``budget`` the epochs its weights have had
    in all, those of the weights it started from (``Candidate.resume_from`` / ``init_from``)
    included: the search's best is chosen among networks at the full budget only
    (:meth:`nasfw.SearchContext.best`).
    """

    status: Literal["ok", "failed", "pruned"]
    metric: float | None = None
    loss: float | None = None
    flops: int | None = None
    n_params: int | None = None
    train_seconds: float = 0.0
    epochs: int = 0
    error: str | None = None
    regularized_score: float | None = None
    # When the evaluation started and finished: seconds since the epoch on the machine that ran
    # it (None: unknown, e.g. a worker that died); the trial's start and completion times.
    started: float | None = None
    finished: float | None = None
    # Facts a scorer adds: numbers (logged as trial_<key> metrics) and strings (e.g. device).
    extra: dict[str, Any] = field(default_factory=dict)
    # The learning curve: the validation metric by epoch (the trial's intermediate values).
    curve: dict[int, float] = field(default_factory=dict)
    # Epochs the network's weights trained in all (None: ``epochs``, nothing inherited).
    budget: int | None = None
    # When its first training step began, in seconds since the epoch on the machine that ran it
    # (None: it trained nothing, or it was read back from the study, which does not keep it):
    # how the search finds its start-up time (``nasfw:first_step_seconds``). A timing, not
    # something the evaluation gave: left out of ==.
    first_step: float | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        """Trained to the end and scored (not failed, not pruned)."""
        return self.status == "ok"

    @property
    def pruned(self) -> bool:
        return self.status == "pruned"

    @property
    def trained_budget(self) -> int:
        """:attr:`budget`, or :attr:`epochs` when nothing was inherited."""
        return self.budget if self.budget is not None else self.epochs

    @property
    def fitness(self) -> float:
        """What tuners rank by: the metric, a pruned network's last score (lower than it would
        have reached: it ranks below the networks that outscored it when it stopped), or
        ``-inf`` for a failed candidate."""
        if self.status == "failed" or self.metric is None or math.isnan(self.metric):
            return -math.inf
        return self.metric

    @classmethod
    def failed(cls, reason: str, **facts: Any) -> Result:
        return cls(status="failed", error=reason, **facts)

    def finite(self) -> Result:
        """This result with every number finite: what the study stores and tuners are told.

        An ``ok`` result without a metric, or whose metric, loss or any other number
        (``extra`` included) is NaN or infinite, becomes a failed one naming the first such
        value; a failed result just loses its non-finite facts (JSON, and so the study's user
        attrs and optuna-dashboard, have no NaN or infinity).
        """
        bad = [name for name in _NUMBER_FIELDS if _non_finite(getattr(self, name))]
        bad_extra = [k for k, v in self.extra.items() if _non_finite(v)]
        scored = self.status != "failed"
        missing = scored and self.metric is None
        bad_curve = any(_non_finite(v) for v in self.curve.values())
        if not (bad or bad_extra or missing or bad_curve):
            return self
        cleaned = replace(
            self,
            **{name: 0.0 if name == "train_seconds" else None for name in bad},
            extra={k: v for k, v in self.extra.items() if k not in bad_extra},
            curve={k: v for k, v in self.curve.items() if not _non_finite(v)},
        )
        if not scored or not (bad or bad_extra or missing):
            return cleaned  # (an ok result whose curve had a NaN point keeps the others)
        if missing:
            reason = "the evaluation returned no metric"
        else:
            name = bad[0] if bad else f"extra.{bad_extra[0]}"
            value = getattr(self, name) if bad else self.extra[bad_extra[0]]
            reason = f"non-finite {name} ({value}): the network's outputs or loss overflowed"
        return replace(cleaned, status="failed", metric=None, regularized_score=None, error=reason)


@dataclass
class StoredResult(Result):
    """A :class:`Result` whose trial a worker has already written (trial ``trial_number``)."""

    trial_number: int = -1

    def plain(self) -> Result:
        return Result(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Result)})

    @classmethod
    def of(cls, result: Result, number: int) -> StoredResult:
        """``result``, marked as stored in trial ``number``."""
        fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(Result)}
        return cls(**fields, trial_number=number)


def evaluation_key(
    graph: ArchGraph,
    train: dict[str, Any],
    init_from: str | None = None,
    resume_from: str | None = None,
) -> str:
    """:attr:`Candidate.key` of a network, its training overrides and its initial weights."""
    text = f"{graph.hash}:{json.dumps(train, sort_keys=True)}"
    if init_from is not None:
        text += f":init_from={init_from}"
    if resume_from is not None:
        text += f":resume_from={resume_from}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_NUMBER_FIELDS = ("metric", "loss", "regularized_score", "flops", "n_params", "train_seconds")


def _non_finite(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and not (math.isfinite(value))
    )


@dataclass
class TrialRecord:
    """One evaluated candidate as stored in the study: the :class:`Candidate` and its
    :class:`Result`, with the trial's number and the candidate's place (``generation``,
    ``index``) in the search. The candidate's fields read through (``record.graph``, ...)."""

    number: int
    generation: int
    index: int
    candidate: Candidate
    result: Result

    @property
    def graph(self) -> ArchGraph:
        return self.candidate.graph

    @property
    def params(self) -> dict[str, Any]:
        return self.candidate.params

    @property
    def distributions(self) -> dict[str, Any]:
        """The Optuna distributions of :attr:`params` (what a sampler needs to learn)."""
        return self.candidate.distributions

    @property
    def train(self) -> dict[str, Any]:
        return self.candidate.train

    @property
    def attrs(self) -> dict[str, Any]:
        return self.candidate.attrs

    @property
    def init_from(self) -> str | None:
        """The key of the evaluation whose weights this network started from."""
        return self.candidate.init_from

    @property
    def resume_from(self) -> str | None:
        """The key of the evaluation of this network whose training it continued."""
        return self.candidate.resume_from

    @property
    def exportable(self) -> bool:
        """False for networks that only serve the tuner (:attr:`Candidate.exportable`)."""
        return self.candidate.exportable

    @cached_property
    def key(self) -> str:
        """The evaluation's :attr:`nasfw.Candidate.key`; computed once (hashing the graph
        costs ~0.1 ms, and every generation looks up the whole history by key): a stored
        evaluation's candidate does not change."""
        return self.candidate.key

    def is_result(self, full_budget: int) -> bool:
        """Whether nasfw counts this trial as a *result* of the search: ``ok``, exportable
        (not one of the tuner's own trainings, such as Petridish's candidate trainings) and
        trained to ``full_budget`` epochs (:meth:`nasfw.SearchContext.full_budget`).

        The one definition the search's best, the summary table, the Pareto front, the
        post-processor, the Optuna study (only results are COMPLETE: ``nasfw.ledger``) and
        MLflow's best-so-far all use.
        """
        return self.result.ok and self.exportable and self.result.trained_budget >= full_budget

    @property
    def rank(self) -> tuple[float, int, int]:
        """Sort key, higher is better: fitness, ties to the earlier (generation, index).

        Trial numbers follow completion order with several workers, so they cannot break ties
        reproducibly; a candidate's place in its generation can.
        """
        return (self.result.fitness, -self.generation, -self.index)
