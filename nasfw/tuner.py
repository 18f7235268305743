"""The ask/tell interface every tuner implements (what flows through it: :mod:`nasfw.records`)."""

from __future__ import annotations

import inspect
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from nasfw.config import ConfigError, check_settings
from nasfw.records import Candidate, Result, evaluation_key

if TYPE_CHECKING:
    from nasfw.config import TrainConfig, TunerConfig
    from nasfw.problem import Problem
    from nasfw.search_space import BaseSearchSpace

__all__ = ["Candidate", "Result", "Tuner", "check_mode", "evaluation_key", "make_tuner"]

MODES = ("nas", "adapt")


def check_mode(config: Any, key: str) -> None:
    """The rules of a tuner's ``mode`` / ``init_arch`` pair (a schema's ``check``): ``nas``
    grows from nothing, ``adapt`` refines ``init_arch`` (θ0), which ``nas`` would ignore.

    A schema that can also start from a saved population (``init_population``) may leave
    ``init_arch`` unset in adapt mode.

    Raises:
        ConfigError: naming ``<key>.mode`` or ``<key>.init_arch``.
    """
    if config.mode not in MODES:
        raise ConfigError(f"{key}.mode={config.mode!r} must be 'nas' or 'adapt'")
    population = getattr(config, "init_population", None)
    if config.mode == "adapt" and not config.init_arch and not population:
        raise ConfigError(f"{key}.mode=adapt needs {key}.init_arch (a graph file or preset)")
    if config.mode == "nas" and config.init_arch:
        raise ConfigError(
            f"{key}.init_arch={config.init_arch}: {key}.mode=nas grows from nothing and would "
            f"ignore it; set {key}.mode=adapt to refine it"
        )


T = TypeVar("T")


class Tuner(ABC):
    """A search algorithm behind ask/tell.

    ``ask()`` returns the next generation (one batch for the launcher, possibly empty when the
    tuner is done); ``tell(results)`` gets the results in the same order. ``state()`` returns
    everything needed to continue (JSON-able) and ``restore(state)`` loads it: the search loop
    saves the state in the study after every generation, so a killed search resumes exactly.

    Tuners must be deterministic given ``seed`` and the results they are told.

    A tuner is constructed complete: the search passes, besides its config, search space and
    seed, the keywords ``problem`` (the :class:`nasfw.Problem`: e.g. the data's shapes, to size
    grown layers), ``train`` (the run's :class:`nasfw.TrainConfig`: e.g. ``train.epochs``, the
    full budget of a multi-fidelity tuner) and ``screen`` (with ``evaluation.screen=k`` > 1, a
    :class:`nasfw.minibench.screen.Screener`: tuners that can, ``screening = True``, draw each
    proposal through :meth:`screened`; ``None``: no screening). A subclass that defines
    ``__init__`` takes them as keywords and hands them on::

        def __init__(self, config, space, seed, **run):
            super().__init__(config, space, seed, **run)
            ...  # self.problem and self.train are set here
    """

    #: The tuner's config schema, whose ``name`` field defaults to its option name
    #: (``tuner=<name>``): ``register(TunerClass)`` registers both (``register_tuners``).
    config_class: ClassVar[type[TunerConfig] | None] = None
    problem: Problem | None = None
    train: TrainConfig | None = None
    screen: Any = None
    #: Whether this tuner draws its proposals through :meth:`screened` (the search refuses
    #: ``evaluation.screen`` > 1 for the others).
    screening: ClassVar[bool] = False
    #: Whether this tuner has :meth:`ask_one` / :meth:`tell_one`, so the search can keep
    #: every worker busy (``tuner.asynchronous=true``; the search refuses it for the others).
    asynchronous: ClassVar[bool] = False
    #: The kinds of search space (:class:`nasfw.BaseSearchSpace` subclasses) this tuner's
    #: proposals can lie in; ``None``: every kind (a tuner that uses only the base's
    #: sample / mutate / crossover / describe). A tuner that assembles or grows graphs of
    #: stages names ``(nasfw.SearchSpace,)``: the search refuses it other kinds (a fixed
    #: cell, say) before the study exists.
    space_kinds: ClassVar[tuple[type, ...] | None] = None
    #: Keys of :meth:`state` whose value is a list that only grows (entries appended, never
    #: changed or removed, e.g. every result told): the study keeps the new entries after each
    #: generation instead of the whole list again (:meth:`nasfw.ledger.Ledger.save_state`),
    #: and :meth:`restore` gets the whole list back.
    appended_state: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        config: TunerConfig,
        space: BaseSearchSpace,
        seed: int,
        *,
        problem: Problem | None = None,
        train: TrainConfig | None = None,
        screen: Any = None,
    ) -> None:
        check_settings(config, "tuner")  # the ranges its schema declares (ConfigError)
        self.config = config
        self.space = space
        self.seed = seed
        self.problem = problem
        self.train = train
        self.screen = screen

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
        raise ConfigError(
            f"tuner.warm_start: tuner={self.config.name} cannot start from another study's "
            "trials (tpe and hyperband can)"
        )

    #: Whether the first proposals can be given (:meth:`seed_with`, ``minibench.warm_start``).
    seedable: ClassVar[bool] = False
    #: The networks the first proposals are (:meth:`seed_with`); the i-th proposal of the
    #: search is ``seeds[i]`` while there is one, so a restored state needs nothing more.
    seeds: tuple[Any, ...] = ()

    def seed_with(self, graphs: list[Any]) -> None:
        """Make ``graphs`` (:class:`nasfw.ArchGraph` of this tuner's space, best first) the
        first proposals of a new search (``minibench.warm_start``: the best networks of the
        nearest mini-benchmark problems): evolution's initial population, TPE's enqueued
        trials, random search's first trials. Called before the first ``ask``, and again with
        the same graphs on a resume (a seed already proposed is not proposed again).

        Raises:
            nasfw.ConfigError: this tuner cannot be seeded (the default; CoDeepNEAT's
                modules/blueprints and Petridish's seed networks are a later increment).
        """
        if not self.seedable:
            raise ConfigError(
                f"minibench.warm_start: tuner={self.config.name} cannot start from given "
                "networks (evolution, tpe and random can)"
            )
        self.seeds = tuple(graphs)

    def generation_artifacts(self) -> dict[str, Any]:
        """Files about the tuner's own state after the last ``tell``, kept by trackers with
        each generation: ``{"<name>.png": a matplotlib Figure, "<name>.json": JSON-able data}``
        (e.g. Petridish's hull and candidate weights). Empty by default."""
        return {}


def make_tuner(
    tuner_cls: type[Tuner],
    config: TunerConfig,
    space: BaseSearchSpace,
    seed: int,
    *,
    problem: Problem,
    train: TrainConfig,
    screen: Any = None,
) -> Tuner:
    """``tuner_cls`` constructed complete (see :class:`Tuner`).

    A tuner written for nasfw 0.1, whose ``__init__`` takes only ``(config, space, seed)``,
    still works: it is built that way, ``problem``, ``train`` and ``screen`` are set after, and
    a :class:`DeprecationWarning` names the keywords to take.
    """
    kinds = tuner_cls.space_kinds
    if kinds is not None and not isinstance(space, kinds):
        raise ConfigError(
            f"tuner={config.name} cannot search search_space={space.name}: its proposals are "
            f"graphs of {' or '.join(k.__name__ for k in kinds)} kind, and "
            f"search_space={space.name} is a {type(space).__name__}, whose graphs they would "
            "leave (tuners that search every kind: random, evolution, tpe)"
        )
    parameters = inspect.signature(tuner_cls.__init__).parameters
    complete = "problem" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )
    if complete:
        return tuner_cls(config, space, seed, problem=problem, train=train, screen=screen)
    warnings.warn(
        f"{tuner_cls.__module__}.{tuner_cls.__qualname__}.__init__(config, space, seed) is "
        "deprecated: take the keywords problem=, train= and screen= (or **run) and pass them "
        "to Tuner.__init__, so the tuner is complete when constructed",
        DeprecationWarning,
        stacklevel=2,
    )
    tuner = tuner_cls(config, space, seed)
    tuner.problem, tuner.train, tuner.screen = problem, train, screen
    return tuner
