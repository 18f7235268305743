"""How a search's space is chosen: the strategy the setup hands to the loop.

A search runs in the constraint set ``search_space`` names (:class:`FixedSpace`), or in one
chosen for its problem (``search_space=auto``: :class:`nasfw.minibench.auto.AutoSpace`, which
probes the problem and asks the mini-benchmark DB's classifier). The loop knows only the two
call points below, so it imports nothing from :mod:`nasfw.minibench`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from nasfw.search_space import SearchSpace

if TYPE_CHECKING:
    from nasfw.ledger import Ledger
    from nasfw.ops import OpSpec
    from nasfw.prepare import Search
    from nasfw.tuner import Tuner


class SpaceChoice(Protocol):
    """How the search space is chosen (see the module)."""

    def initial_space(self, ops: Mapping[str, OpSpec]) -> SearchSpace:
        """The space the tuner is first built in, before the study exists."""
        ...

    def on_resume(
        self, ledger: Ledger, rebuild: Callable[[SearchSpace], Tuner]
    ) -> tuple[SearchSpace, Tuner] | None:
        """Call point 1, in the setup, once the study is open and before the tuner's state is
        restored: the space and tuner (``rebuild(space)``) of a choice the study already
        holds, or None to keep the initial ones."""
        ...

    def before_first_generation(self, search: Search) -> None:
        """Call point 2, in the loop, after ``nasfw_search_start`` and before the first
        generation (on a resume too): settle the space (``search.context.space`` and
        ``.tuner``) if it is not settled yet."""
        ...


class FixedSpace:
    """The constraint set ``search_space`` names: nothing to choose."""

    def __init__(self, config: Any) -> None:
        self.config = config

    def initial_space(self, ops: Mapping[str, OpSpec]) -> SearchSpace:
        return SearchSpace(self.config, ops)

    def on_resume(
        self, ledger: Ledger, rebuild: Callable[[SearchSpace], Tuner]
    ) -> tuple[SearchSpace, Tuner] | None:
        return None

    def before_first_generation(self, search: Search) -> None:
        return None
