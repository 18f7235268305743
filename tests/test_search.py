"""The search loop's own rules (nasfw/search.py)."""

from __future__ import annotations

from nasfw import ArchGraph, Node, Result, SearchContext, TrialRecord


def _record(number: int, generation: int, index: int, metric: float | None) -> TrialRecord:
    graph = ArchGraph([Node(f"n{number}", "dense", {"units": 8}, ("input",))], f"n{number}")
    result = Result(status="ok", metric=metric) if metric is not None else Result.failed("x")
    return TrialRecord(number, generation, index, graph, result)


def test_ties_go_to_the_earliest_candidate_not_the_first_to_finish():
    # Two workers: candidate (1, 2) finished before (1, 0), so trial numbers say nothing.
    history = [
        _record(0, 0, 0, 0.5),
        _record(1, 0, 1, None),
        _record(2, 1, 2, 0.9),
        _record(3, 1, 0, 0.9),
        _record(4, 1, 1, 0.7),
        _record(5, 2, 0, 0.9),
    ]
    context = SearchContext(None, None, None, None, None, None, history=history)  # type: ignore[arg-type]
    best = context.best()
    assert best is not None and (best.generation, best.index) == (1, 0)
    context.history = history[::-1]  # the order the records arrive in does not matter either
    assert context.best() is best
    context.history = [history[1]]
    assert context.best() is None


def _at(number: int, metric: float, budget: int, status: str = "ok") -> TrialRecord:
    record = _record(number, 0, number, metric)
    record.result = Result(status=status, metric=metric, epochs=budget)  # type: ignore[arg-type]
    return record


def test_the_best_is_chosen_among_networks_trained_to_the_full_budget():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"train": {"epochs": 3}})
    early = [_at(0, 0.95, 1), _at(1, 0.99, 2, status="pruned")]
    context = SearchContext(cfg, None, None, None, None, None, history=early)  # type: ignore[arg-type]
    # Before any network reaches 3 epochs, the largest budget reached is the full one.
    assert context.full_budget() == 1 and context.best() is early[0]
    context.history = [*early, _at(2, 0.80, 3)]
    assert context.full_budget() == 3 and context.best() is context.history[2]
    # Budget counts the epochs of the weights a network continued from.
    continued = _at(3, 0.90, 1)
    continued.result.budget = 3
    context.history.append(continued)
    assert context.best() is continued
