"""Asynchronous evaluation (``tuner.asynchronous=true``): a new candidate is asked for as soon as
a worker frees up, instead of a generation waiting for its slowest network.

Real et al. ran regularized evolution this way ("Regularized Evolution for Image Classifier
Architecture Search", AAAI 2019, §3: workers pick a tournament from the population as it is when
they free up); Optuna's samplers do the same with ``n_jobs``/distributed workers (TPE with the
constant liar). Tuners that can opt in with :attr:`nasfw.Tuner.asynchronous`
(:meth:`~nasfw.Tuner.ask_one`, :meth:`~nasfw.Tuner.tell_one`); launchers stream through
:meth:`nasfw.Launcher.map_streaming`.

Generations are kept for everything that reports and saves per generation (the study's state,
MLflow's nested runs, the console): generation ``g`` is the ``tuner.batch_size`` results that
finished ``g``-th, in the order they finished. What a resume keeps is in docs/tuners.md
("Asynchronous evaluation").
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from nasfw.config import AsynchronousTunerConfig
from nasfw.generation import end_generation, record_result, reusable, reused

if TYPE_CHECKING:
    from nasfw.records import Candidate, Result, TrialRecord
    from nasfw.run import Search


def run_asynchronous(search: Search) -> None:
    """Evaluate the tuner's proposals as workers free up, until it has nothing more to ask.

    On a resume, the stored results the saved state does not hold (finished after it was
    saved) are told to the restored tuner first, each once: the tuner's count of evaluations,
    and so its budget, is that of the study's stored evaluations.
    """
    context, hook = search.context, search.hook
    tuner = context.tuner
    assert isinstance(search.config.tuner, AsynchronousTunerConfig)
    block = search.config.tuner.batch_size
    generation = context.start_generation
    through = search.told_through
    current: list[TrialRecord] = sorted(
        (
            r
            for r in context.history
            if (r.number > through if through is not None else r.generation >= generation)
        ),
        key=lambda r: r.number,
    )
    for record in current:
        tuner.tell_one(record.candidate, record.result)
    earlier = {r.key: r for r in context.history} if search.config.reuse_evaluations else {}
    opened = False
    started = time.perf_counter()

    def close() -> None:
        nonlocal generation, current, opened, started
        if not opened:  # a resume found the generation complete: its start was not reported
            hook.nasfw_generation_start(context=context, generation=generation, candidates=[])
        end_generation(search, generation, current, time.perf_counter() - started)
        generation, current, opened = generation + 1, [], False
        started = time.perf_counter()

    def finish(candidate: Candidate, result: Result) -> None:
        nonlocal opened
        if not opened:
            # Its candidates are not known in advance: they are asked for one by one.
            hook.nasfw_generation_start(context=context, generation=generation, candidates=[])
            opened = True
        record = record_result(search, candidate, result, generation, len(current))
        current.append(record)
        earlier.setdefault(record.key, record)
        tuner.tell_one(candidate, result)
        if len(current) >= block:
            close()

    def ask(pending: int) -> Candidate | None:
        # The same network with the same training settings gets the same seeded evaluation:
        # an earlier result is reused at once, without a worker.
        while (candidate := tuner.ask_one(pending)) is not None:
            original = earlier.get(candidate.key)
            if not reusable(candidate, original):
                return candidate
            assert original is not None
            finish(candidate, reused(original))
        return None

    if len(current) >= block:
        close()
    search.launcher.map_streaming(search.evaluator, ask, finish)
    if current:
        close()
