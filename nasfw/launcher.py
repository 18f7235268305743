"""Launchers run evaluations somewhere (local processes, a cluster) and hand results back."""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from nasfw.config import check_settings
from nasfw.records import Result

T = TypeVar("T")


class MapResults:
    """What :meth:`Launcher.map` returns, gathered as results arrive in any order: each is
    kept at its item's index and passed on to ``on_result(index, result)`` at once (the
    driver stores it), and :meth:`in_order` gives them in the items' order.

    Example:
        >>> results = MapResults(2, on_result=None)
        >>> results.deliver(1, Result("ok", metric=0.5))
        >>> results.deliver(0, Result("ok", metric=0.25))
        >>> [r.metric for r in results.in_order()]
        [0.25, 0.5]
    """

    def __init__(self, count: int, on_result: Callable[[int, Result], None] | None) -> None:
        self._results: list[Result | None] = [None] * count
        self._on_result = on_result

    def deliver(self, index: int, result: Result) -> None:
        """Keep ``result`` of item ``index`` and hand it to ``on_result``."""
        self._results[index] = result
        if self._on_result is not None:
            self._on_result(index, result)

    def in_order(self) -> list[Result]:
        """The results delivered so far, in the items' order (items without one left out: a
        map that stopped early returns those it has)."""
        return [r for r in self._results if r is not None]


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

    @property
    def threads(self) -> int:
        """Torch threads per evaluation when ``train.threads`` is not set: by default the CPUs
        this process may use (:func:`usable_cpus`) shared among :attr:`workers`. A launcher
        whose evaluations run on other machines gives the cores each one is allotted there."""
        return max(1, usable_cpus() // max(1, self.workers))

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

    def abort(self) -> None:
        """Release workers now, evaluations in flight (and warm-ups) not waited for: the search
        stopped (Ctrl-C, SIGTERM, an error). Must return in bounded time. By default
        :meth:`close` (launchers whose jobs outlive the driver leave them running)."""
        self.close()

    def __enter__(self) -> Launcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LauncherOutage(RuntimeError):
    """Where the evaluations run stopped answering (a cluster's head node lost) for longer than
    the launcher waits: the search stops with this one line (exit 2, as a storage outage does);
    what the study holds is intact and a rerun resumes."""


@dataclass
class ClusterJob:
    """What a cluster launcher submits in place of ``fn``: ``fn(item)`` run in the job, with
    SIGTERM stopping it.

    A scheduler ends a job with SIGTERM (``scancel``, a time limit, a preemption), then with
    SIGKILL after a grace period (SLURM's ``KillWait``, LSF's ``JOB_TERMINATE_INTERVAL``).
    submitit's job handler ignores SIGTERM, so the evaluation would run on until the SIGKILL
    and clean nothing up. Here SIGTERM raises :class:`nasfw.signals.Terminated` in the job's
    main thread: the evaluation stops at once, and a trial the job created RUNNING (with a
    pruner, :class:`nasfw.job.StoredEvaluation`) is closed as interrupted within the grace
    period, not left RUNNING until the driver's next start. The driver sees the job end as
    the scheduler reports it (cancelled: retried as before).
    """

    fn: Callable[[Any], Any]

    def __call__(self, item: Any) -> Any:
        from nasfw.signals import Terminated

        def stop(signum: int, frame: object) -> None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop; the clean-up runs on
            raise Terminated()

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            return self.fn(item)
        finally:
            signal.signal(signal.SIGTERM, previous)


def usable_cpus() -> int:
    """The CPUs this process may run on: its CPU affinity (``taskset``, a SLURM or LSF
    allocation's cpuset, a container's ``--cpuset-cpus``), capped by a cgroup v2 CPU quota
    (``docker --cpus``, a Kubernetes CPU limit; ``/sys/fs/cgroup/cpu.max``), not the machine's
    count: torch threads beyond them wait for each other (OpenMP's threads spin while one
    waits for a core; small networks trained 5x slower on two threads than on one with a
    single free core, measured on this project's machine)."""
    import math
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as limit:
            quota, period = limit.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota here
    return max(1, cpus)


def init_worker_process(
    poll_seconds: float = 1.0, parent: int | None = None, die_with_parent: bool = True
) -> None:
    """Set up a local worker process (a pool's ``initializer``): call it first thing.

    Ctrl-C and SIGTERM reach the whole process group (a terminal, systemd, a scheduler); the
    worker ignores both so that only the driver reacts (it stops the workers and says how to
    resume); a SIGTERM from the parent itself still ends it. Started inside
    :func:`nasfw.signals.blocked`, the worker has had them blocked from its first instruction.

    The worker is bound to ``parent`` (the driver's pid, handed to it; by default its parent
    now): on Linux the kernel kills it when the parent dies (``PR_SET_PDEATHSIG``), it exits at
    once if the parent died before that was set, and everywhere a watchdog thread exits within
    ``poll_seconds`` once the parent pid changes (the orphan is re-parented), even after a
    ``kill -9`` that gave the parent no chance to stop it. The kernel's binding follows the
    thread that started the process: ``die_with_parent=False`` for processes started outside
    the parent's main thread (the watchdog alone then). Every launcher that starts local
    processes uses it.
    """
    import os
    import signal
    import threading
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    # SIGTERM stays blocked in every thread (threads inherit the mask) and the watchdog takes
    # it: from the parent (a pool stopping its workers) it ends the worker, from anyone else
    # (a group's SIGTERM) it is ignored. Without sigtimedwait it keeps its default.
    waits = hasattr(signal, "sigtimedwait")
    signal.pthread_sigmask(signal.SIG_BLOCK if waits else signal.SIG_UNBLOCK, {signal.SIGTERM})
    parent = os.getppid() if parent is None else parent
    if die_with_parent:
        _die_with_parent()
    if os.getppid() != parent:  # the parent died before the kernel could be told
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            if not waits:
                time.sleep(poll_seconds)
                continue
            info = signal.sigtimedwait({signal.SIGTERM}, poll_seconds)
            if info is not None and info.si_pid == parent:
                os._exit(128 + signal.SIGTERM)
        os._exit(1)

    threading.Thread(target=watch, name="nasfw-parent-watchdog", daemon=True).start()


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the thread that started it ends (its driver's main
    thread, where pools start their processes). Elsewhere nothing (the watchdog remains)."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl in this libc: the watchdog remains
        pass
