"""Asynchronous evaluation (``tuner.asynchronous=true``): a new candidate is asked for as soon as
a worker frees up, instead of a generation waiting for its slowest network.

Real et al. ran regularized evolution this way ("Regularized Evolution for Image Classifier
Architecture Search", AAAI 2019, §3: workers pick a tournament from the population as it is when
they free up); Optuna's samplers do the same with ``n_jobs``/distributed workers (TPE with the
constant liar). Tuners that can opt in with :attr:`nasfw.Tuner.asynchronous`
(:meth:`~nasfw.Tuner.ask_one`, :meth:`~nasfw.Tuner.tell_one`); launchers stream through
:meth:`nasfw.Launcher.map_streaming`.

Generations are kept for everything that reports and saves per generation (the study's state,
MLflow's nested runs, the console): generation ``g`` is the ``block`` results that finished
``g``-th, in the order they finished. What a resume keeps is in the README ("Asynchronous
evaluation").
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nasfw.search import SearchContext, TrialRecord
    from nasfw.tuner import Candidate, Result


def check_asynchronous(cfg: Any, tuner: Any, launcher: Any, pruning: Any) -> bool:
    """Whether the search runs asynchronously (``tuner.asynchronous``).

    Raises:
        ConfigError: naming ``tuner.asynchronous`` when the tuner cannot, a pruner is set (its
            decisions need trials written as they start), or the launcher's jobs write their
            own trials (cluster job arrays).
    """
    from nasfw.config import ConfigError

    if not cfg.tuner.get("asynchronous", False):
        return False
    if not type(tuner).asynchronous:
        raise ConfigError(
            f"tuner.asynchronous=true: tuner={cfg.tuner.name} proposes whole generations "
            "(random, evolution and tpe can run asynchronously)"
        )
    if pruning is not None:
        raise ConfigError(
            f"tuner.asynchronous=true cannot be combined with pruner={cfg.pruner.name}: a "
            "pruner needs each trial written as it starts; use pruner=none, or a synchronous tuner"
        )
    if getattr(launcher, "workers_write_trials", False):
        raise ConfigError(
            f"tuner.asynchronous=true: launcher={cfg.launcher.name} runs each generation as a "
            "batch of jobs that write their own trials; use launcher=local"
        )
    return True


def run_asynchronous(
    context: SearchContext, ledger: Any, launcher: Any, evaluator: Any, console: Any, block: int
) -> None:
    """Evaluate the tuner's proposals as workers free up, until it has nothing more to ask.

    On a resume, the results of the generation the saved state does not hold yet (finished
    after the last ``block``) are told again to the restored tuner first.
    """
    from nasfw.search import (
        _drop_unneeded_weights,
        _hooks,
        _report_first_step,
        _report_generation,
        _reusable,
        _reused,
    )

    hook = _hooks()
    tuner = context.tuner
    generation = context.start_generation
    current: list[TrialRecord] = sorted(
        (r for r in context.history if r.generation >= generation), key=lambda r: r.number
    )
    for record in current:
        tuner.tell_one(record.candidate(), record.result)
    earlier = {r.key: r for r in context.history} if context.cfg.reuse_evaluations else {}
    opened = False
    started = time.perf_counter()
    first_step: float | None = None

    def close() -> None:
        nonlocal generation, current, opened, started, first_step
        context.generation_seconds[generation] = time.perf_counter() - started
        ledger.save_state(generation, tuner.state(), context.generation_seconds)
        _drop_unneeded_weights(context, evaluator.weights, generation)
        if not opened:  # a resume found the generation complete: its end was not reported
            hook.nasfw_generation_start(context=context, generation=generation, candidates=[])
        hook.nasfw_generation_end(context=context, generation=generation, trials=current)
        _report_generation(console, context, generation, current)
        if first_step is None:
            first_step = _report_first_step(console, ledger, current)
        generation, current, opened = generation + 1, [], False
        started = time.perf_counter()

    def finish(candidate: Candidate, result: Result) -> None:
        nonlocal opened
        if not opened:
            # Its candidates are not known in advance: they are asked for one by one.
            hook.nasfw_generation_start(context=context, generation=generation, candidates=[])
            opened = True
        record = ledger.record(candidate, result, generation, len(current))
        current.append(record)
        context.history.append(record)
        earlier.setdefault(record.key, record)
        tuner.tell_one(candidate, result)
        hook.nasfw_trial_complete(context=context, candidate=candidate, result=result, trial=record)
        if len(current) >= block:
            close()

    def ask(pending: int) -> Candidate | None:
        # The same network with the same training settings gets the same seeded evaluation:
        # an earlier result is reused at once, without a worker.
        while (candidate := tuner.ask_one(pending)) is not None:
            original = earlier.get(candidate.key)
            if not _reusable(candidate, original):
                return candidate
            assert original is not None
            finish(candidate, _reused(original))
        return None

    if len(current) >= block:
        close()
    launcher.map_streaming(evaluator, ask, finish)
    if current:
        close()
