"""Petridish's candidate layers: trained beside a parent network without changing it.

Hu et al. 2019, §3.1-3.2: every candidate op reads **stop-gradient** of an earlier node
(forward identity, backward zero: the parent's weights get no gradient from it) and their
alpha-weighted sum reaches the target node through **stop-forward** (forward zero, backward
identity: ``y - y.detach()``), so the parent computes exactly what it computed before while
the candidates and their alpha learn from the parent's loss. An L1 penalty on alpha (λ ≈ 1e-3) lets
the few useful candidates stand out; :func:`top_candidates` keeps the k largest |alpha|.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nasfw import INPUT, BuildError, OpSpec, adapter
from nasfw.builder import GraphModule


@dataclass(frozen=True)
class Candidate:
    """One (input node, op) pair: ``op`` with ``params`` applied to the node ``source``."""

    source: str
    op: str
    params: Mapping[str, Any]


def stop_forward(y: torch.Tensor) -> torch.Tensor:
    """Zero in the forward pass, identity in the backward pass."""
    return y - y.detach()


class CandidateLayer(nn.Module):
    """``stop_forward(Σ_i alpha_i · branch_i(stop_gradient(x_source_i)))`` for one target node.

    ``branches[i]`` is the candidate's op followed by the adapter to the target's shape;
    ``alpha`` starts uniform in [-0.1, 0.1] (the reference implementation's init).
    """

    def __init__(self, candidates: Sequence[Candidate], branches: Sequence[nn.Module]) -> None:
        super().__init__()
        self.candidates = list(candidates)
        self.branches = nn.ModuleList(branches)
        self.alpha = nn.Parameter(torch.empty(len(branches)).uniform_(-0.1, 0.1))

    def forward(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total = sum(
            a * branch(values[c.source].detach())
            for a, branch, c in zip(self.alpha, self.branches, self.candidates, strict=True)
        )
        return stop_forward(total)  # type: ignore[arg-type]

    def l1(self) -> torch.Tensor:
        """The sparsity penalty's base, Σ|alpha| (multiply by λ)."""
        return self.alpha.abs().sum()


def candidate_layer(
    model: GraphModule,
    target: str,
    candidates: Sequence[Candidate],
    ops: Mapping[str, OpSpec],
) -> CandidateLayer:
    """Build the candidates of ``target`` in ``model``: each op for its source's shape, then
    adapted (pooled, projected) to the target's output shape. Raises :class:`BuildError`
    naming the candidate when its op cannot take the source or its output cannot become the
    target's shape (e.g. a source smaller than the target)."""
    shapes = {INPUT: model.input_shape, **model.node_shapes}
    if target not in model.node_shapes:
        raise BuildError(f"target {target!r} is not a node of the model")
    order = [node.id for node in model.graph.topological_order()]
    branches = []
    for c in candidates:
        if c.source != INPUT and (
            c.source not in shapes or order.index(c.source) >= order.index(target)
        ):
            raise BuildError(
                f"candidate {c}: its source must be the input or a node before {target!r}"
            )
        spec = ops[c.op]
        try:
            module, shape = spec.build(spec.with_defaults(c.params), tuple(shapes[c.source]))
            branches.append(nn.Sequential(module, adapter(shape, model.node_shapes[target])))
        except Exception as err:
            raise BuildError(f"candidate {c} for {target!r}: {type(err).__name__}: {err}") from err
    return CandidateLayer(candidates, branches)


class Attached:
    """``layer`` attached to ``model`` at ``target`` with forward hooks; :meth:`remove` detaches
    it. The model's own forward, outputs and parameter gradients are unchanged."""

    def __init__(self, model: GraphModule, target: str, layer: CandidateLayer) -> None:
        self.values: dict[str, torch.Tensor] = {}
        sources = {c.source for c in layer.candidates}
        self.handles = [
            model.register_forward_pre_hook(lambda _m, args: self.values.update({INPUT: args[0]}))
        ]
        for source in sources - {INPUT}:
            self.handles.append(
                model.node_modules[source].register_forward_hook(
                    lambda _m, _i, out, s=source: self.values.update({s: out})
                )
            )
        self.handles.append(
            model.node_modules[target].register_forward_hook(
                lambda _m, _i, out: out + layer(self.values)
            )
        )

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.values.clear()


def top_candidates(layer: CandidateLayer, k: int = 3) -> list[Candidate]:
    """The ``k`` candidates with the largest |alpha|, largest first."""
    ranked = sorted(range(len(layer.candidates)), key=lambda i: -abs(float(layer.alpha[i])))
    return [layer.candidates[i] for i in ranked[:k]]
