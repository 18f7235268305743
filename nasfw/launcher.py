"""Launchers run evaluations somewhere (local processes, a cluster) and hand results back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from nasfw.tuner import Result

T = TypeVar("T")


class Launcher(ABC, Generic[T]):
    """``map(fn, items)`` evaluates ``fn(item)`` for every item and returns the results in order.

    ``fn`` is picklable (an :class:`nasfw.Evaluator`) and returns a :class:`Result`; a launcher
    turns any failure it sees (a crashed worker, a killed job) into ``Result.failed(reason)``
    for that item and never raises for one item's failure. ``on_result(index, result)`` is called
    as each result arrives, so the driver can store it at once.
    """

    #: True for launchers whose jobs outlive the driver (clusters): the search then passes
    #: ``fn`` = :class:`nasfw.ledger.StoredEvaluation` and items ``(index, candidate)``, so each
    #: job writes its own trial into the study, and ``fn.key(item)`` names an evaluation stably
    #: enough to re-attach to its job after a driver restart.
    workers_write_trials: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        from nasfw.config import check_settings

        check_settings(config, "launcher")  # the ranges its schema declares (ConfigError)
        self.config = config

    @abstractmethod
    def map(
        self,
        fn: Callable[[T], Result],
        items: Sequence[T],
        on_result: Callable[[int, Result], None] | None = None,
    ) -> list[Result]: ...

    @property
    def workers(self) -> int:
        """How many evaluations run at once (used to share CPU threads)."""
        return 1

    def close(self) -> None:
        """Release workers; the launcher is not used afterwards."""

    def __enter__(self) -> Launcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
