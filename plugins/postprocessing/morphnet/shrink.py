"""Shrinking (and expanding) an ArchGraph to the widths MorphNet found alive."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from nasfw import ArchGraph

from .regularizer import GATE_SUFFIX as GATE

WIDTH_PARAM = {
    "conv2d": "filters",
    "dil_conv2d": "filters",
    "sep_conv2d": "filters",
    "conv1d": "filters",
    "dense": "units",
}


def shrink(graph: ArchGraph, alive: dict[str, int]) -> tuple[ArchGraph, dict[str, tuple[int, int]]]:
    """``graph`` with every conv2d/conv1d/dense width set to its alive channel count.

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


def carry_weights(regularizer: Any, small: Any) -> int:
    """Copy the surviving weights of ``regularizer.model`` (the gated network after the shrink
    phase) into ``small`` (built from :func:`shrink`'s graph); returns how many layers got them.

    Each conv2d/conv1d/dense layer and the head keep the rows of their alive output channels and the
    columns of their inputs' alive channels. A gate's scale gamma/sqrt(var + eps) is folded into
    its layer's kept rows (exact through the ReLU for positive gammas); its shift is dropped, so
    the small network starts close to, not equal to, the gated one and the remaining epochs
    adapt it. Layers whose kept weights do not fit the small layer (behind a projected ``add``
    whose width changed) and merge projections keep their fresh initialization.
    """
    import torch
    from torch import nn

    gated = regularizer.model
    kept = regularizer.kept_channels()
    carried = 0
    with torch.no_grad():
        for term in regularizer.terms:
            inputs = regularizer.input_channels(term, kept)
            if term.owner is None:
                source, target, rows, scale = gated.head, small.head, None, None
            else:
                source = _layer(gated.node_modules[term.owner])
                target = _layer(small.node_modules[term.owner])
                rows = kept[term.owner]
                gate: nn.BatchNorm1d | nn.BatchNorm2d = gated.node_modules[f"{term.owner}{GATE}"]
                scale = (gate.weight / torch.sqrt(gate.running_var + gate.eps))[rows]
                _carry_depthwise(
                    gated.node_modules[term.owner], small.node_modules[term.owner], inputs
                )
            weight = source.weight if rows is None else source.weight[rows]
            weight = weight[:, inputs]
            bias = source.bias
            if term.owner is not None:
                bias = bias + _removed_depthwise_bias(gated.node_modules[term.owner], inputs)
            bias = bias if rows is None else bias[rows]
            if scale is not None and bool((scale > 0).all()):
                weight = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
                bias = bias * scale
            if weight.shape != target.weight.shape:
                continue
            target.weight.copy_(weight)
            target.bias.copy_(bias)
            carried += 1
    return carried


def _layer(module: Any) -> Any:
    """The layer that makes a gated node's output channels: the Conv/Linear of
    ``Sequential(layer, activation)``, the pointwise conv of ``Sequential(depthwise, pointwise,
    activation)`` (sep_conv2d)."""
    return _layers(module)[-1]


def _layers(module: Any) -> list[Any]:
    from torch import nn

    return [m for m in module if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear)]


def _depthwise(module: Any) -> Any:
    """The depthwise conv of a separable conv's module, else None."""
    layers = _layers(module)
    return layers[0] if len(layers) == 2 else None


def _removed_depthwise_bias(module: Any, inputs: Any) -> Any:
    """What a separable conv's removed input channels still added to its pointwise output:
    their depthwise filters see zeros (a dead channel), so each gives its constant bias, which
    the pointwise conv mixes in. Folded into the pointwise bias, the shrunk layer computes the
    same. 0 for other layers."""
    import torch

    depthwise = _depthwise(module)
    if depthwise is None:
        return 0.0
    pointwise = _layers(module)[-1]
    removed = torch.ones(depthwise.out_channels, dtype=torch.bool)
    removed[inputs] = False
    return pointwise.weight[:, removed].flatten(1) @ depthwise.bias[removed]


def _carry_depthwise(source: Any, target: Any, inputs: Any) -> None:
    """A separable conv's depthwise filters of the kept input channels (one group each)."""
    import torch

    depthwise, small = _depthwise(source), _depthwise(target)
    if depthwise is None or small is None or len(inputs) != small.weight.shape[0]:
        return
    with torch.no_grad():
        small.weight.copy_(depthwise.weight[inputs])
        small.bias.copy_(depthwise.bias[inputs])


def scale_widths(graph: ArchGraph, factor: float) -> ArchGraph:
    """Every conv2d/conv1d/dense width multiplied by ``factor`` (at least 1)."""
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
