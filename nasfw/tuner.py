"""The ask/tell interface every tuner implements, and what flows through it."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from nasfw.graph import ArchGraph

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

    from nasfw.config import TunerConfig
    from nasfw.search_space import SearchSpace

T = TypeVar("T")


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


def evaluation_key(
    graph: ArchGraph,
    train: dict[str, Any],
    init_from: str | None = None,
    resume_from: str | None = None,
) -> str:
    """:attr:`Candidate.key` of a network, its training overrides and its initial weights."""
    import hashlib
    import json

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


class Tuner(ABC):
    """A search algorithm behind ask/tell.

    ``ask()`` returns the next generation (one batch for the launcher, possibly empty when the
    tuner is done); ``tell(results)`` gets the results in the same order. ``state()`` returns
    everything needed to continue (JSON-able) and ``restore(state)`` loads it: the search loop
    saves the state in the study after every generation, so a killed search resumes exactly.

    Tuners must be deterministic given ``seed`` and the results they are told.

    ``problem`` is set by the search loop before the first ``ask`` (the :class:`nasfw.Problem`;
    ``None`` until then): for tuners that need the data's shapes, e.g. to size grown layers.
    ``train`` likewise (the run's :class:`nasfw.TrainConfig`): e.g. ``train.epochs``, the full
    budget of a multi-fidelity tuner.
    """

    problem: Any = None
    train: Any = None
    #: Set by the search with ``evaluation.screen=k`` > 1 (a :class:`nasfw.minibench.screen.
    #: Screener`): tuners that can (``screening = True``) draw each proposal through
    #: :meth:`screened`. ``None``: no screening.
    screen: Any = None
    #: Whether this tuner draws its proposals through :meth:`screened` (the search refuses
    #: ``evaluation.screen`` > 1 for the others).
    screening: ClassVar[bool] = False
    #: Whether this tuner has :meth:`ask_one` / :meth:`tell_one`, so the search can keep
    #: every worker busy (``tuner.asynchronous=true``; the search refuses it for the others).
    asynchronous: ClassVar[bool] = False

    def __init__(self, config: TunerConfig, space: SearchSpace, seed: int) -> None:
        from nasfw.config import check_settings

        check_settings(config, "tuner")  # the ranges its schema declares (ConfigError)
        self.config = config
        self.space = space
        self.seed = seed

    @abstractmethod
    def ask(self) -> list[Candidate]: ...

    @abstractmethod
    def tell(self, candidates: list[Candidate], results: list[Result]) -> None: ...

    @abstractmethod
    def state(self) -> dict[str, Any]: ...

    @abstractmethod
    def restore(self, state: dict[str, Any]) -> None: ...

    def ask_one(self, pending: int) -> Candidate | None:
        """Asynchronous evaluation (``tuner.asynchronous=true``): one candidate, proposed from
        every result told so far while ``pending`` others are still being evaluated (asked,
        not yet told). ``None`` when there is nothing to ask now: the budget is taken by the
        told and the pending ones (with ``pending == 0``: the search is over), or the tuner
        waits for a result first.

        Asynchronous tuners must also keep :meth:`state` true between single tells: the
        search saves it after every ``batch_size`` results. Evaluations still pending at a
        kill are asked for anew after the resume (``pending`` counts only those running now),
        so a tuner counts its budget from told results plus ``pending``, never from asks.
        """
        raise NotImplementedError(f"tuner {self.config.name} cannot propose asynchronously")

    def tell_one(self, candidate: Candidate, result: Result) -> None:
        """Asynchronous evaluation: the result of ``candidate``, as soon as it arrives (results
        come in the order they finish, not that of the asks). On a resume, results of a
        generation the saved state did not yet hold are told again to the restored tuner,
        whose own asks for them were lost with the killed process."""
        raise NotImplementedError(f"tuner {self.config.name} cannot be told asynchronously")

    def screened(self, propose: Callable[[], T], graph_of: Callable[[T], Any]) -> T:
        """One proposal: ``propose()`` once, or with a screen ``k`` times and the one whose
        graph (``graph_of(proposal)``) the screen predicts best (ties: the first drawn). A
        tuner's randomness is drawn the same way either way, so a search stays deterministic.
        """
        if self.screen is None or self.screen.k <= 1:
            return propose()
        options = [propose() for _ in range(self.screen.k)]
        return options[self.screen.best([graph_of(o) for o in options])]

    def generation_report(self) -> dict[str, float]:
        """Metrics about the tuner's own state after the last ``tell`` (e.g. species counts),
        logged with each generation by trackers. Empty by default."""
        return {}

    def weights_needed(self) -> set[str] | None:
        """Keys (:attr:`Candidate.key`) of the evaluations whose stored weights this tuner may
        still start a candidate from (``init_from`` / ``resume_from``), asked after every
        ``tell``: the search deletes the study's other stored weights (never the best
        network's). ``None`` (the default): keep them all."""
        return None

    def warm_start(self, trials: list[Any]) -> None:
        """Learn from the finished trials (:class:`nasfw.TrialRecord`, oldest first) of the
        study named by ``tuner.warm_start``, before the first ``ask`` of a new search.

        Raises:
            nasfw.ConfigError: this tuner cannot use earlier trials (the default).
        """
        from nasfw.config import ConfigError

        raise ConfigError(
            f"tuner.warm_start: tuner={self.config.name} cannot start from another study's "
            "trials (tpe and hyperband can)"
        )

    def generation_artifacts(self) -> dict[str, Any]:
        """Files about the tuner's own state after the last ``tell``, kept by trackers with
        each generation: ``{"<name>.png": a matplotlib Figure, "<name>.json": JSON-able data}``
        (e.g. Petridish's hull and candidate weights). Empty by default."""
        return {}
