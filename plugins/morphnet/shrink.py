"""Shrinking (and expanding) an ArchGraph to the widths MorphNet found alive."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from nasfw import ArchGraph

WIDTH_PARAM = {"conv2d": "filters", "dense": "units"}


def shrink(graph: ArchGraph, alive: dict[str, int]) -> tuple[ArchGraph, dict[str, tuple[int, int]]]:
    """``graph`` with every conv2d/dense width set to its alive channel count.

    A layer with no alive channel keeps one: removing it could disconnect the graph, and one
    channel costs next to nothing. Returns the new graph and ``{node: (before, after)}``.
    """
    changes: dict[str, tuple[int, int]] = {}
    nodes = []
    for node in graph:
        param = WIDTH_PARAM.get(node.op)
        if param is None or node.id not in alive:
            nodes.append(node)
            continue
        before = int(node.params[param])
        after = max(1, min(before, alive[node.id]))
        changes[node.id] = (before, after)
        nodes.append(replace(node, params={**node.params, param: after}))
    return graph.replace(nodes), changes


def scale_widths(graph: ArchGraph, factor: float) -> ArchGraph:
    """Every conv2d/dense width multiplied by ``factor`` (at least 1)."""
    nodes = []
    for node in graph:
        param = WIDTH_PARAM.get(node.op)
        if param is None:
            nodes.append(node)
        else:
            width = max(1, round(int(node.params[param]) * factor))
            nodes.append(replace(node, params={**node.params, param: width}))
    return graph.replace(nodes)


def expand(
    graph: ArchGraph, problem: Any, flop_budget: float, max_factor: float = 4.0
) -> ArchGraph:
    """The largest uniform width multiplier (<= ``max_factor``) whose FLOPs fit the budget."""
    import torch

    from nasfw import build_model, model_cost

    def flops(factor: float) -> float:
        with torch.device("meta"):
            model = build_model(scale_widths(graph, factor), problem)
        return model_cost(model, problem.input_shape).flops

    lo, hi = 0.0, max_factor
    if flops(hi) <= flop_budget:
        return scale_widths(graph, hi)
    for _ in range(20):  # bisection on the multiplier: FLOPs grow monotonically with width
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if flops(mid) <= flop_budget else (lo, mid)
    return scale_widths(graph, lo) if lo > 0 else graph
