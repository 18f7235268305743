"""One generation of a search: its candidates evaluated and stored (:func:`evaluate`), and its
end (:func:`end_generation`), the one routine that every path ends a generation with: the
synchronous loop, the asynchronous one and ``search_space=auto``'s probe.

A generation's end runs the steps of :data:`GENERATION_END`, in order: its wall time, the
tuner's state saved in the study (a killed search resumes after it), the weights no tuner needs
dropped, the ``nasfw_generation_end`` hook, the console's line, once per process the start-up
line (seconds to the first training step), and a stop that a signal asked for.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from nasfw import signals
from nasfw.config import ConfigError
from nasfw.job import StoredEvaluation
from nasfw.records import Candidate, Result, TrialRecord
from nasfw.storage import absolute_url

if TYPE_CHECKING:
    from nasfw.problem import Problem
    from nasfw.run import Search


@dataclass
class GenerationEnd:
    """What the steps of a generation's end get."""

    generation: int
    trials: list[TrialRecord]
    # Wall seconds of the generation (asking, evaluating, telling); None for evaluations that
    # are not the tuner's (the probe of search_space=auto): no time, state or weights to keep.
    seconds: float | None


def _keep_time(search: Search, end: GenerationEnd) -> None:
    if end.seconds is not None:
        context = search.context
        context.generation_seconds[end.generation] = end.seconds
        if any(r.result.extra.get("clock") == "simulated" for r in end.trials):
            context.simulated_seconds[end.generation] = context.simulated_total(end.generation)


def _save_state(search: Search, end: GenerationEnd) -> None:
    if end.seconds is not None:
        context = search.context
        # Every stored evaluation is told by now: the state holds them all.
        through = context.last_number()
        search.ledger.save_state(
            end.generation,
            context.tuner.state(),
            context.generation_seconds,
            through,
            context.simulated_seconds or None,
            appended=context.tuner.appended_state,
        )


def _drop_unneeded_weights(search: Search, end: GenerationEnd) -> None:
    """Delete the stored weights no tuner needs any more (``Tuner.weights_needed``; the best
    network's stay, for the export); then stop if the rest exceed ``storage.weights_limit_mb``.

    Raises:
        ConfigError: over the limit (after the generation's state is saved: resumable).
    """
    if end.seconds is None:
        return
    context, store = search.context, search.evaluator.weights
    assert store is not None
    kept = set(context.keys_with_weights())
    needed = context.tuner.weights_needed()
    if needed is not None:
        best = context.best()
        keep = set(needed) | ({best.key} if best is not None else set())
        for key in kept - keep:
            store.remove(key)
        kept &= keep
    limit = search.config.storage.weights_limit_mb
    if limit is None:
        return
    size = sum(store.nbytes(key) for key in kept) / 1e6
    if size > limit:
        raise ConfigError(
            f"storage.weights_limit_mb={limit}: after generation {end.generation} the study "
            f"keeps {size:.1f} MB of weights its tuner still needs, in {store.path}. Nothing "
            "is lost: rerun with a larger limit to resume"
        )


def _announce(search: Search, end: GenerationEnd) -> None:
    search.hook.nasfw_generation_end(
        context=search.context, generation=end.generation, trials=end.trials
    )


def _report(search: Search, end: GenerationEnd) -> None:
    records, context = end.trials, search.context
    ok = [r.result.metric for r in records if r.result.ok and r.result.metric is not None]
    pruned = sum(r.result.pruned for r in records)
    best = context.best()
    metric = context.problem.metric
    line = (
        f"generation {end.generation}: {len(ok)} ok, "
        + (f"{pruned} pruned, " if pruned else "")
        + f"{len(records) - len(ok) - pruned} failed"
        + (f"; best {metric} {max(ok):.4f}, mean {statistics.fmean(ok):.4f}" if ok else "")
        + (f"; best so far {best.result.metric:.4f} (trial {best.number})" if best else "")
    )
    if search.console.is_terminal:
        search.console.print(line)  # highlighted, where someone sees it
    else:
        # A log file or a pipe gets the line as it is: rich's rendering (0.1-0.4 ms a line)
        # was the largest share of nasfw's own cost in a search of one-lookup generations.
        print(line, file=search.console.file)


def _report_first_step(search: Search, end: GenerationEnd) -> None:
    """The seconds from the search's start (:func:`nasfw.clock.search_began`: its process's,
    for the first search in a process) to its first training step (the earliest
    :attr:`nasfw.Result.first_step` of the generation, on whichever machine it trained),
    printed in one line and stored in the study (``nasfw:first_step_seconds``), once. A
    generation none of whose networks trained here (all reused or resumed, or failed before
    training) leaves it to the next one.

    After a generation, not at the first result: with several workers the first result back
    need not be the first to have started training, and every evaluation of a generation
    starts before any of the next one.
    """
    if search.first_step is not None:
        return
    moments = [r.result.first_step for r in end.trials if r.result.first_step is not None]
    if not moments:
        return
    search.first_step = min(moments) - search.began
    search.console.print(f"first training step {search.first_step:.1f} s after start")
    search.ledger.set_first_step_seconds(search.first_step)


def _stop_if_signalled(search: Search, end: GenerationEnd) -> None:
    """A stop (Ctrl-C, SIGTERM) that library code swallowed during the generation ends the
    search here, its state saved: in every path, the asynchronous one and the probe too."""
    signals.check()


#: The steps of a generation's end, in order (see the module).
GENERATION_END: list[Callable[[Search, GenerationEnd], None]] = [
    _keep_time,
    _save_state,
    _drop_unneeded_weights,
    _announce,
    _report,
    _report_first_step,
    _stop_if_signalled,
]


def end_generation(
    search: Search, generation: int, trials: list[TrialRecord], seconds: float | None
) -> None:
    """End ``generation`` (its ``trials``, ``seconds`` of wall time, or None for the probe):
    the steps of :data:`GENERATION_END`."""
    end = GenerationEnd(generation, trials, seconds)
    for step in GENERATION_END:
        step(search, end)


def evaluate(search: Search, candidates: list[Candidate], generation: int) -> list[TrialRecord]:
    """Evaluate ``candidates`` as ``generation``: each result stored as a trial as it arrives
    (``nasfw_trial_complete``); return their trials in the candidates' order.

    Evaluations this generation finished before an interruption are reused, and so is the
    result of an identical evaluation (same :attr:`nasfw.Candidate.key`) with
    ``reuse_evaluations``.

    Raises:
        RuntimeError: the study holds another network at a candidate's place (the code or
            the config changed), or the launcher returned no result for a candidate.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    context, launcher = search.context, search.launcher
    records: dict[int, TrialRecord] = {}
    for record in context.records_of(generation):
        if record.index < len(candidates):
            if record.graph.hash != candidates[record.index].graph.hash:
                raise RuntimeError(
                    f"resume mismatch in generation {generation}: trial {record.number} holds "
                    "another network than the tuner proposes now (was the code or config "
                    "changed?). Use a new study_name."
                )
            records[record.index] = record
    todo = [i for i in range(len(candidates)) if i not in records]
    # The same network with the same training settings gets the same seeded evaluation, so an
    # earlier result (this generation's twin, or an elite evaluated before) is reused.
    copies: dict[int, int | TrialRecord] = {}
    if search.config.reuse_evaluations:
        earlier = context.by_key()
        first: dict[str, int] = {}
        for i in todo:
            key = candidates[i].key
            original = earlier.get(key)
            if reusable(candidates[i], original):
                assert original is not None
                copies[i] = original
            elif key in first:
                copies[i] = first[key]
            else:
                first[key] = i
    todo = [i for i in todo if i not in copies]
    if (
        launcher.workers > 1
        and len(todo) > 1
        and search.pruning is None
        and context.problem.table is None
    ):
        # Stragglers first: the generation ends with its slowest network, so the big ones
        # must not start last while the other workers sit idle. Not with a pruner: what it
        # prunes depends on the order trials report in, and one job at a time must prune
        # as the same search in the driver does. Not for lookups: none is slower (sizing
        # them built each network and imported torch).
        cost = cost_estimates(
            context.problem, search.config.train.epochs, [candidates[i] for i in todo]
        )
        todo = [i for _, i in sorted(zip(cost, todo, strict=True), key=lambda p: -p[0])]
    # A transient bar shows nothing on a console that is not a terminal (a log file, a pipe):
    # none is made there (starting its refresh thread costs ~3 ms a generation, making even a
    # disabled one ~0.05 ms).
    progress = (
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=search.console,
            transient=True,
        )
        if search.console.is_interactive
        else None
    )
    with progress or contextlib.nullcontext():
        if progress is not None:
            task = progress.add_task(f"generation {generation}", total=len(candidates))
            progress.update(task, completed=len(records))

        def store(index: int, result: Result) -> None:
            records[index] = record_result(search, candidates[index], result, generation, index)
            if progress is not None:
                progress.advance(task)

        def on_result(position: int, result: Result) -> None:
            store(todo[position], result)

        if launcher.workers_write_trials or search.pruning is not None:
            # Each job writes its own trial (a running one, with a pruner, that reports its
            # learning curve); on_result then only picks it up (Ledger.record).
            job = StoredEvaluation(
                search.evaluator,
                absolute_url(search.ledger.url),
                context.study.study_name,
                generation,
                search.pruning,
                full_budget=int(search.config.train.epochs),
            )
            launcher.map(job, [(i, candidates[i]) for i in todo], on_result)
        else:
            launcher.map(search.evaluator, [candidates[i] for i in todo], on_result)
        for index, source in copies.items():
            original = source if isinstance(source, TrialRecord) else records[source]
            store(index, reused(original))
    missing = [i for i in range(len(candidates)) if i not in records]
    if missing:
        raise RuntimeError(f"launcher returned no result for candidates {missing}")
    return [records[i] for i in range(len(candidates))]


def record_result(
    search: Search, candidate: Candidate, result: Result, generation: int, index: int
) -> TrialRecord:
    """Store one evaluation as a trial, add it to the history, and call
    ``nasfw_trial_complete``: what every path does with each result."""
    record = search.ledger.record(candidate, result, generation, index)
    search.context.history.append(record)
    search.hook.nasfw_trial_complete(
        context=search.context, candidate=candidate, result=result, trial=record
    )
    return record


def reusable(candidate: Candidate, original: TrialRecord | None) -> bool:
    """Whether the earlier evaluation ``original`` (of the same :attr:`Candidate.key`, or None)
    stands for ``candidate``'s: a candidate that must keep its weights reuses only an
    evaluation that kept them."""
    return original is not None and (
        not candidate.keep_weights or "weights" in original.result.extra
    )


def reused(original: TrialRecord) -> Result:
    """``original``'s result for another trial: marked ``reused_from``; not evaluated again,
    it takes no time (stored now, start = end)."""
    extra = {**original.result.extra, "reused_from": original.number}
    return replace(original.result, extra=extra, started=None, finished=None)


def cost_estimates(problem: Problem, epochs: int, candidates: list[Candidate]) -> list[float]:
    """Each candidate's expected training cost: FLOPs of a forward pass of ``problem``'s
    inputs (counted on the meta device) x its epochs (``epochs`` unless it overrides them); 0
    for one that cannot be built (it fails at once)."""
    import torch

    from nasfw.builder import build_model, model_cost

    found = []
    for candidate in candidates:
        try:
            with torch.device("meta"):
                model = build_model(candidate.graph, problem)
                flops = model_cost(model, problem.input_shape).flops
        except Exception:  # the evaluation reports why; it takes no time
            flops = 0
        found.append(float(flops) * int(candidate.train.get("epochs", epochs)))
    return found
