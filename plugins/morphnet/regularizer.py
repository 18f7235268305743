"""MorphNet's FLOP regularizer on batch-norm gammas, for networks built from an ArchGraph.

After google-research/morph-net (GammaFlopsRegularizer): each conv2d/dense node gets a gate, a
batch-norm node right after it (``<node>_gate``), whose |gamma| says how alive each output
channel is. For every op with per-output-pixel cost ``C`` (2·H_out·W_out·k_h·k_w for conv2d,
2 for dense and the head)::

    cost = C · A_in · A_out
    regularizer = C · (A_in · Σ|gamma_out| + A_out · Σ|gamma_in|)

where ``A`` are alive-channel counts (|gamma| > threshold) taken as constants, and inputs without a
gamma (the image, a projection) count their full width. Channels joined by an ``add`` merge are
one group (group gamma = element-wise max; alive if any member is); ``concat`` concatenates the
vectors; flattening repeats each channel's gamma over its pixels. Channels are traced from the
ArchGraph and the builder's shapes, never from parameter positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from nasfw import INPUT, ArchGraph, Node

GATED_OPS = ("conv2d", "dense")
GATE_SUFFIX = "_gate"


def add_gates(graph: ArchGraph) -> ArchGraph:
    """``graph`` with a batch-norm gate after every conv2d/dense node (consumers rewired)."""
    gated = {n.id for n in graph if n.op in GATED_OPS}
    nodes: list[Node] = []
    for node in graph:
        inputs = tuple(f"{i}{GATE_SUFFIX}" if i in gated else i for i in node.inputs)
        nodes.append(replace(node, inputs=inputs))
        if node.id in gated:
            nodes.append(Node(f"{node.id}{GATE_SUFFIX}", "batchnorm", {}, inputs=(node.id,)))
    output = f"{graph.output}{GATE_SUFFIX}" if graph.output in gated else graph.output
    return ArchGraph(nodes, output)


@dataclass(frozen=True)
class Segment:
    """A run of channels: ``length`` channels of ``owner``'s gate (None: no gamma, always
    alive), each repeated ``repeat`` times (a flattened feature map)."""

    owner: str | None
    length: int
    repeat: int = 1

    @property
    def width(self) -> int:
        return self.length * self.repeat


@dataclass(frozen=True)
class Term:
    """One op's share of the regularizer: C, its input segments, its own gate (None: head)."""

    node: str
    cost: float
    inputs: tuple[Segment, ...]
    owner: str | None
    out_width: int


def _flatten(segments: list[Segment], shape: tuple[int, ...]) -> list[Segment]:
    pixels = math.prod(shape[1:])
    return [replace(s, repeat=s.repeat * pixels) for s in segments]


class FlopRegularizer(nn.Module):
    """The MorphNet FLOP regularizer of a model built from :func:`add_gates`'s graph.

    ``model`` is a :class:`nasfw.builder.GraphModule`; ``graph`` the *original* (ungated)
    graph. Calling it returns the regularizer; :meth:`flops` and :meth:`alive` report.
    """

    def __init__(self, model: nn.Module, graph: ArchGraph, threshold: float) -> None:
        super().__init__()
        self.model = model
        self.threshold = threshold
        self.graph = graph
        self._parent: dict[str, str] = {}
        self.terms = self._trace()

    # -- tracing ----------------------------------------------------------------------------
    def _find(self, owner: str) -> str:
        while self._parent.get(owner, owner) != owner:
            owner = self._parent[owner]
        return owner

    def _union(self, a: str, b: str) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self._parent[max(ra, rb)] = min(ra, rb)

    def _trace(self) -> list[Term]:
        model, gated_graph = self.model, self.model.graph
        shapes = {INPUT: tuple(model.input_shape), **model.node_shapes}
        segments: dict[str, list[Segment]] = {INPUT: [Segment(None, shapes[INPUT][0])]}
        terms: list[Term] = []
        for node in gated_graph.topological_order():
            ins = [list(segments[i]) for i in node.inputs]
            in_shapes = [shapes[i] for i in node.inputs]
            merged, merged_shape = self._merge(node, ins, in_shapes)
            if node.id in model.reshapes:
                merged = _flatten(merged, merged_shape)
                merged_shape = (math.prod(merged_shape),)
            if node.op in GATED_OPS:
                out_shape = shapes[node.id]
                if node.op == "conv2d":
                    k = int(self._kernel(node))
                    cost = 2.0 * math.prod(out_shape[1:]) * k * k
                else:
                    cost = 2.0
                terms.append(Term(node.id, cost, tuple(merged), node.id, out_shape[0]))
                segments[node.id] = [Segment(node.id, out_shape[0])]
            else:
                segments[node.id] = merged
        last = gated_graph.output
        head_in = segments[last]
        if len(shapes[last]) > 1:
            head_in = _flatten(head_in, shapes[last])
        terms.append(Term("head", 2.0, tuple(head_in), None, int(model.n_outputs)))
        return terms

    @staticmethod
    def _kernel(node: Node) -> int:
        return int(node.params.get("kernel_size", 3))

    def _merge(
        self, node: Node, ins: list[list[Segment]], shapes: list[tuple[int, ...]]
    ) -> tuple[list[Segment], tuple[int, ...]]:
        if len(ins) == 1:
            return ins[0], shapes[0]
        if len({len(s) for s in shapes}) > 1:  # ranks differ: the builder flattens all
            ins = [
                _flatten(seg, s) if len(s) > 1 else seg for seg, s in zip(ins, shapes, strict=True)
            ]
            shapes = [(math.prod(s),) for s in shapes]
        spatial = tuple(min(d) for d in zip(*(s[1:] for s in shapes), strict=True))
        if node.merge == "concat":
            merged = [seg for group in ins for seg in group]
            return merged, (sum(s[0] for s in shapes), *spatial)
        channels = max(s[0] for s in shapes)
        simple = [
            g[0]
            for g, s in zip(ins, shapes, strict=True)
            if len(g) == 1 and g[0].owner is not None and s[0] == channels
        ]
        if len(simple) == len(ins) and len({(g.length, g.repeat) for g in simple}) == 1:
            for g in simple[1:]:
                self._union(simple[0].owner, g.owner)  # type: ignore[arg-type]
            return [simple[0]], (channels, *spatial)
        # Projected or mixed inputs: the sum's channels have no single gamma.
        return [Segment(None, channels)], (channels, *spatial)

    # -- gammas -----------------------------------------------------------------------------
    def gamma(self, owner: str) -> torch.Tensor:
        """|gamma| of ``owner``'s group: the element-wise max over the group's gates."""
        root = self._find(owner)
        members = [o for o in self._owners() if self._find(o) == root]
        vectors = [self.model.node_modules[f"{o}{GATE_SUFFIX}"].weight.abs() for o in members]
        return torch.stack(vectors).amax(dim=0) if len(vectors) > 1 else vectors[0]

    def _owners(self) -> list[str]:
        return [t.owner for t in self.terms if t.owner is not None]

    def _group_gammas(self) -> dict[str, torch.Tensor]:
        """:meth:`gamma` of every conv2d/dense node, each group's computed once."""
        by_root: dict[str, torch.Tensor] = {}
        gammas = {}
        for owner in self._owners():
            root = self._find(owner)
            if root not in by_root:
                by_root[root] = self.gamma(owner)
            gammas[owner] = by_root[root]
        return gammas

    def _alive(self, gammas: dict[str, torch.Tensor]) -> dict[str, int]:
        with torch.no_grad():
            return {o: int((g > self.threshold).sum()) for o, g in gammas.items()}

    def alive(self) -> dict[str, int]:
        """Alive channels of every conv2d/dense node (its group's count)."""
        return self._alive(self._group_gammas())

    def kept_channels(self) -> dict[str, torch.Tensor]:
        """Indices of the channels a shrunk network keeps, per conv2d/dense node: its group's
        alive channels, or the strongest one when none is alive (as :func:`shrink` keeps one)."""
        with torch.no_grad():
            kept = {}
            for owner, gamma in self._group_gammas().items():
                alive = torch.nonzero(gamma > self.threshold).flatten()
                kept[owner] = alive if len(alive) else gamma.argmax().reshape(1)
            return kept

    def input_channels(self, term: Term, kept: dict[str, torch.Tensor]) -> torch.Tensor:
        """Indices of ``term``'s input features a shrunk network keeps (flattened maps
        channel-major, as ``torch.flatten`` orders them). Inputs without a gamma keep every
        channel (the image; behind a projected ``add`` the shrunk width may differ, which
        callers see as a shape mismatch)."""
        pieces, offset = [], 0
        for s in term.inputs:
            if s.owner is None:
                pieces.append(offset + torch.arange(s.width))
            else:
                pixels = torch.arange(s.repeat)
                pieces.append(offset + (kept[s.owner][:, None] * s.repeat + pixels).flatten())
            offset += s.width
        return torch.cat(pieces)

    def _width(self, segments: tuple[Segment, ...], alive: dict[str, int]) -> float:
        return float(
            sum((s.length if s.owner is None else alive[s.owner]) * s.repeat for s in segments)
        )

    def flops(self) -> float:
        """The cost model's FLOPs with the alive widths (full widths while every gamma is 1)."""
        alive = self.alive()
        return sum(
            t.cost
            * self._width(t.inputs, alive)
            * (alive[t.owner] if t.owner is not None else t.out_width)
            for t in self.terms
        )

    def forward(self) -> torch.Tensor:
        # Called at every training step: each group's gamma is computed (and summed) once.
        gammas = self._group_gammas()
        alive = self._alive(gammas)
        sums = {o: g.sum() for o, g in gammas.items()}
        total = torch.zeros(())
        for t in self.terms:
            a_in = self._width(t.inputs, alive)
            gamma_in = sum(
                (sums[s.owner] * s.repeat for s in t.inputs if s.owner is not None),
                torch.zeros(()),
            )
            if t.owner is not None:
                a_out = float(alive[t.owner])
                total = total + t.cost * (a_in * sums[t.owner] + a_out * gamma_in)
            else:
                total = total + t.cost * float(t.out_width) * gamma_in
        return total

    def gate_parameters(self) -> list[nn.Parameter]:
        return [
            p
            for o in self._owners()
            for p in self.model.node_modules[f"{o}{GATE_SUFFIX}"].parameters()
        ]
