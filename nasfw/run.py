"""A search set up (:class:`Search`: what the setup, :mod:`nasfw.prepare`, hands to the loop,
:mod:`nasfw.loop`, the generations, :mod:`nasfw.generation`, and the export,
:mod:`nasfw.export`), and how its space is chosen (:class:`SpaceChoice`).

Only types live here, so every floor above can name them without importing the floors that
build them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pluggy import HookRelay
    from rich.console import Console

    from nasfw.config import NasfwConfig
    from nasfw.context import SearchContext
    from nasfw.evaluate import Evaluator
    from nasfw.launcher import Launcher
    from nasfw.lease import DriverLease
    from nasfw.ledger import Ledger
    from nasfw.ops import OpSpec
    from nasfw.search_space import BaseSearchSpace
    from nasfw.tuner import Tuner


class SpaceChoice(Protocol):
    """How the search space is chosen: the constraint set ``search_space`` names
    (:class:`nasfw.prepare.FixedSpace`), or one chosen for the problem (``search_space=auto``:
    :class:`nasfw.minibench.auto.AutoSpace`, which probes the problem and asks the
    mini-benchmark DB's classifier). The loop knows only the two call points below, so it
    imports nothing from :mod:`nasfw.minibench`."""

    def initial_space(self, ops: Mapping[str, OpSpec]) -> BaseSearchSpace:
        """The space the tuner is first built in, before the study exists."""
        ...

    def on_resume(
        self, ledger: Ledger, rebuild: Callable[[BaseSearchSpace], Tuner]
    ) -> tuple[BaseSearchSpace, Tuner] | None:
        """Call point 1, in the setup, once the study is open and before the tuner's state is
        restored: the space and tuner (``rebuild(space)``) of a choice the study already
        holds, or None to keep the initial ones."""
        ...

    def before_first_generation(self, search: Search) -> None:
        """Call point 2, in the loop, after ``nasfw_search_start`` and before the first
        generation (on a resume too): settle the space (``search.context.space`` and
        ``.tuner``) if it is not settled yet."""
        ...


@dataclass
class Search:
    """One search, set up by :func:`nasfw.prepare.prepare`."""

    config: NasfwConfig
    context: SearchContext
    launcher: Launcher[Any]
    evaluator: Evaluator
    ledger: Ledger
    lease: DriverLease
    space_choice: SpaceChoice
    console: Console
    hook: HookRelay
    # The pruner's settings for the workers (nasfw.pruning), None without one.
    pruning: dict[str, Any] | None
    # tuner.asynchronous=true: candidates asked for one by one as workers free up.
    asynchronous: bool
    # The last generation whose tuner state the study holds (None: a new search).
    resumed_after: int | None
    # The last stored trial the restored tuner state holds (None: not recorded; then the
    # trials of generations after resumed_after are the ones it does not hold).
    told_through: int | None = None
    # Seconds from the search's start (its process's, for the first search in a process) to
    # the first training step, once known.
    first_step: float | None = None
    # That start, in seconds since the epoch (nasfw.clock.search_began).
    began: float = 0.0

    @property
    def tuner(self) -> Tuner:
        return self.context.tuner
