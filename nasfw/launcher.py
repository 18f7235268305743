"""Launchers run evaluations somewhere (local processes, a cluster) and hand results back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from nasfw.config import check_settings
from nasfw.records import Result

T = TypeVar("T")


class Launcher(ABC, Generic[T]):
    """``map(fn, items)`` evaluates ``fn(item)`` for every item and returns the results in order.

    ``fn`` is picklable (an :class:`nasfw.Evaluator`) and returns a :class:`Result`; a launcher
    turns any failure it sees (a crashed worker, a killed job) into ``Result.failed(reason)``
    for that item and never raises for one item's failure. ``on_result(index, result)`` is called
    as each result arrives, so the driver can store it at once.
    """

    #: True for launchers whose jobs outlive the driver (clusters): the search then passes
    #: ``fn`` = :class:`nasfw.job.StoredEvaluation` and items ``(index, candidate)``, so each
    #: job writes its own trial into the study, and ``fn.key(item)`` names an evaluation stably
    #: enough to re-attach to its job after a driver restart.
    workers_write_trials: ClassVar[bool] = False
    #: The launcher's config schema, whose ``name`` field defaults to its option name
    #: (``launcher=<name>``): ``register(LauncherClass)`` registers both.
    config_class: ClassVar[type[Any] | None] = None

    def __init__(self, config: Any) -> None:
        check_settings(config, "launcher")  # the ranges its schema declares (ConfigError)
        self.config = config

    @abstractmethod
    def map(
        self,
        fn: Callable[[T], Result],
        items: Sequence[T],
        on_result: Callable[[int, Result], None] | None = None,
    ) -> list[Result]: ...

    def warm_up(self, fn: Callable[[T], Result]) -> None:
        """Start the workers and let them prepare for ``fn`` (``fn.warm_up()``, e.g.
        :meth:`nasfw.Evaluator.warm_up`: imports, the problem's data) while the driver goes on
        setting up; returns at once. Nothing by default (jobs that start per evaluation have
        nothing to keep warm)."""

    def map_streaming(
        self,
        fn: Callable[[T], Result],
        ask: Callable[[int], T | None],
        on_result: Callable[[T, Result], None],
    ) -> None:
        """Asynchronous evaluation: ``fn(item)`` for the items ``ask(pending)`` hands out, a new
        one asked for as soon as a worker is free (``pending``: items evaluating now), and
        ``on_result(item, result)`` as each result arrives, in the order they finish. Ends
        when ``ask`` returns ``None`` with nothing pending; ``None`` while items are pending
        means "ask again after the next result".

        The default, for launchers without a stream of their own: batches of :attr:`workers`
        items through :meth:`map` (a batch's free workers wait for its slowest item). Not for
        launchers whose workers write their own trials (the search refuses that).
        """
        while True:
            batch: list[T] = []
            while len(batch) < self.workers and (item := ask(len(batch))) is not None:
                batch.append(item)
            if not batch:
                return
            self.map(fn, batch, lambda i, result, items=batch: on_result(items[i], result))

    @property
    def workers(self) -> int:
        """How many evaluations run at once (used to share CPU threads)."""
        return 1

    def check_device(self, spec: str) -> None:
        """Check, before the study exists, that evaluations can train on ``train.device=spec``
        where this launcher runs them, and prepare for it (e.g. give workers their GPUs).

        The default: evaluations run on this machine, so it must have the device.

        Raises:
            nasfw.ConfigError: naming ``train.device`` (or the launcher key at fault).
        """
        from nasfw.device import resolve_device

        resolve_device(spec)

    def close(self) -> None:
        """Release workers; the launcher is not used afterwards."""

    def __enter__(self) -> Launcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def init_worker_process(poll_seconds: float = 1.0) -> None:
    """Set up a local worker process (a pool's ``initializer``): call it first thing.

    Ctrl-C reaches the whole process group; the worker ignores it so that only the driver
    reacts (it stops the workers and says how to resume). A worker also exits, within
    ``poll_seconds``, once its parent is gone, even after a ``kill -9`` that gave the parent no
    chance to stop it: a watchdog thread sees the parent pid change (the orphan is re-parented).
    Every launcher that starts local processes uses it.
    """
    import os
    import signal
    import threading
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="nasfw-parent-watchdog", daemon=True).start()
