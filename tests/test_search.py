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
