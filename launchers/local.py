"""Local launcher: evaluations in worker processes on this machine (or in the driver)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from nasfw import (
    ConfigError,
    Launcher,
    LauncherConfig,
    MapResults,
    Result,
    hookimpl,
    init_worker_process,
    setting,
    signals,
)


@dataclass
class LocalLauncherConfig(LauncherConfig):
    name: str = "local"
    # Worker processes; 0 evaluates in the driver process (handy for debugging). None: one per
    # GPU when training on CUDA, else 2.
    workers: int | None = setting(None, ge=0)
    # How worker processes start. "auto": "fork" where it is safe, else "spawn" (see
    # LocalLauncher.start_method); "spawn" (a fresh interpreter) is always safe; "fork" and
    # "forkserver" as Python's multiprocessing has them.
    start_method: str = "auto"
    # GPUs the workers train on (indices among the visible ones; None: all), one per worker
    # through CUDA_VISIBLE_DEVICES, round-robin when there are more workers than GPUs. Used
    # with train.device=auto or cuda; cuda:N puts every worker on GPU N.
    gpus: list[int] | None = setting(None, ge=0, min_items=1)


class LocalLauncher(Launcher[Any]):
    """Runs ``fn(item)`` in a pool of worker processes kept for the whole search.

    A worker that dies (killed, out of memory, a crash in native code) fails the items it was
    running with that reason; the pool is rebuilt and the other items go on. Workers ignore
    Ctrl-C and exit when the driver dies (:func:`nasfw.init_worker_process`); a ``map``
    interrupted in the driver (Ctrl-C) stops its workers at once instead of waiting for them.
    """

    config_class = LocalLauncherConfig

    config: LocalLauncherConfig

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        methods = ["auto", *multiprocessing.get_all_start_methods()]
        if config.start_method not in methods:
            raise ConfigError(
                f"launcher.start_method={config.start_method!r} is not one of {methods}"
            )
        self._on_cuda = False
        self._pool: ProcessPoolExecutor | None = None
        self._processes = 2 if config.workers is None else int(config.workers)
        # CUDA_VISIBLE_DEVICES entries handed to workers in turn (empty: workers keep the
        # driver's view).
        self.gpu_ids: list[str] = []

    @property
    def workers(self) -> int:
        return max(1, self._processes)

    def check_device(self, spec: str) -> None:
        """Resolve ``train.device`` here; on CUDA give each worker its own GPU."""
        from nasfw import cuda_devices, resolve_device

        device = resolve_device(spec)
        self._on_cuda = device.type == "cuda"  # CUDA cannot be used in a forked child
        if device.type != "cuda" or spec.startswith("cuda:"):
            return
        visible = cuda_devices()
        chosen = list(range(len(visible))) if self.config.gpus is None else self.config.gpus
        wrong = [i for i in chosen if not 0 <= i < len(visible)]
        if wrong or not chosen:
            raise ConfigError(
                f"launcher.gpus={list(chosen)}: {len(visible)} GPU(s) are visible "
                f"(indices 0..{len(visible) - 1})"
            )
        self.gpu_ids = [visible[i] for i in chosen]
        if self.config.workers is None:
            self._processes = len(self.gpu_ids)

    def _executor(self, fn: Callable[[Any], Result] | None = None) -> ProcessPoolExecutor:
        if self._pool is None:
            # The torch threads of each evaluation (nasfw.Evaluator's), when the callable says.
            threads = getattr(fn, "threads", None)
            method = self.start_method(threads)
            context = multiprocessing.get_context(method)
            turn = context.Value("i", 0)  # shared by the pools' workers, replacements included
            # Whether the thread starting workers now is the main one (see _spawning).
            self._main = context.Value("b", 1)
            self._pool = ProcessPoolExecutor(
                self._processes,
                mp_context=context,
                initializer=_init_worker,
                initargs=(
                    turn,
                    self.gpu_ids,
                    os.getpid(),
                    self._main,
                    threads if method == "fork" else None,
                ),
            )
        return self._pool

    def start_method(self, threads: int | None) -> str:
        """The start method of a pool started now, whose evaluations use ``threads`` torch
        threads each (None: unknown), and ready for it: ``launcher.start_method``, or for
        ``auto``:

        - ``fork`` on Linux when the evaluations train on the CPU and the driver has no
          Python thread but its main one; for evaluations on more than one thread, only once
          the driver's OpenMP thread pools are released (:func:`release_openmp_threads`,
          done here). A forked worker starts with the driver's imports and loaded problem
          (~2.5 s sooner per search with two workers on this project's 2-core machine);
          memory is shared until written.
        - ``spawn`` otherwise. A forked child's first torch operation on two or more threads
          waits forever when the driver's OpenMP pool existed at the fork (GNU OpenMP's pool
          does not survive ``fork``; PyTorch's DataLoader workers use one thread for this
          reason), CUDA cannot be initialised again in a forked child, and a lock another
          Python thread held at the fork stays held in the child. A pool rebuilt later (a
          worker died) asks again: with the driver's lease thread running by then, it spawns.
        """
        if self.config.start_method != "auto":
            return self.config.start_method
        safe = (
            sys.platform == "linux"
            and not self._on_cuda
            and threads is not None
            and threading.active_count() == 1
            and (threads == 1 or release_openmp_threads())
        )
        return "fork" if safe else "spawn"

    def _send(self, fn: Callable[[Any], Result], item: Any) -> Future[Result]:
        """``submit``, which may start a worker process: with the stop signals blocked, so a
        Ctrl-C during the worker's start-up reaches the driver only (:func:`nasfw.signals
        .blocked`), and telling it whether it may die with this thread."""
        with signals.blocked():
            pool = self._executor(fn)
            self._main.value = threading.current_thread() is threading.main_thread()
            return pool.submit(fn, item)

    def map(
        self,
        fn: Callable[[Any], Result],
        items: Sequence[Any],
        on_result: Callable[[int, Result], None] | None = None,
    ) -> list[Result]:
        results = MapResults(len(items), on_result)
        deliver = results.deliver
        if self._processes == 0:
            for index, item in enumerate(items):
                try:
                    result = fn(item)
                except Exception as err:
                    result = Result.failed(f"{type(err).__name__}: {err}")
                deliver(index, result)
            return results.in_order()

        # A dying worker breaks every item in flight, so the items of a broken pool are rerun
        # one at a time: an innocent one then succeeds, the culprit fails on its own. Items the
        # broken pool refused before they were sent never ran: they go to the next fresh pool.
        suspects: list[int] = []
        unsent: Sequence[int] = range(len(items))
        try:
            while unsent:
                broken, unsent = self._run(fn, items, unsent, deliver, isolate=False)
                suspects += broken
            for index in sorted(suspects):
                self._run(fn, items, [index], deliver, isolate=True)
        except BaseException:  # Ctrl-C, or an error in on_result: nobody waits for the rest
            self._terminate()
            raise
        return results.in_order()

    def warm_up(self, fn: Callable[[Any], Result]) -> None:
        """Start the pool now and run ``fn.warm_up()`` once per worker, not waited for: the
        workers import torch and load the problem while the driver opens the
        trackers (worker processes only; in the driver it would hold the driver up)."""
        if self._processes == 0 or not callable(getattr(fn, "warm_up", None)):
            return
        try:
            self._executor(fn)  # the pool's start method from the evaluation's threads
            for _ in range(self._processes):
                self._send(_warm_up, fn)
        except BrokenProcessPool:
            self.close()  # the first evaluation starts a fresh pool and says what went wrong

    def map_streaming(
        self,
        fn: Callable[[Any], Result],
        ask: Callable[[int], Any | None],
        on_result: Callable[[Any, Result], None],
    ) -> None:
        """Keep every worker busy: a new item is asked for as soon as one finishes (see
        :meth:`nasfw.Launcher.map_streaming`), and one more than there are workers waits in
        the pool's queue, so a worker that finishes starts the next item at once instead of
        waiting while the driver stores the result and asks again. Items a dying worker broke
        are run again through :meth:`map` (which isolates the culprit) before new ones are
        asked for."""
        if self._processes == 0:  # in the driver: one at a time, as the default does
            super().map_streaming(fn, ask, on_result)
            return
        running: dict[Future[Result], Any] = {}
        try:
            while True:
                while len(running) <= self.workers and (item := ask(len(running))) is not None:
                    running[self._submit_one(fn, item)] = item
                if not running:
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                    done, _ = wait(running)  # all in flight broke with the pool: see which
                broken: list[Any] = []
                for future in done:
                    item = running.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        broken.append(item)
                        continue
                    except Exception as err:
                        result = Result.failed(f"{type(err).__name__}: {err}")
                    on_result(item, result)
                if broken:  # a fresh pool reruns them, the culprit isolated
                    self.close()
                    self.map(fn, broken, lambda i, res, items=broken: on_result(items[i], res))
        except BaseException:  # Ctrl-C, or an error in on_result: nobody waits for the rest
            self._terminate()
            raise

    def _submit_one(self, fn: Callable[[Any], Result], item: Any) -> Future[Result]:
        try:
            return self._send(fn, item)
        except BrokenProcessPool:  # a worker died while idle: start afresh
            self.close()
            return self._send(fn, item)

    def _submit(
        self, fn: Callable[[Any], Result], items: Sequence[Any], indices: Sequence[int]
    ) -> tuple[dict[Future[Result], int], list[int]]:
        """Send ``items[i]`` to the pool; return the futures and the indices it refused.

        A pool refuses work once a worker has died, even while it is still being filled.
        """
        pending: dict[Future[Result], int] = {}
        for position, index in enumerate(indices):
            if not pending:  # broken before this call sent anything: _submit_one starts afresh
                pending[self._submit_one(fn, items[index])] = index
                continue
            try:
                pending[self._send(fn, items[index])] = index
            except BrokenProcessPool:
                return pending, list(indices[position:])
        return pending, []

    def _run(
        self,
        fn: Callable[[Any], Result],
        items: Sequence[Any],
        indices: Sequence[int],
        deliver: Callable[[int, Result], None],
        isolate: bool,
    ) -> tuple[list[int], list[int]]:
        """Evaluate ``items[i]`` for ``i`` in ``indices``.

        Returns the indices a dead worker broke and those the broken pool never took.
        """
        pending, unsent = self._submit(fn, items, indices)
        broken: list[int] = []
        died = bool(unsent)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                index = pending.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    died = True
                    if not isolate:
                        broken.append(index)
                        continue
                    result = Result.failed(
                        "worker process died while evaluating it (killed, out of memory, or "
                        "crashed in native code)"
                    )
                except Exception as err:
                    result = Result.failed(f"{type(err).__name__}: {err}")
                deliver(index, result)
        if died:
            self.close()  # a broken pool takes no more work: the next call starts a fresh one
        return broken, unsent

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def abort(self) -> None:
        self._terminate()

    def _terminate(self) -> None:
        """Stop the workers now, evaluations in flight and warm-ups included: SIGKILL (they
        ignore SIGTERM, see :func:`nasfw.init_worker_process`), then the pool's threads end."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            with contextlib.suppress(OSError):
                process.kill()
        pool.shutdown(wait=True, cancel_futures=True)


# OpenMP 5.0's omp_pause_resource_kind_t: a hard pause frees the runtime's threads and state.
OMP_PAUSE_HARD = 2


def release_openmp_threads() -> bool:
    """End the thread pools of every OpenMP runtime loaded in this process (torch's, scikit-
    learn's, ...; found by ``threadpoolctl``) with OpenMP 5.0's
    ``omp_pause_resource_all(omp_pause_hard)``: the runtime starts a fresh pool at its next
    parallel region, and a child forked now can start its own. Call it with no parallel region
    running (from the main thread, between torch operations).

    Returns whether every runtime released its threads (False where one lacks the call, e.g.
    an OpenMP older than 5.0, or refuses it).
    """
    import ctypes

    from threadpoolctl import threadpool_info

    for runtime in threadpool_info():
        if runtime["user_api"] != "openmp":
            continue
        try:
            pause = ctypes.CDLL(runtime["filepath"]).omp_pause_resource_all
        except (OSError, AttributeError):
            return False
        pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
        if pause(OMP_PAUSE_HARD) != 0:
            return False
    return True


def _warm_up(fn: Any) -> None:
    """``fn.warm_up()`` in a worker; a failure is left for the first evaluation to report."""
    # A failure is the first evaluation's to report (it meets the same problem, as a trial).
    with contextlib.suppress(Exception):
        fn.warm_up()


def _init_worker(
    turn: Any, gpu_ids: list[str], driver: int, main: Any, threads: int | None
) -> None:
    """Worker set-up: :func:`nasfw.init_worker_process` (bound to the driver), then the next
    GPU in turn (before anything initialises CUDA in this process, so it sees that GPU only,
    as ``cuda:0``). A forked worker holds torch to ``threads`` before anything else runs in it
    (see :meth:`LocalLauncher.start_method`)."""
    if threads is not None and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    init_worker_process(parent=driver, die_with_parent=bool(main.value))
    if gpu_ids:
        with turn.get_lock():
            index = turn.value
            turn.value += 1
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_ids[index % len(gpu_ids)]


@hookimpl
def register_launchers(register: Callable[[type[Launcher[Any]]], None]) -> None:
    register(LocalLauncher)
