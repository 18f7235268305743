"""Petridish's growth step as ArchGraphs: candidate layers trained beside a parent, and the child
they make.

Hu et al., "Efficient Forward Architecture Search" (NeurIPS 2019), §3.1-3.2, and the reference
implementations (microsoft/petridishnn; microsoft/archai ``algos/petridish``). For a parent, a
target node ``T`` and candidates ``c_j = (source s_j, op o_j)``, the **search network** is the
parent plus::

    T_sg_<s>   stop_gradient(s)          forward identity, backward zero: the parent gets no
                                         gradient from the candidates
    T_pc<j>    o_j(T_sg_<s_j>)           (+ T_pc<j>p, a 1x1 projection to T's width if needed)
    T_pa<j>    scale(alpha_j, l1=λ)      alpha_j ~ U[-0.1, 0.1]; L1 makes the useful few stand out
    T_psum     sum of the T_pa<j>
    T_psf      stop_forward(T_psum)      forward zero, backward identity
    T_pout     T + T_psf                 what T's consumers read

so it computes exactly the parent's function and the parent's weights get exactly the parent's
gradients while the candidates learn from the parent's loss. The **child** keeps the top-k
candidates by |alpha| under their ids (their trained weights carry over by name), reading their
sources directly, then ``T_pdcat`` (concat), ``T_pdproj`` (1x1 projection to T's width),
``T_pdbn``, ``T_pdscale`` (a scale starting at 0) and ``T_pdsum = T + T_pdscale``: at
initialisation it is exactly the parent's function.

Everything is a plain graph of registered ops, so the one builder, training loop and weight
store (``nasfw.weights``) train, cost and keep these networks like any other.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from nasfw import INPUT, ArchGraph, Node, OpSpec, Shape

# nasfw.BuildError is imported where it is raised: it lives in nasfw.builder, which imports
# torch, and this module is imported when the plugin registers (every `python -m nasfw`).

# Nodes Petridish adds that are not places to grow or read from (the grown sum, T_pdsum, is).
_INTERNAL = re.compile(r"_(pc\d+p?|pdcat|pdproj|pdbn|pdscale|sg_.+|pa\d+|psum|psf|pout)$")


@dataclass(frozen=True)
class CandidateOp:
    """One (source node, op) pair for a target; ``shape`` is the op's output shape there."""

    source: str
    op: str
    params: Mapping[str, Any] = field(hash=False)
    shape: Shape = ()

    def describe(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.op}({args})<-{self.source}"


def growable(graph: ArchGraph) -> list[str]:
    """Nodes a child may grow onto: the graph's own layers and earlier grown sums, not
    Petridish's internals, and not a node already grown (its ``_pdsum`` is growable instead)."""
    ids = {node.id for node in graph}
    return [
        node.id
        for node in graph.topological_order()
        if not _INTERNAL.search(node.id) and f"{node.id}_pdsum" not in ids
    ]


def candidate_ops(
    graph: ArchGraph,
    shapes: Mapping[str, Shape],
    target: str,
    ops: Mapping[str, OpSpec],
    op_names: Sequence[str],
    kernel_sizes: Sequence[int],
    tokens: bool = False,
) -> list[CandidateOp]:
    """Every (source, op) that can feed ``target``: sources are the input (unless it holds
    ``tokens``) and the growable nodes before ``target``; each op of ``op_names`` gets the
    target's width (``filters``/``units``), each of ``kernel_sizes``, and 3x3 same-size pooling.
    Sources of another rank than the target's, an op that cannot take a source, and an output
    smaller than the target's (no upsampling) are left out. ``shapes`` maps node ids and
    ``INPUT`` to output shapes."""
    import torch

    from nasfw import BuildError

    order = [node.id for node in graph.topological_order()]
    if target not in order:
        raise BuildError(f"target {target!r} is not a node of the graph")
    target_shape = tuple(shapes[target])
    layers = set(growable(graph))
    sources = ([] if tokens else [INPUT]) + [
        n for n in order[: order.index(target)] if n in layers or n.endswith("_pdsum")
    ]
    found = []
    for source in sources:
        in_shape = tuple(shapes[source])
        if len(in_shape) != len(target_shape):
            # Same-rank sources only: a dense candidate on a flattened feature map costs
            # (C·H·W)·width weights, more than the rest of a small network.
            continue
        for name in op_names:
            spec = ops.get(name)
            if spec is None or spec.tokens:
                continue
            shape = in_shape
            if spec.input_rank == 1 and len(shape) > 1:
                shape = (math.prod(shape),)  # the builder flattens first
            elif spec.input_rank is not None and len(shape) != spec.input_rank:
                continue
            for params in _param_options(spec, target_shape, kernel_sizes):
                try:
                    with torch.device("meta"):
                        _, out = spec.build(spec.with_defaults(params), shape)
                except Exception:
                    continue
                out = tuple(int(d) for d in out)
                if _fits(out, target_shape):
                    found.append(CandidateOp(source, name, params, out))
    return found


def _param_options(
    spec: OpSpec, target_shape: Shape, kernel_sizes: Sequence[int]
) -> list[dict[str, Any]]:
    base: dict[str, Any] = {}
    for name, p in spec.params.items():
        if name in ("filters", "units"):
            base[name] = int(target_shape[0])
        elif name == "same":
            base.update(same=True, pool_size=3)
        elif p.default is None:
            return []  # a required setting Petridish has no value for
    if "kernel_size" not in spec.params:
        return [base]
    p = spec.params["kernel_size"]
    low, high = p.low if p.low is not None else 1, p.high if p.high is not None else math.inf
    ok = [k for k in kernel_sizes if low <= k <= high]
    return [{**base, "kernel_size": int(k)} for k in ok]


def _fits(out: Shape, target: Shape) -> bool:
    if len(target) == 1:
        return True  # a dense projection flattens anything to the target's width
    return len(out) == len(target) and all(o >= t for o, t in zip(out[1:], target[1:], strict=True))


def _needs_projection(out: Shape, target: Shape) -> bool:
    return len(out) != len(target) or out[0] != target[0]


def _projection(node_id: str, source: str, target_shape: Shape) -> Node:
    """A linear 1x1 projection to the target's width (a dense layer for feature vectors)."""
    width, rank = int(target_shape[0]), len(target_shape)
    if rank == 1:
        return Node(node_id, "dense", {"units": width, "activation": "linear"}, (source,))
    op = {3: "conv2d", 2: "conv1d"}.get(rank)
    if op is None:
        from nasfw import BuildError

        raise BuildError(f"no 1x1 projection for rank-{rank} node outputs {target_shape}")
    params = {"filters": width, "kernel_size": 1, "activation": "linear"}
    return Node(node_id, op, params, (source,))


def _branch(target: str, j: int, c: CandidateOp, source: str, target_shape: Shape) -> list[Node]:
    """The nodes of candidate ``j``: its op reading ``source``, then a projection if needed."""
    nodes = [Node(f"{target}_pc{j}", c.op, dict(c.params), (source,))]
    if _needs_projection(c.shape, target_shape):
        nodes.append(_projection(f"{target}_pc{j}p", nodes[0].id, target_shape))
    return nodes


def _insert(graph: ArchGraph, target: str, added: list[Node], total: str) -> ArchGraph:
    """``graph`` with ``added`` after ``target``; ``target``'s consumers read ``total``."""
    nodes: list[Node] = []
    for node in graph:
        inputs = tuple(total if i == target else i for i in node.inputs)
        nodes.append(replace(node, inputs=inputs))
        if node.id == target:
            nodes += added
    return ArchGraph(nodes, total if graph.output == target else graph.output)


def search_graph(
    parent: ArchGraph,
    target: str,
    target_shape: Shape,
    candidates: Sequence[CandidateOp],
    alphas: Sequence[float],
    l1: float,
) -> ArchGraph:
    """The parent with ``candidates`` attached to ``target`` behind stop-gradient and
    stop-forward (see the module docstring); ``alphas`` are their initial weights."""
    if not candidates or len(alphas) != len(candidates):
        from nasfw import BuildError

        raise BuildError(f"{len(candidates)} candidates with {len(alphas)} alphas for {target!r}")
    added: list[Node] = []
    stopped: dict[str, str] = {}
    for source in dict.fromkeys(c.source for c in candidates):
        stopped[source] = f"{target}_sg_{source}"
        added.append(Node(stopped[source], "stop_gradient", {}, (source,)))
    scaled = []
    for j, (c, alpha) in enumerate(zip(candidates, alphas, strict=True)):
        branch = _branch(target, j, c, stopped[c.source], target_shape)
        added += branch
        added.append(
            Node(f"{target}_pa{j}", "scale", {"init": float(alpha), "l1": l1}, (branch[-1].id,))
        )
        scaled.append(f"{target}_pa{j}")
    merge = "add" if len(scaled) > 1 else "concat"
    added += [
        Node(f"{target}_psum", "identity", {}, tuple(scaled), merge),
        Node(f"{target}_psf", "stop_forward", {}, (f"{target}_psum",)),
        Node(f"{target}_pout", "identity", {}, (target, f"{target}_psf"), "add"),
    ]
    return _insert(parent, target, added, f"{target}_pout")


def alphas_of(extra: Mapping[str, Any], target: str, n: int) -> list[float] | None:
    """The trained alphas a search network's trial reported (``<T>_pa<j>.scale``), or None
    when any is missing."""
    keys = [f"{target}_pa{j}.scale" for j in range(n)]
    if not all(isinstance(extra.get(k), int | float) for k in keys):
        return None
    return [float(extra[k]) for k in keys]


def top_k(alphas: Sequence[float], k: int) -> list[int]:
    """Indices of the ``k`` largest |alpha|, largest first (ties: the earlier candidate)."""
    return sorted(range(len(alphas)), key=lambda j: (-abs(alphas[j]), j))[:k]


def finalize(
    parent: ArchGraph,
    target: str,
    target_shape: Shape,
    candidates: Sequence[CandidateOp],
    chosen: Sequence[int],
) -> ArchGraph:
    """The child: ``candidates[j]`` for ``j`` in ``chosen`` grown onto ``target`` of
    ``parent`` (see the module docstring). Raises :class:`BuildError` for no candidates or a
    target grown before."""
    from nasfw import BuildError

    if not chosen:
        raise BuildError(f"no candidates to grow onto {target!r}")
    prefix = f"{target}_pd"
    if any(node.id == f"{prefix}sum" for node in parent):
        raise BuildError(f"{target!r} was grown before: {prefix}sum exists")
    added: list[Node] = []
    ends = []
    for j in chosen:
        branch = _branch(target, j, candidates[j], candidates[j].source, target_shape)
        added += branch
        ends.append(branch[-1].id)
    last = ends[0]
    if len(ends) > 1:
        added.append(Node(f"{prefix}cat", "identity", {}, tuple(ends), "concat"))
        last = f"{prefix}cat"
    added += [
        _projection(f"{prefix}proj", last, target_shape),
        Node(f"{prefix}bn", "batchnorm", {}, (f"{prefix}proj",)),
        Node(f"{prefix}scale", "scale", {}, (f"{prefix}bn",)),
        Node(f"{prefix}sum", "identity", {}, (target, f"{prefix}scale"), "add"),
    ]
    return _insert(parent, target, added, f"{prefix}sum")
